"""Online QR-DQN's functional step (tianshou_offline.updates.discrete.QRDQNStep) computes what
Tianshou 2.0.1's ``QRDQN`` update computes, eagerly and compiled.

The algorithm is built by examples/atari/atari_qrdqn.py's ``build_algorithm`` on a tiny
convolutional feature net and a frame-stacking vector buffer filled as the online loop fills it
(several sub-buffers, wrapped, episodes ending terminated and truncated, episodes still
running), with 3-step returns that cross those ends and a target copy every 2 updates.
"""

from __future__ import annotations

import argparse
import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from example_scripts import load_script
from parity import TinyFrames, assert_same_state, tianshou_twin
from tianshou.algorithm.algorithm_base import policy_within_training_step
from tianshou.data import Batch, VectorReplayBuffer

from tianshou_offline.algorithms.base import batch_tensors
from tianshou_offline.updates.core import FastUpdate
from tianshou_offline.updates.discrete import StagedBatches, nstep_transitions
from tianshou_offline.updates.select import OnlineUpdate, make_fast_update

atari_qrdqn = load_script("atari_qrdqn")

NUM_ACTIONS = 3
FRAME = 10
ARGS = [
    *("--device", "cpu", "--num-quantiles", "8", "--n-step", "3"),
    *("--target-update-freq", "2", "--lr", "1e-3"),
]


def build(argv: list[str] = ARGS):
    torch.manual_seed(0)
    args = atari_qrdqn.get_parser().parse_args(argv)
    return atari_qrdqn.build_algorithm(args, gym.spaces.Discrete(NUM_ACTIONS), TinyFrames())


def online_buffer(seed: int = 0) -> VectorReplayBuffer:
    """3 sub-buffers of 30, filled with 40 steps each (wrapped), as the collector adds them."""
    rng = np.random.default_rng(seed)
    buffer = VectorReplayBuffer(
        90, buffer_num=3, stack_num=4, ignore_obs_next=True, save_only_last_obs=True
    )
    for _ in range(40):
        terminated = rng.random(3) < 0.12
        truncated = ~terminated & (rng.random(3) < 0.08)
        buffer.add(
            Batch(
                obs=rng.integers(0, 256, (3, 4, FRAME, FRAME), dtype=np.uint8),
                act=rng.integers(0, NUM_ACTIONS, 3),
                rew=rng.choice([-1.0, 0.0, 1.0], 3),
                terminated=terminated,
                truncated=truncated,
                obs_next=rng.integers(0, 256, (3, 4, FRAME, FRAME), dtype=np.uint8),
                info=[{}, {}, {}],
            )
        )
    assert buffer.unfinished_index().size > 0 and buffer.terminated.any()
    assert (buffer.done & ~buffer.terminated).any()  # truncations
    return buffer


@pytest.fixture(scope="module")
def buffer() -> VectorReplayBuffer:
    return online_buffer()


def test_eager_step_matches_tianshou_qrdqn(buffer: VectorReplayBuffer) -> None:
    """5 updates of the project's QRDQN (its step, eager) and of Tianshou's class on the same
    tensors and batches: the same losses, parameters, target network, Adam moments, counter."""
    torch.set_num_threads(1)
    algorithm = build()
    plain = tianshou_twin(algorithm)  # Tianshou 2.0.1's QRDQN on copies of the same tensors
    fast = copy.deepcopy(algorithm)
    rng = np.random.default_rng(1)
    copies = 0
    for i in range(5):
        indices = rng.integers(0, len(buffer), 32)
        losses = []
        for algo in (plain, fast):
            with policy_within_training_step(algo.policy):
                batch = algo._preprocess_batch(buffer[indices], buffer, indices)
                losses.append(algo._update_with_batch(batch).loss)
        assert losses[1] == pytest.approx(losses[0], rel=1e-5, abs=1e-6), i
        copies += i % 2 == 0
    assert fast._iter == plain._iter == 5
    assert copies == 3  # the target network was copied at updates 0, 2 and 4
    assert_same_state(plain, fast, atol=1e-6)
    # the target network lags: it is not the online network (the check could fail)
    online, target = (
        torch.cat([p.flatten() for p in m.parameters()])
        for m in (fast.policy.model, fast.model_old)
    )
    assert not torch.allclose(online, target)


