"""The offline algorithms the scripts train: Tianshou 2.0.1's classes whose update is the one
functional step of ``tianshou_offline.updates`` (run eagerly here, compiled by ``--compile``),
with the paper's maths by default and Tianshou's with ``tianshou_maths=True``."""

from tianshou_offline.algorithms.continuous import (
    BCQ,
    CQL,
    IQL,
    TD3BC,
    ImitationLearning,
    ReBRAC,
)
from tianshou_offline.algorithms.discrete import QRDQN, DiscreteBCQ, DiscreteCQL, DiscreteCRR

__all__ = [
    "BCQ",
    "CQL",
    "IQL",
    "ReBRAC",
    "TD3BC",
    "ImitationLearning",
    "DiscreteBCQ",
    "DiscreteCQL",
    "DiscreteCRR",
    "QRDQN",
]
