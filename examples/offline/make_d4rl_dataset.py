#!/usr/bin/env python3
"""Make D4RL-format datasets from SAC policies trained here (``tianshou_offline.dataset_maker``).

    python3 make_d4rl_dataset.py train --task Hopper-v5 --steps 1000000 --run-dir runs/hopper
    python3 make_d4rl_dataset.py export --run-dir runs/hopper --out snapshots/hopper
    python3 make_d4rl_dataset.py make --snapshots snapshots/hopper --levels medium expert

``train`` keeps actor snapshots with their evaluated returns (resumable with --resume-path),
``export`` copies what ``make`` needs into a small folder to commit, and ``make`` writes the
random, medium, expert, medium-replay and medium-expert levels from those snapshots.
"""

from tianshou_offline.dataset_maker import main
from tianshou_offline.errors import run_main

if __name__ == "__main__":
    run_main(main)
