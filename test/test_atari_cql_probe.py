"""reproduce/atari_cql_probe.py, whose numbers the README's Pong paragraph quotes: it runs the
CQL script's update and prints a row per reading, reads the greedy actions of saved policies,
and ends bad input in one line with exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import torch
from example_scripts import load_script
from test_layout import write_atari_buffer

from tianshou_offline.atari.networks import NatureCNN

PROBE = Path(__file__).resolve().parents[1] / "reproduce" / "atari_cql_probe.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run_probe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PROBE), *args], env=ENV, capture_output=True, text=True, timeout=300
    )


def test_the_probe_prints_a_row_per_reading_for_each_weight(tmp_path: Path) -> None:
    buffer = write_atari_buffer(tmp_path / "pong.hdf5")
    result = run_probe("--buffer", str(buffer), "--min-q-weight", "10", "0",
                       "--updates", "4", "--every", "2")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    tables = result.stdout.split("--min-q-weight ")[1:]
    assert [table.split(":")[0] for table in tables] == ["10.0", "0.0"]
    for table in tables:
        rows = [line.split("|") for line in table.splitlines()[1:] if line.strip()]
        assert [int(row[0]) for row in rows] == [2, 4]
        widths = [(float(row[4]), float(row[5])) for row in rows]
        assert all(whole >= central >= 0 for whole, central in widths)  # central 90% inside


def test_a_missing_buffer_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    result = run_probe("--buffer", str(tmp_path / "missing.hdf5"), "--updates", "2")
    assert result.returncode == 2
    assert "missing.hdf5" in result.stderr and "Traceback" not in result.stderr


def test_policies_mode_reads_the_greedy_action_of_a_saved_policy(tmp_path: Path) -> None:
    """A policy whose output layer favours action 2 by a margin is read as greedy in action 2
    on every state; a file of another script is refused."""
    atari_cql = load_script("atari_cql")
    args = atari_cql.get_args(["--device", "cpu", "--num-quantiles", "200"])
    algorithm = atari_cql.build_algorithm(args, NatureCNN(), gym.spaces.Discrete(6))
    with torch.no_grad():
        output_layer = [
            m for m in algorithm.policy.model.head.modules() if isinstance(m, torch.nn.Linear)
        ][-1]
        output_layer.bias.view(6, 200)[2] += 100.0
    policy = tmp_path / "policy_last.pth"
    torch.save({"algorithm": algorithm.state_dict(), "script": "atari_cql.py"}, policy)
    buffer = write_atari_buffer(tmp_path / "pong.hdf5")
    result = run_probe("--buffer", str(buffer), "--policies", str(policy))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "greedy action shares [0. 0. 1. 0. 0. 0.]" in result.stdout, result.stdout

    torch.save({"algorithm": algorithm.state_dict(), "script": "atari_il.py"}, policy)
    result = run_probe("--buffer", str(buffer), "--policies", str(policy))
    assert result.returncode == 2 and "load it with atari_il.py" in result.stderr
