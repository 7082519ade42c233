"""Comparisons of two update paths (Tianshou's and the fast step): every state tensor equal."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch
from tianshou.algorithm.algorithm_base import policy_within_training_step
from tianshou.data import ReplayBuffer
from tianshou.utils.net.common import ActionReprNetWithVectorOutput
from torch import nn


def tianshou_twin(algorithm):
    """A copy of one of this package's algorithms that runs Tianshou 2.0.1's own class: same
    tensors and settings, Tianshou's ``_preprocess_batch`` and ``_update_with_batch``."""
    from tianshou_offline.algorithms.base import FunctionalUpdate

    twin = copy.deepcopy(algorithm)
    bases = type(algorithm).__mro__
    twin.__class__ = bases[bases.index(FunctionalUpdate) + 1]
    return twin


def assert_same_state(plain, fast, atol: float = 1e-5) -> None:
    """Every tensor of two algorithms' ``state_dict`` equal (``_extra_state``, which only this
    package's classes have, where both have it)."""
    plain_state, fast_state = plain.state_dict(), fast.state_dict()
    if ("_extra_state" in plain_state) != ("_extra_state" in fast_state):
        plain_state.pop("_extra_state", None)
        fast_state.pop("_extra_state", None)
    assert plain_state.keys() == fast_state.keys()
    flat_plain = _flatten(plain_state)
    flat_fast = _flatten(fast_state)
    assert flat_plain.keys() == flat_fast.keys()
    for key, value in flat_plain.items():
        if isinstance(value, torch.Tensor):
            torch.testing.assert_close(
                flat_fast[key].to(value.device, value.dtype), value, atol=atol, rtol=1e-4, msg=key
            )
        else:
            assert flat_fast[key] == value, key


def _flatten(tree, prefix: str = "") -> dict:
    if isinstance(tree, dict):
        out = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}/"))
        return out
    if isinstance(tree, list | tuple):
        out = {}
        for i, value in enumerate(tree):
            out.update(_flatten(value, f"{prefix}{i}/"))
        return out
    return {prefix: tree}


def step_both_ways(plain, step, data, buffer: ReplayBuffer, *, steps: int, batch_size: int) -> None:
    """``steps`` updates of Tianshou's ``_preprocess_batch`` + ``_update_with_batch`` on ``plain``
    and of the fast ``step`` on the same batches and random numbers; the losses must agree."""
    rng = np.random.default_rng(1)
    for i in range(steps):
        indices = rng.integers(0, len(buffer), batch_size)
        torch.manual_seed(100 + i)  # same random numbers (noise, samples) on both paths
        with policy_within_training_step(plain.policy):
            batch = plain._preprocess_batch(buffer[indices], buffer, indices)
            expected = plain._update_with_batch(batch).get_loss_stats_dict()
        torch.manual_seed(100 + i)
        values = step(data.gather(torch.as_tensor(indices)), step.variant())
        step.advance()
        got = step.to_stats(values.tolist()).get_loss_stats_dict()
        assert got.keys() == expected.keys()
        for key in expected:
            assert got[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-5), (i, key)


class TinyFrames(ActionReprNetWithVectorOutput):
    """(B, 4, 10, 10) uint8 -> 64 features; scales pixels as NatureCNN does."""

    def __init__(self) -> None:
        super().__init__(64)
        self.net = nn.Sequential(nn.Conv2d(4, 4, 3, stride=2), nn.ReLU(), nn.Flatten())

    def forward(self, obs: Any, state: Any = None, info: Any = None) -> tuple[torch.Tensor, Any]:
        frames = torch.as_tensor(obs, device=next(self.parameters()).device)
        return self.net(frames.float() / 255.0), state
