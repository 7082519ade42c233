"""The four d4rl_*.py scripts: resume after an interruption, --watch, --norm-obs, bad input.

Learning itself is tested in test_d4rl_learning.py on the bundled dataset; here a small random
Hopper dataset made in the test (conftest.py's random_hopper) is enough, and runs are a few hundred
gradient steps.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import h5py
import numpy as np
import pytest
import torch
from example_scripts import load_script

from tianshou_offline.errors import UserInputError

d4rl_bcq = load_script("d4rl_bcq")
d4rl_cql = load_script("d4rl_cql")
d4rl_il = load_script("d4rl_il")
d4rl_td3_bc = load_script("d4rl_td3_bc")

REPO_ROOT = Path(__file__).resolve().parents[1]
OFFLINE_DIR = REPO_ROOT / "examples" / "offline"
TINY = ["--task", "Hopper-v2", "--hidden-sizes", "32", "32", "--test-num", "2", "--no-progress"]


def run_dir(logdir: Path) -> Path:
    (path,) = [p for p in logdir.glob("*/*/*") if p.is_dir()]
    return path


def state_of(path: Path) -> dict[str, torch.Tensor]:
    payload = torch.load(path, weights_only=False)
    return {k: v for k, v in payload["algorithm"].items() if isinstance(v, torch.Tensor)}


@pytest.mark.parametrize(
    "script, extra",
    # BCQ's default 750x750 VAE decodes 100 candidate actions per step at evaluation: too slow here
    [
        (d4rl_il, []),
        (d4rl_bcq, ["--vae-hidden-sizes", "32", "32"]),
        (d4rl_cql, []),
        (d4rl_td3_bc, []),
    ],
    ids=["il", "bcq", "cql", "td3_bc"],
)
def test_each_script_trains_checkpoints_and_summarises(script, extra, random_hopper, tmp_path):
    argv = TINY + extra + ["--expert-data-task", str(random_hopper), "--logdir", str(tmp_path)]
    summary = script.main(argv + ["--epoch", "2", "--epoch-num-steps", "50"])
    directory = run_dir(tmp_path)
    for name in ("checkpoint.pth", "policy_best.pth", "policy_last.pth", "summary.json"):
        assert (directory / name).is_file(), name
    assert list(directory.glob("events.out.tfevents.*"))
    assert summary["gradient_steps"] == 100
    assert json.loads((directory / "summary.json").read_text()) == summary
    assert len(summary["final"]["returns"]) == 2
    # Hopper has D4RL reference returns, so every evaluation carries a normalized score
    assert summary["final"]["normalized_score_mean"] is not None
    assert [h["gradient_step"] for h in summary["history"]] == [0, 50, 100]


@pytest.mark.parametrize(
    "name, extra",
    [
        # an odd number of steps per epoch: a resume must keep TD3's policy-delay phase
        ("d4rl_td3_bc", ["--epoch-num-steps", "61"]),
        # the Lagrange multiplier, its optimizer and the temperature's must come back too
        ("d4rl_cql", ["--epoch-num-steps", "40", "--with-lagrange"]),
        # IQL's cosine schedule position (the actor optimizer's step count), reward scale
        pytest.param("d4rl_iql", ["--epoch-num-steps", "40"], marks=pytest.mark.slow),
        # ReBRAC: the policy delay's phase with an odd number of steps per epoch
        pytest.param(
            "d4rl_rebrac",
            ["--epoch-num-steps", "41", "--batch-size", "64"],
            marks=pytest.mark.slow,
        ),
    ],
    ids=["td3_bc", "cql_lagrange", "iql", "rebrac"],
)
def test_resume_after_kill_finishes_the_same_run(name, extra, random_hopper, tmp_path):
    """Kill a run after its first checkpoint; --resume-path must end where an uninterrupted run
    ends: the same number of gradient steps, bit-identical parameters and the same evaluations
    (every counter, optimizer and RNG state is in the checkpoint)."""
    script = load_script(name)
    argv = TINY + ["--expert-data-task", str(random_hopper), "--epoch", "3"]
    argv += ["--seed", "3", *extra]
    uninterrupted = script.main(argv + ["--logdir", str(tmp_path / "whole")])

    logdir = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, str(OFFLINE_DIR / f"{name}.py"), *argv, "--logdir", str(logdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not list(logdir.glob("*/*/*/checkpoint.pth")) and time.time() < deadline:
        assert process.poll() is None, "the run ended before it could be interrupted"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    directory = run_dir(logdir)
    assert not (directory / "summary.json").exists()
    epoch_at_kill = torch.load(directory / "checkpoint.pth", weights_only=False)["epoch"]
    assert epoch_at_kill < 3

    resumed = script.main(argv + ["--logdir", str(logdir), "--resume-path", str(directory)])
    steps = 3 * int(extra[1])
    assert resumed["gradient_steps"] == uninterrupted["gradient_steps"] == steps
    assert resumed["log_path"] == str(directory)
    whole = torch.load(Path(uninterrupted["log_path"]) / "policy_last.pth", weights_only=False)
    after_resume = torch.load(directory / "policy_last.pth", weights_only=False)
    whole, after_resume = whole["algorithm"], after_resume["algorithm"]
    for key, value in whole.items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(after_resume[key], value, rtol=0, atol=0, msg=key)
    assert _same(whole["_optimizers"], after_resume["_optimizers"])
    assert _same(whole["_extra_state"], after_resume["_extra_state"])
    assert resumed["final"]["returns"] == uninterrupted["final"]["returns"]
    assert [h["return_mean"] for h in resumed["history"]] == [
        h["return_mean"] for h in uninterrupted["history"]
    ]


def _same(a, b) -> bool:
    """Nested dicts/lists of tensors and numbers equal, bit for bit."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    return a == b


