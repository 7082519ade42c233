"""sweep.py (grid runs on a local Ray instance, skip-if-finished, failures) and
aggregate_results.py (means and sample standard deviations over seeds, tables, plots)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import ray
from made_data import write_random_hopper

from tianshou_offline.errors import UserInputError
from tianshou_offline.results import aggregate as aggregate_results
from tianshou_offline.results import sweep

# a few hundred gradient steps of tiny networks, one evaluation episode
SCRIPTS_DIR = Path(__file__).resolve().parents[1] / "examples" / "offline"
TINY = ["--epoch", "2", "--epoch-num-steps", "100", "--hidden-sizes", "32", "32", "--test-num", "1"]


@pytest.fixture(scope="module")
def local_ray():
    """One small local Ray instance for the module (starting Ray takes seconds)."""
    with pytest.MonkeyPatch.context() as patch:
        # Every run would compile Tianshou's Numba functions anew: ~10 s of CPU, more than a
        # tiny run's training. Ray's workers and the runs inherit this environment.
        patch.setenv("NUMBA_DISABLE_JIT", "1")
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
        yield
        ray.shutdown()


@pytest.fixture(scope="module")
def hopper_data(tmp_path_factory) -> Path:
    """1000 random Hopper transitions; the name makes the task Hopper-v2."""
    return write_random_hopper(tmp_path_factory.mktemp("data") / "hopper-tiny.hdf5", 1000)


# ----------------------------------------------------------------------------------------------
# The runner
# ----------------------------------------------------------------------------------------------


def test_grid_runs_once_failures_are_reported_and_finished_runs_are_skipped(
    local_ray, hopper_data, tmp_path, capsys
):
    sweep_dir = tmp_path / "sweep"
    grid = sweep.make_grid(
        ["d4rl_il", "d4rl_td3_bc.py"],
        [str(hopper_data)],
        [0, 1],
        sweep_dir,
        TINY,
        scripts_dir=SCRIPTS_DIR,
    )
    assert [(p.script.name, p.seed, p.task) for p in grid] == [
        ("d4rl_il.py", 0, "Hopper-v2"),
        ("d4rl_td3_bc.py", 0, "Hopper-v2"),
        ("d4rl_il.py", 1, "Hopper-v2"),
        ("d4rl_td3_bc.py", 1, "Hopper-v2"),
    ]
    assert grid[3].run_dir == sweep_dir / "hopper-tiny" / "d4rl_td3_bc" / "seed1"
    # a script that crashes at once: reported, and the other runs go on
    (tmp_path / "broken").mkdir()  # a broken copy of a script the sweep knows
    broken_script = tmp_path / "broken" / "d4rl_il.py"
    broken_script.write_text("import sys\nprint('broken on purpose')\nsys.exit(3)\n")
    broken_dir = sweep_dir / "hopper-tiny" / "d4rl_il_broken" / "seed0"
    broken = sweep.GridPoint(broken_script, str(hopper_data), None, 0, broken_dir)

    skipped, finished, failed = sweep.run_grid([*grid, broken], TINY, cpus_per_run=1)
    assert (skipped, sorted(map(str, finished)), failed) == ([], sorted(map(str, grid)), [broken])
    out = capsys.readouterr().out
    assert f"d4rl_il hopper-tiny seed 0: FAILED (exit code 3), see {broken.log_file}" in out
    assert "broken on purpose" in broken.log_file.read_text()

    mtimes = {}
    for point in grid:
        summary = json.loads(point.summary.read_text())
        assert summary["script"] == point.script.name
        assert summary["args"]["seed"] == point.seed
        assert summary["args"]["hidden_sizes"] == [32, 32]  # passed through
        assert summary["gradient_steps"] == 200
        assert [h["gradient_step"] for h in summary["history"]] == [0, 100, 200]
        mtimes[point] = (point.summary.stat().st_mtime_ns, point.log_file.stat().st_mtime_ns)

    # the same sweep again: nothing runs, nothing is touched
    skipped, finished, failed = sweep.run_grid(grid, TINY, cpus_per_run=1)
    assert (sorted(map(str, skipped)), finished, failed) == (sorted(map(str, grid)), [], [])
    assert "4 runs, 4 finished before, 0 to run" in capsys.readouterr().out
    for point in grid:
        assert (point.summary.stat().st_mtime_ns, point.log_file.stat().st_mtime_ns) == mtimes[
            point
        ]

    # the aggregation reads the runs, including their update speed from TensorBoard
    runs = aggregate_results.load_runs([sweep_dir])
    assert [(r.algorithm, r.seed, r.family, r.dataset) for r in runs] == [
        ("d4rl_il", 0, "Hopper", "hopper-tiny"),
        ("d4rl_il", 1, "Hopper", "hopper-tiny"),
        ("d4rl_td3_bc", 0, "Hopper", "hopper-tiny"),
        ("d4rl_td3_bc", 1, "Hopper", "hopper-tiny"),
    ]
    assert all(r.updates_per_second is not None and r.updates_per_second > 1 for r in runs)


def test_grid_arguments(hopper_data, tmp_path):
    with pytest.raises(UserInputError, match="--seed is set by the sweep"):
        sweep.make_grid(
            ["d4rl_il"], [str(hopper_data)], [0], tmp_path, ["--seed", "3"], scripts_dir=SCRIPTS_DIR
        )
    with pytest.raises(UserInputError, match="no script 'd4rl_nope'.*d4rl_cql"):
        sweep.make_grid(
            ["d4rl_nope"], [str(hopper_data)], [0], tmp_path, [], scripts_dir=SCRIPTS_DIR
        )
    with pytest.raises(UserInputError, match="dataset file missing.hdf5 not found"):
        sweep.make_grid(["d4rl_il"], ["missing.hdf5"], [0], tmp_path, [], scripts_dir=SCRIPTS_DIR)
    copy = tmp_path / "other" / hopper_data.name
    copy.parent.mkdir()
    copy.write_bytes(hopper_data.read_bytes())
    with pytest.raises(UserInputError, match="share the run directory 'hopper-tiny'"):
        sweep.make_grid(
            ["d4rl_il"], [str(hopper_data), str(copy)], [0], tmp_path, [], scripts_dir=SCRIPTS_DIR
        )

    # tasks: from D4RL-style names, given as TASK=DATASET, or left to a passed-through --task
    assert sweep.d4rl_task_of("halfcheetah-medium-v2") == "HalfCheetah-v2"
    assert sweep.d4rl_task_of("/data/walker2d-made-expert-1m.hdf5") == "Walker2d-v2"
    assert sweep.d4rl_task_of("pong-expert.hdf5") is None
    (point,) = sweep.make_grid(
        ["d4rl_il"], [f"Hopper-v3={copy}"], [5], tmp_path, [], scripts_dir=SCRIPTS_DIR
    )
    assert (point.task, point.run_dir.parent.parent.name) == ("Hopper-v3", "Hopper-v3_hopper-tiny")
    (point,) = sweep.make_grid(
        ["d4rl_il"], [str(copy)], [5], tmp_path, ["--task", "Hopper-v3"], scripts_dir=SCRIPTS_DIR
    )
    assert point.task is None

    # the command; a run with a checkpoint continues from it
    command = point.command(["--epoch", "3"])
    assert command[1:] == [
        str(SCRIPTS_DIR / "d4rl_il.py"), "--expert-data-task", str(copy), "--seed", "5",
        "--run-dir", str(point.run_dir), "--no-progress", "--epoch", "3",
    ]  # fmt: skip
    point.run_dir.mkdir(parents=True)
    (point.run_dir / "checkpoint.pth").write_bytes(b"")
    assert point.command([])[-2:] == ["--resume-path", str(point.run_dir)]

    # unknown arguments pass through; --seed is not taken for --seeds
    args, extra = sweep.get_args(["--scripts", "d4rl_il", "--datasets", "a", "--seeds", "1",
                                  "--hidden-sizes", "32", "32", "--seed", "2"])  # fmt: skip
    assert (args.seeds, extra) == ([1], ["--hidden-sizes", "32", "32", "--seed", "2"])


# ----------------------------------------------------------------------------------------------
# Aggregation over hand-written summaries
# ----------------------------------------------------------------------------------------------


def write_summary(
    root: Path, script: str, seed: int, last: float, best: float, history: list, steps: int = 200
) -> None:
    """A summary.json as training.OfflineRun.evaluate writes it. Scores: return / 10."""
    run_dir = root / "hopper-x" / script / f"seed{seed}"
    run_dir.mkdir(parents=True)
    summary = {
        "script": f"{script}.py",
        "args": {"task": "Hopper-v2", "expert_data_task": "/d/hopper-x.hdf5", "seed": seed},
        "log_path": str(run_dir),
        "gradient_steps": steps,
        "train_seconds": 1.0,
        "final": {"episodes": 1, "return_mean": last, "return_std": 0.0, "returns": [last],
                  "normalized_score_mean": last / 10, "normalized_score_std": 0.0},
        "history": [{"gradient_step": s, "return_mean": r, "return_std": 0.0,
                     "normalized_score": r / 10} for s, r in history],
        "best": {"gradient_step": 0, "return_mean": best, "return_std": 0.0,
                 "normalized_score": best / 10},
    }  # fmt: skip
    (run_dir / "summary.json").write_text(json.dumps(summary))


@pytest.fixture
def hand_written(tmp_path) -> Path:
    curve = [(0, 10.0), (100, 20.0), (200, 30.0)]
    write_summary(tmp_path, "d4rl_il", 0, last=100.0, best=150.0, history=curve)
    write_summary(
        tmp_path,
        "d4rl_il",
        1,
        last=200.0,
        best=250.0,
        history=[(0, 20.0), (100, 40.0), (200, 90.0)],
    )
    write_summary(
        tmp_path, "d4rl_il", 2, last=600.0, best=650.0, history=[(0, 30.0), (100, 60.0)], steps=100
    )
    write_summary(tmp_path, "d4rl_cql", 0, last=55.0, best=77.0, history=curve)
    return tmp_path


def test_a_sweep_with_every_run_finished_starts_no_ray(hopper_data, tmp_path, capsys, monkeypatch):
    """Finished runs cost a queue of one-run sweeps (reproduce/d4rl_made_tables.sh) no Ray."""
    dataset = tmp_path / "hopper-x.hdf5"
    dataset.write_bytes(hopper_data.read_bytes())
    for seed in (0, 1):
        write_summary(tmp_path / "sweep", "d4rl_il", seed, last=100.0, best=100.0, history=[])

    def no_ray(*_):
        raise AssertionError("Ray started")

    monkeypatch.setattr(sweep, "connect_ray", no_ray)
    argv = [
        "--scripts",
        "d4rl_il",
        "--datasets",
        str(dataset),
        "--sweep-dir",
        str(tmp_path / "sweep"),
    ]
    assert sweep.main([*argv, "--seeds", "0", "1"], scripts_dir=SCRIPTS_DIR) == 0
    assert "sweep: 2 runs, all finished before" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="Ray started"):  # seed 2 has no summary: it runs
        sweep.main([*argv, "--seeds", "0", "2"], scripts_dir=SCRIPTS_DIR)


def test_means_and_sample_standard_deviations_over_seeds(hand_written):
    runs = aggregate_results.load_runs([hand_written])
    il, cql = sorted(aggregate_results.group_runs(runs), key=lambda g: g.algorithm, reverse=True)
    assert (il.algorithm, len(il.runs), cql.algorithm, len(cql.runs)) == (
        "d4rl_il",
        3,
        "d4rl_cql",
        1,
    )

    # last returns 100, 200, 600: mean 300, sample std sqrt((200² + 100² + 300²) / 2) = sqrt(70000)
    # (the population std would be sqrt(140000 / 3) = 216.0)
    mean, std = il.stat("last", "return_mean")
    assert mean == 300.0 and math.isclose(std, math.sqrt(70000.0), rel_tol=1e-12)
    mean, std = il.stat("best", "normalized_score")
    assert math.isclose(mean, 35.0) and math.isclose(std, math.sqrt(700.0), rel_tol=1e-12)
    assert cql.stat("last", "return_mean") == (55.0, None)  # one seed: no deviation

    tables = aggregate_results.format_tables(runs, {"d4rl_il": "11355"}, "D4RL (their data)")
    lines = tables.splitlines()
    assert lines[0] == "#### Hopper"
    assert lines[2] == (
        "| dataset | script | seeds | gradient steps | last return | last normalized | best return"
        " | best normalized | upd/s | D4RL (their data) |"
    )
    assert lines[4] == "| hopper-x | d4rl_cql | 1 | 200 | 55.0 | 5.5 | 77.0 | 7.7 | – |  |"
    assert lines[5] == (
        "| hopper-x | d4rl_il | 3 | 100–200 | 300.0 ± 264.6 | 30.0 ± 26.5 | 350.0 ± 264.6"
        " | 35.0 ± 26.5 | – | 11355 |"
    )
    assert "sample standard deviation (n−1)" in tables

    # learning curve: the steps every seed evaluated, sample std across seeds
    steps, mean, std = aggregate_results.curve(il.runs, "return_mean")
    assert steps.tolist() == [0, 100]
    np.testing.assert_allclose(mean, [20.0, 40.0])
    np.testing.assert_allclose(std, [10.0, 20.0])


def test_learning_curve_plot_and_command_line(hand_written, tmp_path, capsys):
    out_dir = tmp_path / "results"
    aggregate_results.main([str(hand_written), "--out", str(out_dir)])
    png = out_dir / "Hopper_hopper-x.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and 5_000 < png.stat().st_size < 200_000
    assert "| hopper-x | d4rl_il | 3 |" in (out_dir / "results.md").read_text()
    assert "| hopper-x | d4rl_il | 3 |" in capsys.readouterr().out

    with pytest.raises(UserInputError, match="no summary.json below"):
        aggregate_results.main([str(tmp_path / "results")])
    (hand_written / "hopper-x" / "d4rl_cql" / "seed0" / "summary.json").write_text("{}")
    with pytest.raises(UserInputError, match="is not a summary written by the offline scripts"):
        aggregate_results.load_runs([hand_written])
