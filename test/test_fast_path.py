"""The fast update path (examples/offline/fast_update.py) computes what Tianshou computes.

Each test builds the algorithm exactly as its script does, runs a few updates through Tianshou's
``_preprocess_batch`` + ``_update_with_batch`` and through the fast step, from the same seed and
the same batches, and compares the losses and every tensor of ``state_dict`` (networks, target
networks, optimizer moments). The compiled variant of the same comparison takes minutes to
compile on a 2-core CPU, so it runs only with FAST_PATH_COMPILE_TESTS=1 (benchmarks/README.md has
its result on CUDA).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from example_scripts import build_d4rl_algorithm
from parity import assert_same_state, step_both_ways, tianshou_twin
from tianshou.algorithm.algorithm_base import policy_within_training_step
from tianshou.data import ReplayBuffer

from tianshou_offline.updates.core import DeviceDataset, FastUpdate
from tianshou_offline.updates.select import functional_step, make_fast_update

# Tianshou 2.0.1's maths: these tests compare the functional step with Tianshou's own update
TINY = ["--hidden-sizes", "32", "32", "--device", "cpu", "--tianshou-2.0.1-maths"]
CASES = {
    "td3_bc": ("d4rl_td3_bc", TINY),
    "cql": ("d4rl_cql", TINY),
    "cql_fixed_weight": ("d4rl_cql", [*TINY, "--no-with-lagrange"]),
    "cal_ql": ("d4rl_cql", [*TINY, "--calibrated"]),
    "bc": ("d4rl_il", TINY),
    "bcq": ("d4rl_bcq", [*TINY, "--vae-hidden-sizes", "32", "32"]),
}


def random_buffer(size: int, obs_dim: int, act_dim: int, seed: int = 0) -> ReplayBuffer:
    rng = np.random.default_rng(seed)
    terminated = rng.random(size) < 0.05
    truncated = np.zeros(size, dtype=bool)
    truncated[99::100] = True
    return ReplayBuffer.from_data(
        obs=rng.standard_normal((size, obs_dim)).astype(np.float32),
        act=rng.uniform(-1, 1, (size, act_dim)).astype(np.float32),
        rew=rng.standard_normal(size).astype(np.float32),
        terminated=terminated,
        truncated=truncated & ~terminated,
        done=terminated | truncated,
        obs_next=rng.standard_normal((size, obs_dim)).astype(np.float32),
    )


ENSEMBLE_CASES = ["td3_bc", "cql", "cal_ql"]  # the twin critics as one vmapped network


@pytest.fixture(scope="module")
def built() -> dict:
    torch.set_num_threads(1)
    return {name: build_d4rl_algorithm(script, argv) for name, (script, argv) in CASES.items()}


@pytest.mark.parametrize(
    "name, twin_ensemble",
    [(name, False) for name in CASES] + [(name, True) for name in ENSEMBLE_CASES],
)
def test_fast_step_matches_tianshou(built: dict, name: str, twin_ensemble: bool) -> None:
    algorithm, _, spec = built[name]
    plain = tianshou_twin(algorithm)  # Tianshou 2.0.1's class on the same tensors
    buffer = plain.process_buffer(random_buffer(500, spec.obs_dim, spec.act_dim))
    fast = copy.deepcopy(algorithm)
    step = functional_step(fast, twin_ensemble)
    data = DeviceDataset(buffer, "cpu")
    step_both_ways(plain, step, data, buffer, steps=5, batch_size=64)  # 5: TD3's delay both ways
    assert_same_state(plain, fast)  # the Lagrange multiplier included: registered in state_dict


def test_checkpoint_of_fast_path_continues_with_tianshou(built: dict) -> None:
    """The fast path writes Adam's state where Tianshou's optimizer keeps it."""
    algorithm, _, spec = built["td3_bc"]
    buffer = random_buffer(300, spec.obs_dim, spec.act_dim)
    fast = copy.deepcopy(algorithm)
    update = make_fast_update(fast, buffer, "cpu", compile=False)
    for _ in range(3):
        update.run_step(32)
    restored = copy.deepcopy(algorithm)
    restored.load_state_dict(fast.state_dict())
    assert_same_state(fast, restored, atol=0)
    optim_state = restored.critic_optim.state_dict()["state"]
    assert float(optim_state[0]["step"]) == 3.0
    with policy_within_training_step(restored.policy):
        stats = restored.update(buffer=buffer, sample_size=32)
    assert np.isfinite(stats.critic1_loss)
    assert float(restored.critic_optim.state_dict()["state"][0]["step"]) == 4.0


def test_update_reports_mean_losses_and_falls_back_when_compiling_fails(
    built: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    algorithm, _, spec = built["bc"]
    buffer = random_buffer(300, spec.obs_dim, spec.act_dim)
    twin = copy.deepcopy(algorithm)
    fast = copy.deepcopy(algorithm)
    update = make_fast_update(fast, buffer, "cpu", compile=False)
    update.stats_interval = 3
    torch.manual_seed(0)
    with policy_within_training_step(fast.policy):
        reported = [update.update(buffer, 32).loss for _ in range(4)]
    torch.manual_seed(0)
    twin_update = make_fast_update(twin, buffer, "cpu", compile=False)
    losses = [twin_update.run_step(32).item() for _ in range(4)]
    # the first update reports itself; then each report is the mean over the last 3 updates
    assert reported[:3] == pytest.approx([losses[0]] * 3)
    assert reported[3] == pytest.approx(np.mean(losses[1:]))

    def broken_compile(*args, **kwargs):
        raise RuntimeError("no C++ compiler")

    import torch._inductor.config as inductor_config

    monkeypatch.setattr(torch, "compile", broken_compile)
    failing = FastUpdate(fast, functional_step(fast), DeviceDataset(buffer, "cpu"), compile=True)
    before = copy.deepcopy(fast.state_dict())
    with inductor_config.patch(loop_ordering_after_fusion=True):
        with policy_within_training_step(fast.policy):
            stats = failing.update(buffer, 32)
    out = capsys.readouterr().out
    assert "retrying without Inductor's loop reordering" in out  # tried twice, then gave up
    assert "compilation failed (RuntimeError: no C++ compiler)" in out
    assert failing.failed is not None and np.isfinite(stats.loss)
    # Tianshou's update ran instead: one Adam step more than before
    key = "policy.actor.last.model.0.weight"
    assert not torch.equal(before[key], fast.state_dict()[key])


def test_compile_is_retried_without_loop_reordering(
    built: dict, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """torch 2.11's Inductor crashed on full-size CQL in loop reordering: one retry without it."""
    import torch._inductor.config as inductor_config

    algorithm, _, spec = built["bc"]
    buffer = random_buffer(300, spec.obs_dim, spec.act_dim)

    def compile_crashing_in_loop_reordering(fn, **kwargs):
        def compiled(*args):
            if inductor_config.loop_ordering_after_fusion:
                raise AssertionError("reorder_loops_by_dep_pair")
            return fn(*args)

        return compiled

    monkeypatch.setattr(torch, "compile", compile_crashing_in_loop_reordering)
    fast = copy.deepcopy(algorithm)
    update = FastUpdate(fast, functional_step(fast), DeviceDataset(buffer, "cpu"), compile=True)
    with inductor_config.patch(loop_ordering_after_fusion=True):
        with policy_within_training_step(fast.policy):
            stats = [update.update(buffer, 32) for _ in range(3)]
        assert inductor_config.loop_ordering_after_fusion is False
    assert update.failed is None and np.isfinite(stats[-1].loss)
    assert "retrying without Inductor's loop reordering" in capsys.readouterr().out


