"""aggregate_results.py --layout atari: Tianshou's Atari tables (a row per buffer, a column per
algorithm, the expert and the behaviour policy beside them, Tianshou's published figures below
ours), made from run summaries and buffer files, and again from what --keep-runs keeps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from tianshou_offline.data.atari_buffer import AtariBufferWriter, write_subset
from tianshou_offline.errors import EXIT_USER_ERROR, UserInputError
from tianshou_offline.results import aggregate

ROOT = Path(__file__).resolve().parent.parent
REFERENCES = ROOT / "reproduce" / "atari_references.json"
TASK = "PongNoFrameskip-v4"


def write_summary(run_dir: Path, script: str, seed: int, last: float, best: float, **args) -> None:
    """A summary.json as the offline scripts (training.OfflineRun.evaluate) and atari_qrdqn.py
    (OnlineRun.finish) write it, with the fields the tables read."""
    run_dir.mkdir(parents=True)
    evaluation = {"gradient_step": 100, "return_mean": best, "normalized_score": None}
    summary = {
        "script": f"{script}.py",
        "args": {"task": TASK, "seed": seed, **args},
        "gradient_steps": 100,
        "final": {"return_mean": last, "normalized_score_mean": None},
        "history": [evaluation],
        "best": evaluation,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))


def write_offline_run(sweep: Path, buffer: str, script: str, seed: int, last, best, **args):
    """A run as sweep.py lays it out: <sweep>/<buffer>/<script>/seed<k>."""
    load = {"load_buffer_name": [f"log/{TASK}/qrdqn/{buffer}.hdf5"]}
    write_summary(sweep / buffer / script / f"seed{seed}", script, seed, last, best, **load, **args)


# three whole games (returns 1, 3, -2), then an unfinished one the recorder cut (truncated)
REWARDS = [1, -1, 1, 1, 1, 1, -1, -1, 1, 0]
TERMINATED = [0, 0, 1, 0, 0, 1, 0, 1, 0, 0]


@pytest.fixture
def pong(tmp_path) -> dict[str, Path | list[Path]]:
    """An expert run, its recording and two subsets of it, and offline runs on them."""
    data = tmp_path / "log" / TASK / "qrdqn"
    expert_run = data / "expert-seed0"
    write_summary(expert_run, "atari_qrdqn", 0, last=20.0, best=21.0)
    recording = data / "expert.hdf5"
    with AtariBufferWriter(recording, num_actions=6, task=TASK, source="atari_qrdqn",
                           behaviour_returns=[1.0, 3.0, -2.0, 5.0]) as writer:  # fmt: skip
        n = len(REWARDS)
        writer.append(np.zeros((n, 84, 84), np.uint8), np.zeros(n), REWARDS, TERMINATED, [0] * n)
    # Tianshou's 10% and 1% buffers, in miniature: the first 6 rows (two whole games), 2 (none)
    write_subset(recording, data / "expert.size_1e5.hdf5", 6)
    write_subset(recording, data / "expert.size_1e4.hdf5", 2)

    sweep = tmp_path / "log" / "results-pong"
    for seed, (last, best) in enumerate([(19.0, 20.0), (20.0, 21.0), (21.0, 21.0)]):
        write_offline_run(sweep, "expert", "atari_il", seed, last, best)
    write_offline_run(sweep, "expert", "atari_crr", 0, -21.0, -20.0, min_q_weight=0.0)
    write_offline_run(sweep, "expert.size_1e5", "atari_cql", 0, 20.0, 21.0, min_q_weight=10.0)
    write_offline_run(sweep, "expert.size_1e4", "atari_cql", 0, 2.0, 3.0, min_q_weight=1.0)
    # CRR w/ CQL: the same script on the same buffer, in a sweep of its own
    crr_cql = tmp_path / "log" / "results-pong-crr-cql"
    for seed, (last, best) in enumerate([(17.0, 18.0), (18.0, 19.0)]):
        write_offline_run(crr_cql, "expert", "atari_crr", seed, last, best, min_q_weight=10.0)
    buffers = [data / f"expert{s}.hdf5" for s in ("", ".size_1e5", ".size_1e4")]
    return {"sweeps": [sweep, crr_cql], "expert_run": expert_run, "buffers": buffers}


def atari_table(pong, out: Path, *extra: str) -> str:
    aggregate.main(
        [*map(str, pong["sweeps"]), "--layout", "atari", "--expert-run", str(pong["expert_run"])]
        + ["--buffers", *map(str, pong["buffers"]), "--out", str(out), *extra]
    )
    return (out / aggregate.TABLE_NAME).read_text()


def test_a_subset_has_the_returns_of_its_own_whole_games(pong):
    full, tenth, hundredth = map(aggregate.read_behaviour, pong["buffers"])
    assert (full.family, full.dataset, full.transitions) == ("Pong", "expert", 10)
    assert full.returns == [1.0, 3.0, -2.0]  # the cut last game has no score
    assert (tenth.dataset, tenth.transitions, tenth.returns) == ("expert.size_1e5", 6, [1.0, 3.0])
    assert hundredth.returns == []
    # a subset does not carry the recording's returns, which score games it does not hold
    with h5py.File(pong["buffers"][0]) as full_file, h5py.File(pong["buffers"][1]) as file:
        assert json.loads(full_file.attrs["behaviour_returns"]) == [1.0, 3.0, -2.0, 5.0]
        assert "behaviour_returns" not in file.attrs


def test_the_atari_table_has_tianshous_shape_with_its_figures_below_ours(pong, tmp_path):
    table = atari_table(pong, tmp_path / "atari-pong", "--references", str(REFERENCES))
    ours = "| expert (10) | ours | 20.0 (best 21.0), 1 seed | 0.7 ± 2.5, 3 games"
    assert table.split("\n\nMean ±")[0] == "\n".join([
        "#### Pong",
        "",
        "| buffer (transitions) |  | Online QRDQN | Behavioral | IL | BCQ | CQL | CRR "
        "| CRR w/ CQL |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
        # IL: last 19, 20, 21 and best 20, 21, 21 over seeds (sample standard deviations);
        # CRR (1 seed, --min-q-weight 0) and CRR w/ CQL (2 seeds, 10) are not averaged together
        f"{ours} | 20.0 ± 1.0 (best 20.7 ± 0.6), 3 seeds | – | – | -21.0 (best -20.0), 1 seed"
        " | 17.5 ± 0.7 (best 18.5 ± 0.7), 2 seeds |",
        "|  | Tianshou (published) | 20.5 | 6.8 | 20.0 | 20.1 | 20.4 | -21.0 | 17.7 |",
        "| expert.size_1e5 (6) | ours | 20.0 (best 21.0), 1 seed | 2.0 ± 1.4, 2 games | – | – "
        "| 20.0 (best 21.0), 1 seed | – | – |",
        "|  | Tianshou (published) | 20.5 | 5.8 | – | – | 21.0 | – | – |",
        "| expert.size_1e4 (2) | ours | 20.0 (best 21.0), 1 seed | no whole game | – | – "
        "| 2.0 (best 3.0), 1 seed | – | – |",
        "|  | Tianshou (published) | 20.5 | – | – | – | 1.8 | – | – |",
    ])  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "atari-pong").glob("*.png")) == [
        "Pong_expert.png",  # the offline runs' curves; the expert's are in its run directory
        "Pong_expert.size_1e4.png",
        "Pong_expert.size_1e5.png",
    ]


def test_the_kept_files_make_the_same_table_without_the_runs_and_buffers(pong, tmp_path):
    out = tmp_path / "atari-pong"
    table = atari_table(pong, out, "--keep-runs", "--references", str(REFERENCES))
    kept = sorted(str(p.relative_to(out / "runs")) for p in (out / "runs").rglob("*.json"))
    assert kept == sorted(
        [
            "behaviour.json",
            "online-expert/PongNoFrameskip-v4/seed0/summary.json",  # wherever its run was
            *(f"results-pong-crr-cql/expert/atari_crr/seed{k}/summary.json" for k in (0, 1)),
            *(f"results-pong/expert/atari_crr/seed{k}/summary.json" for k in (0,)),
            *(f"results-pong/expert/atari_il/seed{k}/summary.json" for k in (0, 1, 2)),
            "results-pong/expert.size_1e4/atari_cql/seed0/summary.json",
            "results-pong/expert.size_1e5/atari_cql/seed0/summary.json",
        ]
    )
    again = tmp_path / "again"
    references = ["--references", str(REFERENCES)]
    aggregate.main([str(out / "runs"), "--layout", "atari", "--out", str(again), *references])
    assert (again / aggregate.TABLE_NAME).read_text() == table
    # the D4RL layout of the same runs has a row per script, CRR and CRR w/ CQL apart
    rows = aggregate.format_tables(aggregate.load_runs(pong["sweeps"]))
    assert "| expert | atari_crr --min-q-weight 0 | 1 |" in rows
    assert "| expert | atari_crr --min-q-weight 10 | 2 |" in rows


def test_two_variants_of_one_column_are_both_shown(pong):
    sweep = pong["sweeps"][0]
    write_offline_run(sweep.parent / "cql-1", "expert.size_1e4", "atari_cql", 0, 5.0, 6.0,
                      min_q_weight=10.0)  # fmt: skip
    runs = aggregate.load_runs([sweep, sweep.parent / "cql-1"])
    table = aggregate.format_atari_tables(runs, [])
    assert (
        "| expert.size_1e4 | ours | – | – | – | – | --min-q-weight 1: 2.0 (best 3.0), 1 seed<br>"
        "--min-q-weight 10: 5.0 (best 6.0), 1 seed | – | – |"
    ) in table


def test_bad_atari_input_is_one_line_and_exit_code_2(pong, tmp_path):
    script = ROOT / "examples" / "offline" / "aggregate_results.py"
    sweep, missing = str(pong["sweeps"][0]), str(tmp_path / "no-expert")
    bad = tmp_path / "refs.json"
    bad.write_text('{"columns": [{"key": "tianshou"}]}')
    for args, message in [
        (["--expert-run", missing], f"error: --expert-run {missing}: no summary.json there"),
        (["--references", str(bad)], f"error: --references {bad}: not a references file"),
        (["--buffers", str(bad)], f"error: --buffers {bad}: not an Atari buffer file"),
    ]:
        result = subprocess.run(
            [sys.executable, str(script), sweep, "--layout", "atari", *args],
            capture_output=True,
            text=True,
        )
        assert result.returncode == EXIT_USER_ERROR, result.stderr
        assert result.stderr.startswith(message) and result.stderr.count("\n") == 1, result.stderr
    with pytest.raises(UserInputError, match="is not a run of atari_qrdqn.py"):
        aggregate.main(
            [sweep, "--layout", "atari", "--expert-run", f"{sweep}/expert/atari_il/seed0"]
        )
    with pytest.raises(UserInputError, match="--buffers needs --layout atari"):
        aggregate.main([sweep, "--buffers", str(pong["buffers"][0])])