def test_nstep_transitions_against_a_direct_sum(buffer: VectorReplayBuffer) -> None:
    """Each sampled transition's n-step return and discount, walked by hand."""
    gamma, n_step = 0.9, 3
    indices = np.arange(len(buffer))
    batch = nstep_transitions(buffer[indices], buffer, indices, gamma, n_step)
    unfinished = set(buffer.unfinished_index().tolist())
    for row, index in enumerate(indices):
        total, discount, now = 0.0, 1.0, int(index)
        for k in range(n_step):
            total += discount * buffer.rew[now]
            discount *= gamma
            if buffer.done[now] or now in unfinished or k == n_step - 1:
                break
            now = int(buffer.next(now))
        bootstrap = 0.0 if buffer.terminated[now] else discount
        assert batch.nstep_return[row] == pytest.approx(total), index
        assert batch.nstep_discount[row] == pytest.approx(bootstrap), index
        np.testing.assert_array_equal(batch.obs_next[row], buffer[now].obs_next)


@pytest.mark.slow  # compiles the step (~20-40 s on one core)
def test_compiled_step_matches_eager_step(buffer: VectorReplayBuffer) -> None:
    """The same 5 staged batches through the eager step and the compiled one (FastUpdate on
    StagedBatches, as atari_qrdqn.py --compile runs it): losses and state to 1e-5."""
    torch._dynamo.reset()
    torch.set_num_threads(1)
    algorithm = build()
    rng = np.random.default_rng(2)
    batches = []
    for _ in range(5):
        indices = rng.integers(0, len(buffer), 32)
        batch = nstep_transitions(buffer[indices], buffer, indices, 0.99, 3)
        batches.append(batch_tensors(batch, torch.device("cpu")))
    results = []
    for compile_step in (False, True):
        fast = copy.deepcopy(algorithm)
        staged = StagedBatches("cpu")
        update = FastUpdate(fast, fast.functional_step(), staged, compile=compile_step)
        values = []
        for batch in batches:
            staged.stage(batch)
            values.append(update.run_step(32))
        assert update.failed is None
        results.append((fast, torch.stack(values)))
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-5, atol=1e-5)
    assert_same_state(results[0][0], results[1][0], atol=1e-5)
    assert results[1][0]._iter == 5


def test_online_update_uses_the_step(buffer: VectorReplayBuffer, capsys) -> None:
    """OnlineUpdate (atari_qrdqn.py's update) without --compile is the algorithm's eager step."""
    algorithm = build()
    update = OnlineUpdate(algorithm, compile=False)
    assert algorithm.functional_step() is not None
    before = [p.detach().clone() for p in algorithm.policy.model.parameters()]
    with policy_within_training_step(algorithm.policy):
        stats = update(buffer, 16)
    assert np.isfinite(stats.loss) and algorithm._iter == 1
    assert any(
        not torch.equal(a, b)
        for a, b in zip(before, algorithm.policy.model.parameters(), strict=True)
    )
    # the offline fast path (batches sampled on the device) refuses it, saying why
    assert make_fast_update(algorithm, buffer, "cpu") is None
    assert "samples its batches on the host" in capsys.readouterr().out


def test_compile_default() -> None:
    def args(*argv: str, device: str = "cpu") -> argparse.Namespace:
        parsed = atari_qrdqn.get_parser().parse_args(["--device", "cpu", *argv])
        parsed.device = device  # (the parser refuses cuda on a machine without one)
        return parsed

    assert atari_qrdqn.use_compile(args(device="cuda"))
    assert not atari_qrdqn.use_compile(args("--no-compile", device="cuda"))
    assert atari_qrdqn.use_compile(args("--compile"))
    assert atari_qrdqn.use_compile(args())  # the published run, 1M updates
    # the test suite's short runs stay eager on the CPU
    assert not atari_qrdqn.use_compile(args("--epoch", "2", "--epoch-num-steps", "100"))


@pytest.mark.slow  # three runs of the script, each compiling the step (2-4 min on one core)
def test_a_killed_compiled_run_resumes_exactly(tmp_path, monkeypatch) -> None:
    """test_qrdqn_resume's kill -9 case with --compile: the resumed run (given only
    --resume-path) compiles again and ends in the uninterrupted compiled run's state."""
    import test_qrdqn_resume

    monkeypatch.setattr(test_qrdqn_resume, "RUN", [*test_qrdqn_resume.RUN, "--compile"])
    test_qrdqn_resume.test_a_killed_run_resumes_at_the_same_step_and_ends_as_an_uninterrupted_one(
        tmp_path
    )
