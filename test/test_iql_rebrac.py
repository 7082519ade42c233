"""IQL and ReBRAC (d4rl_iql.py, d4rl_rebrac.py): each loss against its formula on hand-made
numbers, the steps on a hand-made batch against the same formulas computed from the networks,
the cosine schedule, the checkpoint (resume bit-identical), and compiled equals eager (slow).

Their kill -9 resume cases are in test_d4rl_scripts.py and their learning cases in
test_d4rl_learning.py, beside the other D4RL scripts'.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from example_scripts import build_d4rl_algorithm, load_script
from parity import assert_same_state
from tianshou.data import ReplayBuffer

from tianshou_offline.algorithms.continuous import locomotion_reward_scale
from tianshou_offline.errors import UserInputError
from tianshou_offline.updates.continuous import (
    advantage_weights,
    cosine_lr_factor,
    expectile_loss,
    gaussian_nll,
    rebrac_actor_loss,
    rebrac_critic_target,
)
from tianshou_offline.updates.core import DeviceDataset
from tianshou_offline.updates.select import make_fast_update

TINY = ["--task", "Hopper-v2", "--hidden-sizes", "16", "16", "--device", "cpu"]


def random_buffer(size: int, obs_dim: int = 11, act_dim: int = 3, seed: int = 0) -> ReplayBuffer:
    """Random transitions in episodes of 50 (some terminated early), in file order."""
    rng = np.random.default_rng(seed)
    terminated = rng.random(size) < 0.02
    truncated = np.zeros(size, dtype=bool)
    truncated[49::50] = True
    truncated &= ~terminated
    return ReplayBuffer.from_data(
        obs=rng.standard_normal((size, obs_dim)).astype(np.float32),
        act=rng.uniform(-1, 1, (size, act_dim)).astype(np.float32),
        rew=rng.standard_normal(size).astype(np.float32),
        terminated=terminated,
        truncated=truncated,
        done=terminated | truncated,
        obs_next=rng.standard_normal((size, obs_dim)).astype(np.float32),
    )


def hand_batch(seed: int = 1, size: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "obs": torch.randn(size, 11, generator=g),
        "act": torch.rand(size, 3, generator=g) * 2 - 1,
        "rew": torch.randn(size, generator=g),
        "terminated": torch.tensor([0.0, 1.0] * (size // 2)),
        "done": torch.tensor([0.0, 1.0] * (size // 2)),
        "obs_next": torch.randn(size, 11, generator=g),
        "act_next": torch.rand(size, 3, generator=g) * 2 - 1,
    }


# --- the losses against their formulas -----------------------------------------------------


def test_expectile_loss_weighs_positive_residuals_by_tau_and_negative_by_one_minus_tau():
    diff = torch.tensor([1.0, -1.0, 2.0, -2.0])
    # |0.7 - 1(u < 0)| u^2: 0.7 * 1, 0.3 * 1, 0.7 * 4, 0.3 * 4
    assert float(expectile_loss(diff, 0.7)) == pytest.approx((0.7 + 0.3 + 2.8 + 1.2) / 4)
    assert float(expectile_loss(diff, 0.5)) == pytest.approx(0.5 * float(diff.pow(2).mean()))
    # the asymmetry: the same residual costs more above V than below it
    assert float(expectile_loss(torch.tensor([1.0]), 0.7)) > float(
        expectile_loss(torch.tensor([-1.0]), 0.7)
    )
    # its minimiser over a constant v is the upper expectile: above the mean, below the max
    samples = torch.tensor([0.0, 1.0, 2.0, 3.0, 10.0])
    v = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.SGD([v], lr=0.1)
    for _ in range(2000):
        optimizer.zero_grad()
        expectile_loss(samples - v, 0.9).backward()
        optimizer.step()
    v = v.detach()
    weights = torch.where(samples < v, 0.1, 0.9)
    assert float(v) == pytest.approx(float((weights * samples).sum() / weights.sum()), abs=1e-4)
    assert float(samples.mean()) < float(v) < float(samples.max())


def test_advantage_weights_are_exp_beta_a_clipped_at_the_maximum_and_constant():
    advantage = torch.tensor([-1.0, 0.0, 1.0, 10.0, 1000.0], requires_grad=True)
    weights = advantage_weights(advantage, beta=3.0, max_weight=100.0)
    expected = [math.exp(-3.0), 1.0, math.exp(3.0), 100.0, 100.0]  # exp(30) and exp(3000) clip
    assert weights.tolist() == pytest.approx(expected)
    assert not weights.requires_grad  # no gradient reaches the value network through them


def test_gaussian_nll_is_minus_the_normal_log_likelihood():
    mean, std = torch.tensor([[0.1, -0.5]]), torch.tensor([[0.3, 2.0]])
    act = torch.tensor([[0.4, 0.5]])
    expected = -torch.distributions.Normal(mean, std).log_prob(act).sum(-1)
    torch.testing.assert_close(gaussian_nll(mean, std, act), expected)


def test_rebrac_target_subtracts_the_critic_bc_penalty_of_the_next_action():
    q_next = torch.tensor([5.0, 5.0])
    act_next = torch.tensor([[0.5, 0.0], [0.5, 0.0]])
    act_next_data = torch.tensor([[0.0, 0.0], [0.5, 1.0]])  # squared distances 0.25 and 1
    rew, terminated = torch.tensor([1.0, 2.0]), torch.tensor([0.0, 1.0])
    target = rebrac_critic_target(q_next, act_next, act_next_data, rew, terminated, 0.9, 2.0)
    # r + gamma (1 - d) (Q' - c ||a' - a'_data||^2): 1 + 0.9 (5 - 0.5); the terminal: r only
    assert target.tolist() == pytest.approx([1.0 + 0.9 * (5.0 - 2.0 * 0.25), 2.0])


def test_rebrac_actor_loss_adds_the_actor_bc_penalty_to_the_normalised_q():
    q = torch.tensor([2.0, -6.0], requires_grad=True)  # mean |Q| = 4
    act_pred = torch.tensor([[0.5, 0.5], [0.0, 0.0]])
    act = torch.tensor([[0.0, 0.5], [1.0, 1.0]])  # squared distances 0.25 and 2
    loss = rebrac_actor_loss(q, act_pred, act, actor_bc_coef=0.1, normalize_q=True)
    expected = ((0.1 * 0.25 - 2.0 / 4) + (0.1 * 2.0 + 6.0 / 4)) / 2
    assert float(loss.detach()) == pytest.approx(expected)
    loss.backward()
    assert q.grad.tolist() == pytest.approx([-1 / 4 / 2, -1 / 4 / 2])  # lambda is a constant
    unnormalised = rebrac_actor_loss(q, act_pred, act, actor_bc_coef=0.1, normalize_q=False)
    assert float(unnormalised) == pytest.approx(((0.025 - 2.0) + (0.2 + 6.0)) / 2)


# --- the steps on a hand-made batch --------------------------------------------------------


@pytest.mark.parametrize("deterministic", [False, True], ids=["gaussian", "deterministic"])
def test_iql_step_computes_the_papers_losses(deterministic):
    flags = ["--deterministic-actor"] if deterministic else []
    algorithm, _, _ = build_d4rl_algorithm("d4rl_iql", [*TINY, "--beta", "2.0", *flags])
    algorithm.reward_scale = 0.5
    step = algorithm.functional_step()
    batch = hand_batch()
    obs, act = batch["obs"], batch["act"]
    with torch.no_grad():
        q_target = torch.min(
            algorithm.critic_old(obs, act), algorithm.critic2_old(obs, act)
        ).flatten()
        v = algorithm.value(obs).flatten()
        v_next = algorithm.value(batch["obs_next"]).flatten()
        returns = 0.5 * batch["rew"] + 0.99 * (1 - batch["terminated"]) * v_next
        critic1 = (algorithm.critic(obs, act).flatten() - returns).pow(2).mean()
        u = q_target - v
        value = (torch.where(u < 0, 0.3, 0.7) * u**2).mean()
        weights = torch.clamp(torch.exp(2.0 * u), max=100.0)
        out = algorithm.policy.actor(obs)[0]
        if deterministic:
            behaviour = (out - act).pow(2).sum(-1)
        else:
            behaviour = -torch.distributions.Normal(*out).log_prob(act).sum(-1)
        actor = (weights * behaviour).mean()
    stats = step.to_stats(step(batch, step.variant()).tolist())
    assert stats.value_loss == pytest.approx(float(value), rel=1e-5)
    assert stats.critic1_loss == pytest.approx(float(critic1), rel=1e-5)
    assert stats.actor_loss == pytest.approx(float(actor), rel=1e-5)
    assert stats.actor_lr == pytest.approx(3e-4)  # the schedule's first step: the base rate


def test_rebrac_step_computes_the_papers_losses():
    algorithm, _, _ = build_d4rl_algorithm(
        "d4rl_rebrac",
        [*TINY, "--policy-noise", "0", "--actor-bc-coef", "0.3", "--critic-bc-coef", "0.7"],
    )
    step = algorithm.functional_step()
    batch = hand_batch()
    obs, act, obs_next = batch["obs"], batch["act"], batch["obs_next"]
    with torch.no_grad():
        act_next = algorithm.actor_old(obs_next)[0]  # no noise: the target actor's action
        q_next = torch.min(
            algorithm.critic_old(obs_next, act_next), algorithm.critic2_old(obs_next, act_next)
        ).flatten()
        penalty = (act_next - batch["act_next"]).pow(2).sum(-1)
        returns = batch["rew"] + 0.99 * (1 - batch["terminated"]) * (q_next - 0.7 * penalty)
        critic2 = (algorithm.critic2(obs, act).flatten() - returns).pow(2).mean()
    assert step.variant()  # the first update moves the actor too
    stats = step.to_stats(step(batch, step.variant()).tolist())
    assert stats.critic2_loss == pytest.approx(float(critic2), rel=1e-5)
    # the actor's loss: its parameters before the update (a fresh build from the same seed),
    # the critics just updated
    before = build_d4rl_algorithm(
        "d4rl_rebrac",
        [*TINY, "--policy-noise", "0", "--actor-bc-coef", "0.3", "--critic-bc-coef", "0.7"],
    )[0]
    with torch.no_grad():
        act_pred = before.policy.actor(obs)[0]
        q = torch.min(algorithm.critic(obs, act_pred), algorithm.critic2(obs, act_pred)).flatten()
        bc = (act_pred - act).pow(2).sum(-1)
        actor = (0.3 * bc - q / q.abs().mean()).mean()
    assert stats.actor_loss == pytest.approx(float(actor), rel=1e-5)
    step.advance()
    assert not step.variant()  # policy delay 2


def test_rebrac_critics_have_layer_norm_and_the_actor_not():
    algorithm, _, _ = build_d4rl_algorithm(
        "d4rl_rebrac", ["--task", "Hopper-v2", "--device", "cpu"]
    )
    norms = [m for m in algorithm.critic.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 3  # three hidden layers of 256 (the paper's)
    assert not [m for m in algorithm.policy.modules() if isinstance(m, torch.nn.LayerNorm)]
    args = load_script("d4rl_rebrac").get_args([])
    assert (args.batch_size, args.hidden_sizes, args.actor_lr, args.critic_lr) == (
        1024,
        [256, 256, 256],
        1e-3,
        1e-3,
    )


# --- data-side parts -----------------------------------------------------------------------


def test_rebrac_next_actions_are_the_next_rows_within_an_episode():
    buffer = random_buffer(120)
    algorithm, _, _ = build_d4rl_algorithm("d4rl_rebrac", TINY)
    buffer = algorithm.process_buffer(algorithm.process_buffer(buffer))  # twice: no change
    act, act_next, done = buffer.act, buffer.act_next, buffer.done
    for i in range(len(buffer)):
        expected = act[i] if done[i] or i == len(buffer) - 1 else act[i + 1]
        np.testing.assert_array_equal(act_next[i], expected, err_msg=str(i))
    assert done[:-1].any() and (~done[:-1]).any()
    # the device dataset and Tianshou's sampled batches carry them
    data = DeviceDataset(buffer, "cpu")
    np.testing.assert_array_equal(data.tensors["act_next"].numpy(), act_next)
    assert "act_next" in buffer[np.arange(4)].get_keys()


def test_iql_reward_scale_is_1000_over_the_spread_of_episode_returns():
    rew = np.ones(60, dtype=np.float32)
    done = np.zeros(60, dtype=bool)
    done[[9, 39, 49]] = True  # complete episodes of 10, 30 and 10 steps; 10 unfinished ones
    buffer = ReplayBuffer.from_data(
        obs=np.zeros((60, 2), np.float32),
        act=np.zeros((60, 1), np.float32),
        rew=rew,
        terminated=done,
        truncated=np.zeros(60, dtype=bool),
        done=done,
        obs_next=np.zeros((60, 2), np.float32),
    )
    assert locomotion_reward_scale(buffer, 1000) == pytest.approx(1000 / (30 - 10))
    algorithm, _, _ = build_d4rl_algorithm("d4rl_iql", TINY)
    assert algorithm.normalize_reward and algorithm.reward_scale == 1.0
    algorithm.process_buffer(buffer)
    assert algorithm.reward_scale == pytest.approx(50.0)
    assert float(buffer.rew.sum()) == 60.0  # the data itself is unchanged
    off, _, _ = build_d4rl_algorithm("d4rl_iql", [*TINY, "--normalize-reward", "0"])
    off.process_buffer(buffer)
    assert off.reward_scale == 1.0


# --- schedule and checkpoints --------------------------------------------------------------


def test_cosine_schedule_is_torchs_cosine_annealing_and_reaches_zero():
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=10)
    for k in range(11):
        factor = float(cosine_lr_factor(torch.tensor(float(k)), 10))
        assert factor == pytest.approx(optimizer.param_groups[0]["lr"], abs=1e-7), k
        optimizer.step()
        scheduler.step()
    assert float(cosine_lr_factor(torch.tensor(25.0), 10)) == 0.0  # stays at 0 after the end


def test_iql_actor_learns_at_the_scheduled_rate():
    """With a one-update schedule the second update's rate is 0: the actor stays, V and the
    critics move (the schedule reaches the optimizer; the test fails if it does not)."""
    algorithm, _, _ = build_d4rl_algorithm("d4rl_iql", [*TINY, "--epoch", "1"])
    algorithm.actor_lr_decay_steps = 1
    step = algorithm.functional_step()
    batch = hand_batch(size=32)
    first = step.to_stats(step(batch, None).tolist())
    actor = copy.deepcopy(algorithm.policy.state_dict())
    value = copy.deepcopy(algorithm.value.state_dict())
    second = step.to_stats(step(batch, None).tolist())
    assert (first.actor_lr, second.actor_lr) == (pytest.approx(3e-4), 0.0)
    for key, tensor in algorithm.policy.state_dict().items():
        assert torch.equal(tensor, actor[key]), key
    assert any(not torch.equal(t, value[k]) for k, t in algorithm.value.state_dict().items())


@pytest.mark.parametrize("name", ["d4rl_iql", "d4rl_rebrac"])
def test_checkpoint_resume_continues_bit_identically(name):
    """Updates 1-3, checkpoint, load into a fresh algorithm, updates 4-7: bit-identical to 7
    uninterrupted updates (the schedule, the policy delay, targets and every optimizer)."""
    argv = [*TINY, "--epoch", "1", "--epoch-num-steps", "7"]
    whole, _, _ = build_d4rl_algorithm(name, argv)
    buffer = whole.process_buffer(random_buffer(300))
    first = copy.deepcopy(whole)
    torch.manual_seed(5)
    update = make_fast_update(whole, buffer, "cpu", compile=False)
    for _ in range(7):
        update.run_step(32)

    torch.manual_seed(5)
    update = make_fast_update(first, buffer, "cpu", compile=False)
    for _ in range(3):
        update.run_step(32)
    rng = torch.get_rng_state()
    saved = copy.deepcopy(first.state_dict())
    resumed, _, _ = build_d4rl_algorithm(name, argv)  # fresh networks, then the checkpoint
    resumed.load_state_dict(saved)
    resumed.process_buffer(buffer)
    torch.set_rng_state(rng)
    update = make_fast_update(resumed, buffer, "cpu", compile=False)
    for _ in range(4):
        update.run_step(32)
    assert_same_state(whole, resumed, atol=0)


def test_bad_input_is_refused_with_one_line():
    iql, rebrac = load_script("d4rl_iql"), load_script("d4rl_rebrac")
    with pytest.raises(UserInputError, match="--expectile 1.0"):
        iql.get_args(["--expectile", "1.0"])
    with pytest.raises(UserInputError, match="no IQL"):
        iql.get_args(["--tianshou-2.0.1-maths"])
    with pytest.raises(UserInputError, match="no ReBRAC"):
        rebrac.get_args(["--tianshou-2.0.1-maths"])
    with pytest.raises(UserInputError, match="--actor-bc-coef"):
        rebrac.get_args(["--actor-bc-coef", "-1"])


# --- slow: compiled, scripts end to end, learning -------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["d4rl_iql", "d4rl_rebrac"])
def test_compiled_step_matches_eager_step(name):
    torch.set_num_threads(1)
    torch._dynamo.reset()
    algorithm, _, _ = build_d4rl_algorithm(name, [*TINY, "--hidden-sizes", "32", "32"])
    buffer = algorithm.process_buffer(random_buffer(500))
    results = []
    for compile_step in (False, True):
        fast = copy.deepcopy(algorithm)
        update = make_fast_update(fast, buffer, "cpu", compile=compile_step)
        torch.manual_seed(0)
        values = [update.run_step(64) for _ in range(5)]
        results.append((fast, torch.stack(values)))
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-4, atol=1e-5)
    assert_same_state(results[0][0], results[1][0], atol=1e-5)
