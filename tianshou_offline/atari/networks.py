"""Networks for Atari: the Nature DQN convolutional torso and the heads built on top of it.

Every Atari network here is "feature extractor + small MLP head". The feature extractor turns
a stack of frames into a vector; the heads only see that vector, so the offline algorithms'
heads (imitation logits, Q-values, quantiles, actor and critic) work unchanged on any other
feature extractor, e.g. an MLP for CartPole in the tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tianshou.utils.net.common import MLP, ActionReprNetWithVectorOutput, ModuleWithVectorOutput
from tianshou.utils.net.discrete import DiscreteActor
from torch import nn

# The fully connected layer after the convolutions in the Nature DQN; every head uses it.
HIDDEN_SIZES = (512,)


class NatureCNN(ActionReprNetWithVectorOutput):
    """Frames (B, 4, 84, 84) uint8 -> features (B, 3136): the three convolutions of Mnih et
    al. (2015), "Human-level control through deep reinforcement learning".

    Pixels are scaled to [0, 1] here, so buffers and environments keep compact uint8 frames and
    only the batch on the device is converted to float.
    """

    def __init__(self, in_channels: int = 4, frame_size: int = 84) -> None:
        convolutions = nn.Sequential(
            nn.Conv2d(in_channels, 32, kernel_size=8, stride=4),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, kernel_size=4, stride=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, kernel_size=3, stride=1),
            nn.ReLU(inplace=True),
            nn.Flatten(),
        )
        with torch.no_grad():
            dummy = torch.zeros(1, in_channels, frame_size, frame_size)
            output_dim = convolutions(dummy).shape[1]  # 64 * 7 * 7 = 3136 for 84x84
        super().__init__(output_dim)
        self.convolutions = convolutions

    def forward(
        self, obs: Any, state: Any = None, info: dict[str, Any] | None = None
    ) -> tuple[torch.Tensor, Any]:
        device = next(self.parameters()).device
        frames = torch.as_tensor(obs, device=device)  # uint8 travels to the GPU, 4x less data
        return self.convolutions(frames.float() / 255.0), state


def logits_head(feature_net: ModuleWithVectorOutput, num_actions: int) -> DiscreteActor:
    """Features -> 512 -> one logit (or Q-value) per action; no softmax, so the algorithm
    decides how to read them (imitation logits, BCQ's Q-values, CRR's actor)."""
    return DiscreteActor(
        preprocess_net=feature_net,
        action_shape=num_actions,
        hidden_sizes=HIDDEN_SIZES,
        softmax_output=False,
    )


class QuantileNet(ActionReprNetWithVectorOutput):
    """Features -> return quantiles per action, shape (B, num_actions, num_quantiles).

    With ``NatureCNN`` features this is the QR-DQN network of Dabney et al. (2018); online
    QRDQN and offline discrete CQL (which is QR-DQN plus a conservative penalty) both use it.
    """

    def __init__(
        self,
        feature_net: ModuleWithVectorOutput,
        num_actions: int,
        num_quantiles: int,
        hidden_sizes: Sequence[int] = HIDDEN_SIZES,
    ) -> None:
        super().__init__(num_actions * num_quantiles)
        self.feature_net = feature_net
        self.num_actions = num_actions
        self.num_quantiles = num_quantiles
        self.head = MLP(
            input_dim=feature_net.get_output_dim(),
            output_dim=num_actions * num_quantiles,
            hidden_sizes=hidden_sizes,
        )

    def forward(
        self, obs: Any, state: Any = None, info: dict[str, Any] | None = None
    ) -> tuple[torch.Tensor, Any]:
        features, state = self.feature_net(obs, state=state)
        quantiles = self.head(features).view(-1, self.num_actions, self.num_quantiles)
        return quantiles, state
