"""Fixtures shared by the test files: the small made datasets that several of them train on."""

import os
from pathlib import Path

import pytest
import torch
from made_data import write_random_hopper

# One thread per test process, and in the scripts it starts: the default run spreads the tests
# over every core (pytest-xdist's -n auto, pyproject.toml), and more threads than cores makes
# torch's and OpenMP's waiting threads spin against each other (10x slower measured on 2 cores).
os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def random_hopper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3000 random Hopper transitions (write_random_hopper)."""
    return write_random_hopper(tmp_path_factory.mktemp("data") / "hopper-random-made.hdf5", 3000)
