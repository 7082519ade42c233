#!/usr/bin/env python3
"""Download DeepMind RL Unplugged Atari shards and convert them to this collection's Atari buffer
files, without TensorFlow (the format, checks and speed: ``tianshou_offline.data.rl_unplugged``).

    python3 convert_rl_unplugged_atari.py --task Breakout --run-id 1 --shard-id 1
    python3 convert_rl_unplugged_atari.py --task Pong --shard-id 0-4 --num-workers 2
"""

from tianshou_offline.data.rl_unplugged import main
from tianshou_offline.errors import run_main

if __name__ == "__main__":
    run_main(main)