def test_norm_obs_statistics_are_stored_and_reused_by_watch(random_hopper, tmp_path):
    argv = TINY + ["--expert-data-task", str(random_hopper), "--norm-obs", "1"]
    trained = d4rl_td3_bc.main(
        argv + ["--epoch", "1", "--epoch-num-steps", "100", "--logdir", str(tmp_path)]
    )
    policy_file = Path(trained["log_path"]) / "policy_last.pth"
    obs_rms = torch.load(policy_file, weights_only=False)["extra_state"]["obs_rms"]
    with h5py.File(random_hopper) as file:
        dataset_obs = file["observations"][:]
    np.testing.assert_allclose(obs_rms.mean, dataset_obs.mean(0), rtol=1e-5, atol=1e-6)

    # Same seed, same deterministic policy, same statistics: exactly the training run's returns.
    watched = d4rl_td3_bc.main(
        argv + ["--watch", "--resume-path", str(policy_file), "--logdir", str(tmp_path / "w")]
    )
    assert watched["watch"]["returns"] == pytest.approx(trained["final"]["returns"])

    # Without the statistics the same weights behave differently: the test can fail.
    payload = torch.load(policy_file, weights_only=False)
    payload["extra_state"]["obs_rms"] = None
    torch.save(payload, tmp_path / "no_stats.pth")
    unnormalised = d4rl_td3_bc.main(
        argv
        + [
            "--watch",
            "--resume-path",
            str(tmp_path / "no_stats.pth"),
            "--logdir",
            str(tmp_path / "w2"),
        ]
    )
    assert unnormalised["watch"]["returns"] != pytest.approx(trained["final"]["returns"])


def test_watch_refuses_a_policy_of_other_sizes(random_hopper, tmp_path):
    argv = TINY + ["--expert-data-task", str(random_hopper), "--logdir", str(tmp_path)]
    trained = d4rl_il.main(argv + ["--epoch", "1", "--epoch-num-steps", "10"])
    policy_file = Path(trained["log_path"]) / "policy_best.pth"
    with pytest.raises(UserInputError, match="does not fit"):
        d4rl_il.main(
            argv[:3] + ["--hidden-sizes", "64", "--watch", "--resume-path", str(policy_file)]
        )


def test_bcq_perturbs_each_state_on_its_own():
    """Tianshou's Perturbation takes [0] of its network's output; with a bare MLP that is the
    first row, one perturbation for the whole batch. d4rl_bcq.py's network must avoid that."""
    captured = {}

    def capture(algorithm, args, spec, algo_name):
        captured["algorithm"] = algorithm
        return {}

    with mock.patch.object(d4rl_bcq, "train_or_watch", capture):
        d4rl_bcq.main(TINY + ["--task", "Hopper-v2"])
    perturbation = captured["algorithm"].policy.actor_perturbation
    torch.manual_seed(0)
    obs, act = torch.randn(8, 11), torch.zeros(8, 3)
    perturbed = perturbation(obs, act)
    assert perturbed.shape == (8, 3)
    assert not torch.allclose(perturbed, perturbed[:1].expand(8, 3))
    # row i depends on state i only
    torch.testing.assert_close(perturbation(obs[3:4], act[3:4]), perturbed[3:4])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--task", "NoSuchTask-v2"], "NoSuchTask-v2"),
        (["--expert-data-task", "/nonexistent/data.hdf5"], "/nonexistent/data.hdf5"),
        (["--watch"], "--watch needs --resume-path"),
        (["--resume-path", "/nonexistent/checkpoint.pth"], "/nonexistent/checkpoint.pth"),
    ],
)
def test_bad_input_is_refused_with_a_clear_message(extra, message, random_hopper, tmp_path):
    argv = TINY + ["--expert-data-task", str(random_hopper), "--logdir", str(tmp_path)] + extra
    with pytest.raises(UserInputError, match=message):
        d4rl_il.main(argv)


def test_bad_input_is_one_line_and_exit_code_2(tmp_path):
    argv = TINY + ["--expert-data-task", str(tmp_path / "missing.hdf5"), "--logdir", str(tmp_path)]
    result = subprocess.run(
        [sys.executable, str(OFFLINE_DIR / "d4rl_il.py"), *argv],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    (error_line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "missing.hdf5" in error_line
    assert not list(tmp_path.glob("*/*/*/checkpoint.pth"))


def test_compile_default_follows_device_and_run_length():
    """--compile unset: on for CUDA; on the CPU only where the run is long enough to pay back the
    compile time (the scripts' 1M-step defaults are, a test's few hundred steps are not)."""
    from tianshou_offline.run.training import COMPILE_PAYS_FROM_STEPS, _use_fast_update

    def use(device: str, epochs: int, steps: int, compile_flag: bool | None = None) -> bool:
        args = argparse.Namespace(
            device=device, epoch=epochs, epoch_num_steps=steps, compile=compile_flag
        )
        return _use_fast_update(args)

    assert use("cuda", 1, 10)
    assert use("cpu", 200, 5000)  # the D4RL scripts' defaults
    assert not use("cpu", 2, 50)
    assert use("cpu", 1, COMPILE_PAYS_FROM_STEPS) and not use("cpu", 1, COMPILE_PAYS_FROM_STEPS - 1)
    assert not use("cuda", 200, 5000, compile_flag=False)
    assert use("cpu", 2, 50, compile_flag=True)
    defaults = d4rl_td3_bc.get_args(["--device", "cpu"])
    assert defaults.compile is None and _use_fast_update(defaults)
