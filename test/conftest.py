"""Make the example scripts' helper modules importable, exactly as the scripts see them."""

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
OFFLINE_DIR = REPO_ROOT / "examples" / "offline"
ATARI_DIR = REPO_ROOT / "examples" / "atari"

for path in (OFFLINE_DIR, ATARI_DIR):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
