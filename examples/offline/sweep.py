#!/usr/bin/env python3
"""Run a grid of the offline scripts (scripts x datasets x seeds) on Ray, resumably, then print
the results table (``tianshou_offline.results.sweep``; other arguments go to every script).

    python3 sweep.py --scripts d4rl_td3_bc d4rl_cql \\
        --datasets data/hopper-made-medium-50k.hdf5 --seeds 0 1 2 --epoch 20
"""

import sys
from pathlib import Path

from tianshou_offline.errors import run_main
from tianshou_offline.results.sweep import main

if __name__ == "__main__":
    # the scripts named in --scripts are looked up beside this file
    run_main(lambda: sys.exit(main(scripts_dir=Path(__file__).resolve().parent)))
