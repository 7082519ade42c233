#!/usr/bin/env python3
"""Results tables (results.md) and learning-curve plots from the runs below the given folders
(``tianshou_offline.results.aggregate``).

    python3 aggregate_results.py log/sweep --out examples/offline/results
"""

from tianshou_offline.errors import run_main
from tianshou_offline.results.aggregate import main

if __name__ == "__main__":
    run_main(main)
