"""Each correction to Tianshou 2.0.1's maths, alone: what the corrected step computes, what
Tianshou's does (``--tianshou-2.0.1-maths``), on hand-made inputs; and what the checkpoint holds.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from example_scripts import build_d4rl_algorithm, load_script

from tianshou_offline.updates.discrete import crr_actor_loss

TINY = ["--task", "Hopper-v2", "--hidden-sizes", "16", "16", "--device", "cpu"]


def cql_step(*flags: str):
    algorithm, _, _ = build_d4rl_algorithm("d4rl_cql", [*TINY, *flags])
    return algorithm, algorithm.functional_step()


def test_cql_random_actions_span_the_action_box():
    _, corrected = cql_step()
    torch.manual_seed(0)
    actions, log_density = corrected.random_actions(4000, 3)
    assert actions.min() < -0.99 and actions.max() > 0.99  # Hopper's box is [-1, 1]^3
    assert abs(float(actions.mean())) < 0.05
    assert log_density == pytest.approx(3 * np.log(0.5))  # U([-1, 1]^3)
    _, tianshou = cql_step("--tianshou-2.0.1-maths")
    constant, _ = tianshou.random_actions(100, 3)
    assert torch.equal(constant, torch.ones_like(constant))  # U(-min_action, max_action) = U(1, 1)


def test_cql_log_sum_exp_runs_over_each_states_sampled_actions():
    algorithm, corrected = cql_step()
    _, tianshou = cql_step("--tianshou-2.0.1-maths")
    batch_size, repeats = 2, algorithm.num_repeat_actions
    values = [torch.randn(batch_size * repeats, 1) for _ in range(3)]  # states repeated in a row
    got = corrected.sampled_logsumexp(*values, batch_size)
    per_state = torch.cat([v.reshape(batch_size, repeats) for v in values], 1)  # (B, 3R)
    expected = torch.stack([torch.logsumexp(per_state[i], 0) for i in range(batch_size)])
    torch.testing.assert_close(got, expected)
    # Tianshou's: a log-sum-exp over the three values of each repeated state
    three = torch.cat(values, 1)  # (B * R, 3)
    torch.testing.assert_close(tianshou.sampled_logsumexp(*values, batch_size), three.logsumexp(1))


def test_td3_bc_target_action_stays_within_the_bounds():
    for flags, within in (([], True), (["--tianshou-2.0.1-maths"], False)):
        algorithm, _, spec = build_d4rl_algorithm(
            "d4rl_td3_bc", [*TINY, "--policy-noise", "5", "--noise-clip", "3", *flags]
        )
        step = algorithm.functional_step()
        torch.manual_seed(0)
        act = step.target_action(torch.randn(256, spec.obs_dim))
        inside = bool((act.abs() <= spec.max_action).all())
        assert inside == within, flags


def test_crr_actor_loss_weights_each_sample_by_its_own_detached_weight():
    log_prob = torch.tensor([-1.0, -2.0, -3.0], requires_grad=True)
    advantage = torch.tensor([[0.5], [-1.0], [2.0]], requires_grad=True)
    weight = advantage.exp()  # f(A) = exp(A / beta), beta = 1
    loss = crr_actor_loss(log_prob, weight, corrected=True)
    # the mean over samples of -log pi(a_i|s_i) * f(A_i)
    expected = (1.0 * np.exp(0.5) + 2.0 * np.exp(-1.0) + 3.0 * np.exp(2.0)) / 3
    assert float(loss) == pytest.approx(expected)
    loss.backward()
    assert advantage.grad is None  # no gradient reaches the critic through the weight
    # Tianshou 2.0.1: (B,) x (B, 1) -> (B, B): -mean(log pi) * mean(f), and f not detached
    tianshou = crr_actor_loss(log_prob, weight, corrected=False)
    assert float(tianshou) == pytest.approx(
        float(-log_prob.detach().mean() * weight.detach().mean())
    )
    tianshou.backward()
    assert advantage.grad is not None and bool(advantage.grad.abs().sum() > 0)


def test_crr_corrected_step_gives_the_critic_no_gradient_from_the_actor_loss():
    """With the critic term and the CQL term switched off, the corrected CRR update leaves the
    critic head alone; Tianshou's moves it through the undetached weight."""
    import gymnasium as gym
    from tianshou.utils.net.common import Net

    script = load_script("atari_crr")
    results = {}
    for flags in ([], ["--tianshou-2.0.1-maths"]):
        torch.manual_seed(0)
        args = script.get_args(["--device", "cpu", "--min-q-weight", "0", *flags])
        algorithm = script.build_algorithm(
            args, Net(state_shape=4, hidden_sizes=[8]), gym.spaces.Discrete(3)
        )
        step = algorithm.functional_step()
        critic_head = dict(algorithm.critic.last.named_parameters())
        before = {k: v.detach().clone() for k, v in critic_head.items()}
        # the critic's own loss off: only the actor loss (and its weight) can move the critic
        data = {
            "obs": torch.randn(32, 4),
            "act": torch.randint(0, 3, (32,)),
            "rew": torch.zeros(32),
            "terminated": torch.zeros(32),
            "done": torch.zeros(32),
            "obs_next": torch.randn(32, 4),
        }
        original = torch.nn.functional.mse_loss
        try:
            torch.nn.functional.mse_loss = lambda a, b: (a - b).sum() * 0.0
            step(data, step.variant())
        finally:
            torch.nn.functional.mse_loss = original
        moved = any(not torch.equal(before[k], v.detach()) for k, v in critic_head.items())
        results[bool(flags)] = moved
    assert results == {False: False, True: True}


def test_checkpoint_holds_counters_multiplier_and_every_optimizer():
    algorithm, _, _ = build_d4rl_algorithm("d4rl_cql", [*TINY, "--with-lagrange"])
    state = algorithm.state_dict()
    assert "cql_log_alpha" in state  # a registered parameter
    extra = state["_extra_state"]["optimizers"]
    assert set(extra) == {"cql_alpha", "alpha"}  # with Tianshou's three: five optimizers
    assert len(state["_optimizers"]) == 3

    td3, _, _ = build_d4rl_algorithm("d4rl_td3_bc", TINY)
    td3._cnt = 7
    restored = copy.deepcopy(td3)
    restored._cnt = 0
    restored.load_state_dict(td3.state_dict())
    assert restored._cnt == 7  # the policy delay's phase survives a resume
