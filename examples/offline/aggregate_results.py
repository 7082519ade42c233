#!/usr/bin/env python3
"""Results tables (results.md) and learning-curve plots from the runs below the given folders
(``tianshou_offline.results.aggregate``).

    python3 aggregate_results.py log/sweep --out examples/offline/results

``--layout atari``: Tianshou's Atari tables (a row per buffer, a column per algorithm), e.g. as in
reproduce/atari_pong.sh:

    python3 aggregate_results.py log/results-pong --layout atari \
        --expert-run log/PongNoFrameskip-v4/qrdqn/expert-seed0 \
        --buffers log/PongNoFrameskip-v4/qrdqn/expert*.hdf5 \
        --out examples/offline/results/atari-pong
"""

from tianshou_offline.errors import run_main
from tianshou_offline.results.aggregate import main

if __name__ == "__main__":
    run_main(main)
