#!/usr/bin/env python3
"""Tools for Atari buffer files (the format: ``tianshou_offline.data.atari_buffer``).

python3 atari_buffer.py subset expert.hdf5 expert.size_1e5.hdf5 --size 100000
python3 atari_buffer.py info expert.hdf5
"""

from tianshou_offline.data.atari_buffer import main
from tianshou_offline.errors import run_main

if __name__ == "__main__":
    run_main(main)
