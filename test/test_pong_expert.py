"""The committed Pong expert (runs/atari_qrdqn/PongNoFrameskip-v4/): its run reached the expert
level, and the README's watch command with it wins a game of Pong (~20 s on one CPU core)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TASK = "PongNoFrameskip-v4"
EXPERT = REPO / "runs" / "atari_qrdqn" / TASK
QRDQN = REPO / "examples" / "atari" / "atari_qrdqn.py"


def test_the_committed_expert_run_reached_the_issue_bar():
    summary = json.loads((EXPERT / "summary.json").read_text())
    assert summary["args"]["task"] == TASK and summary["reached_expert_level"]
    assert summary["final"]["episodes"] == 10 and summary["final"]["return_mean"] >= 19
    # the last evaluation during training is the one that stopped it (Pong's stop: >= 20)
    assert summary["history"][-1]["return_mean"] >= 20
    policy = torch.load(EXPERT / "policy.pth", weights_only=False)
    assert policy["task"] == TASK and policy["script"] == "atari_qrdqn.py"
    assert (EXPERT / "policy.pth").stat().st_size < 10 * 2**20


def test_watching_the_committed_expert_wins_a_game(tmp_path):
    watched = subprocess.run(
        [sys.executable, str(QRDQN), "--task", TASK, "--watch", "--test-num", "1"]
        + ["--resume-path", str(EXPERT / "policy.pth"), "--device", "cpu"],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert watched.returncode == 0, watched.stderr[-3000:]
    found = re.search(r"evaluation over 1 episodes: return (-?[\d.]+)", watched.stdout)
    assert found, watched.stdout[-2000:]
    assert float(found.group(1)) > 0  # a Pong game is won by scoring 21 first