def test_cached_runner_skips_guards_and_compiles_again_after_a_reset(
    built: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After its first call a runner runs with Dynamo's guards skipped; if Dynamo's caches were
    reset meanwhile, that call refuses to recompile, and the step compiles again, once."""
    from torch._dynamo.eval_frame import _is_skip_guard_eval_unsafe_stance

    algorithm, _, spec = built["bc"]
    buffer = random_buffer(300, spec.obs_dim, spec.act_dim)
    calls = {"guards_skipped": 0, "refused": 0}

    def compile_whose_cache_was_reset(fn, **kwargs):
        def compiled(*args):
            if _is_skip_guard_eval_unsafe_stance():
                calls["guards_skipped"] += 1
                if calls["guards_skipped"] == 2:  # as Dynamo after torch._dynamo.reset()
                    calls["refused"] += 1
                    raise RuntimeError(
                        "Recompilation triggered with skip_guard_eval_unsafe stance. ..."
                    )
            return fn(*args)

        return compiled

    monkeypatch.setattr(torch, "compile", compile_whose_cache_was_reset)
    fast = copy.deepcopy(algorithm)
    update = FastUpdate(fast, functional_step(fast), DeviceDataset(buffer, "cpu"), compile=True)
    for _ in range(4):
        update.run_step(32)
    assert calls == {"guards_skipped": 3, "refused": 1}
    assert not _is_skip_guard_eval_unsafe_stance()  # only inside the runner's call
    # four updates, none lost or repeated by the refused call
    assert update.step.optim.steps[0].item() == 4


@pytest.mark.parametrize(
    "name, twin_ensemble",
    [
        ("td3_bc", False),  # the continuous family's compiled case in the default run
        pytest.param("cql", False, marks=pytest.mark.slow),
        pytest.param("bcq", False, marks=pytest.mark.slow),
        pytest.param("cql", True, marks=pytest.mark.slow),
    ],
)
def test_compiled_step_matches_eager_step(built: dict, name: str, twin_ensemble: bool) -> None:
    # a script compiles one algorithm per process; these tests compile many in one, and would
    # reach Dynamo's limit of cache entries per code object (the step's runner)
    torch._dynamo.reset()
    algorithm, _, spec = built[name]
    buffer = algorithm.process_buffer(random_buffer(500, spec.obs_dim, spec.act_dim))
    results = []
    for compile_step in (False, True):
        fast = copy.deepcopy(algorithm)
        update = make_fast_update(
            fast, buffer, "cpu", compile=compile_step, twin_ensemble=twin_ensemble
        )
        torch.manual_seed(0)
        # 6 steps: TD3's two variants each compiled once, then each run twice from the cache
        # with Dynamo's guards skipped (FastUpdate), which must still pick the right one
        values = [update.run_step(64) for _ in range(6)]
        results.append((fast, torch.stack(values)))
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-4, atol=1e-5)
    assert_same_state(results[0][0], results[1][0])
