"""Fixtures shared by the test files: the small made datasets that several of them train on."""

from pathlib import Path

import pytest
from made_data import write_random_hopper


@pytest.fixture(scope="session")
def random_hopper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3000 random Hopper transitions (write_random_hopper)."""
    return write_random_hopper(tmp_path_factory.mktemp("data") / "hopper-random-made.hdf5", 3000)
