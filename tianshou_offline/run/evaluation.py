"""Evaluation that every run shares: seeding, and test collectors whose episodes start from the
same seeds at every evaluation (so scores compare across epochs, resumes and ``--watch``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tianshou.algorithm.algorithm_base import Algorithm, Policy
from tianshou.data import Collector, CollectStats, ReplayBuffer
from tianshou.env import BaseVectorEnv


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def global_rng_state() -> dict[str, Any]:
    """The process's random generators (Python, NumPy, torch, CUDA), for a checkpoint."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_global_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``global_rng_state`` saved (CUDA's where CUDA is there to take it)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass(frozen=True)
class EvalSetup:
    """How a test collector is made, as picklable builders (top-level functions, or
    ``functools.partial`` of them; no lambdas): ``--eval-in-background`` sends it to a worker
    process, which builds the same evaluation there."""

    make_envs: Callable[[], BaseVectorEnv]
    seed: int
    exploration_noise: bool = False
    make_buffer: Callable[[], ReplayBuffer] | None = None  # None: Collector's default buffer


class SeededEvalCollector(Collector[CollectStats]):
    """An evaluation collector whose every reset restarts the environments from the same seeds.

    Every evaluation of a run then plays the same episode starts, so scores are comparable
    across epochs, across a resume, and with ``--watch`` of a saved policy.
    """

    # how this collector was made, where it was made by ``from_setup``
    setup: EvalSetup | None = None

    def __init__(
        self, policy: Algorithm | Policy, envs: BaseVectorEnv, seed: int, **collector_kwargs: Any
    ) -> None:
        """``collector_kwargs`` go to ``Collector`` (e.g. ``buffer``, ``exploration_noise``)."""
        self._eval_seed = seed
        super().__init__(policy, envs, **collector_kwargs)

    @classmethod
    def from_setup(
        cls, policy: Algorithm | Policy, setup: EvalSetup, envs: BaseVectorEnv | None = None
    ) -> SeededEvalCollector:
        """The collector ``setup`` describes; ``envs``: environments already made by
        ``setup.make_envs`` (else it is called). The collector keeps ``setup``."""
        collector = cls(
            policy,
            envs if envs is not None else setup.make_envs(),
            setup.seed,
            buffer=setup.make_buffer() if setup.make_buffer is not None else None,
            exploration_noise=setup.exploration_noise,
        )
        collector.setup = setup
        return collector

    def reset_env(self, gym_reset_kwargs: dict[str, Any] | None = None) -> Any:
        self.env.seed(self._eval_seed)
        return super().reset_env(gym_reset_kwargs)
