"""The Tianshou adapter (tianshou_offline/tianshou_adapter.py) matches the installed Tianshou.

The package relies on private attributes of Tianshou 2.0.1 and reaches them only through the
adapter. These tests fail, saying which attribute is gone and which version the adapter was
written for, when the installed Tianshou is another one; and they fail when a module of the
package reads one of those attributes directly instead of through the adapter.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import pytest
import torch
from example_scripts import build_d4rl_algorithm, load_script
from tianshou.data import ReplayBuffer
from tianshou.trainer import OfflineTrainer, OfflineTrainerParams
from tianshou.utils.net.common import Net

import tianshou_offline
from tianshou_offline import tianshou_adapter
from tianshou_offline.tianshou_adapter import PRIVATE_ATTRIBUTES, WRITTEN_FOR

TINY = ["--task", "Hopper-v2", "--hidden-sizes", "8", "--device", "cpu"]
# the private methods the package's subclasses override, or call as Tianshou's own do
SUBCLASS_HOOKS = {
    "_preprocess_batch",
    "_update_with_batch",
    "_create_optimizer",
    "_add_lagged_network",
    "_training_step",
    "_create_epoch_pbar_data_dict",
}


def atari_algorithm(name: str):
    args = load_script(name).get_args(["--device", "cpu"])
    return load_script(name).build_algorithm(
        args, Net(state_shape=4, hidden_sizes=[8]), gym.spaces.Discrete(3)
    )


def cql_and_its_parts() -> list[object]:
    algorithm, _, _ = build_d4rl_algorithm("d4rl_cql", TINY)
    lagged = getattr(algorithm, "_lagged_networks", None)  # (its absence is reported)
    return [algorithm, algorithm.alpha, algorithm.critic_optim, lagged]


def offline_trainer() -> OfflineTrainer:
    algorithm, _, _ = build_d4rl_algorithm("d4rl_td3_bc", TINY)
    buffer = ReplayBuffer(8)
    params = OfflineTrainerParams(
        buffer=buffer, max_epochs=1, epoch_num_steps=1, batch_size=2, test_collector=None
    )
    return OfflineTrainer(algorithm, params)


def discrete_bcq_and_policy() -> list[object]:
    algorithm = atari_algorithm("atari_bcq")
    return [algorithm, algorithm.policy]


# freshly built objects of every class the adapter reads, as the scripts build them
FRESH: dict[str, Callable[[], list[object]]] = {
    "cql": cql_and_its_parts,
    "td3_bc": lambda: [build_d4rl_algorithm("d4rl_td3_bc", TINY)[0]],
    "discrete_bcq": discrete_bcq_and_policy,
    "discrete_cql": lambda: [atari_algorithm("atari_cql")],
    "discrete_crr": lambda: [atari_algorithm("atari_crr")],
    "replay_buffer": lambda: [ReplayBuffer(8)],
    "offline_trainer": lambda: [offline_trainer()],
}


def test_installed_tianshou_is_the_one_the_adapter_was_written_for():
    assert tianshou_adapter.installed_version() == WRITTEN_FOR, tianshou_adapter.mismatch_message()


@pytest.mark.parametrize("name", sorted(FRESH))
def test_every_private_attribute_exists_on_fresh_objects(name: str):
    torch.set_num_threads(1)
    try:
        objects = FRESH[name]()
    except Exception as err:  # a changed constructor: say so in the same terms
        pytest.fail(f"building {name} failed ({err!r}); {tianshou_adapter.mismatch_message()}")
    objects = [obj for obj in objects if obj is not None]
    missing = [m for obj in objects for m in tianshou_adapter.missing_private_attributes(obj)]
    assert not missing, tianshou_adapter.mismatch_message(missing)


def test_the_fresh_objects_cover_every_listed_class():
    """Each class in PRIVATE_ATTRIBUTES has an instance above, so every name is checked."""
    torch.set_num_threads(1)
    objects = [obj for build in FRESH.values() for obj in build()]
    for class_path in PRIVATE_ATTRIBUTES:
        cls = tianshou_adapter.resolve(class_path)
        assert any(isinstance(obj, cls) for obj in objects), f"no fresh {class_path} in FRESH"


def test_a_missing_attribute_or_another_version_fails_with_a_clear_message(monkeypatch):
    algorithm, _, _ = build_d4rl_algorithm("d4rl_td3_bc", TINY)
    del algorithm._cnt  # as if Tianshou had renamed the policy-delay counter
    missing = tianshou_adapter.missing_private_attributes(algorithm)
    assert missing == ["TD3._cnt"]
    message = tianshou_adapter.mismatch_message(missing)
    assert "TD3._cnt" in message and f"written for Tianshou {WRITTEN_FOR}" in message

    import tianshou

    monkeypatch.setattr(tianshou, "__version__", "9.9.9")
    message = tianshou_adapter.mismatch_message()
    assert f"written for Tianshou {WRITTEN_FOR}" in message and "9.9.9 is installed" in message


def direct_private_reads(source: str) -> list[tuple[int, str]]:
    """(line, name) of each ``x.<name>`` with a name of PRIVATE_ATTRIBUTES (other than the
    subclass hooks) in ``source``; ``self.<name>`` is left out, since the package's own classes
    may use the same short names (``_last``) for attributes of their own."""
    names = {n for attrs in PRIVATE_ATTRIBUTES.values() for n in attrs} - SUBCLASS_HOOKS
    return [
        (node.lineno, node.attr)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute)
        and node.attr in names
        and not (isinstance(node.value, ast.Name) and node.value.id == "self")
    ]


def test_only_the_adapter_reads_tianshous_private_attributes():
    package = Path(tianshou_offline.__file__).resolve().parent
    adapter = Path(tianshou_adapter.__file__).resolve()
    found = [
        f"{path.relative_to(package.parent)}:{line}: .{name}"
        for path in sorted(package.rglob("*.py"))
        if path != adapter
        for line, name in direct_private_reads(path.read_text())
    ]
    assert not found, "use tianshou_offline.tianshou_adapter for: " + ", ".join(found)
    # the check can fail
    assert direct_private_reads("algo._cnt += 1\nbuffer._insertion_idx\nself._last") == [
        (1, "_cnt"),
        (2, "_insertion_idx"),
    ]
