"""The fast path of the offline Atari scripts (examples/offline/fast_update_atari.py) computes
what Tianshou computes.

The stacked-frame dataset gives exactly ``buffer[indices].obs`` / ``.obs_next`` (episode starts
repeat the first frame, an episode's last transition has obs_next == obs), and each algorithm,
built by its script's ``build_algorithm``, takes the same steps as Tianshou's
``_preprocess_batch`` + ``_update_with_batch`` from the same batches: same losses, same
``state_dict`` (networks, target networks, Adam moments). A tiny convolutional feature net on
10x10 frames keeps it fast; one case runs the scripts' NatureCNN on 84x84 frames.
"""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from example_scripts import load_script
from parity import TinyFrames, assert_same_state, step_both_ways, tianshou_twin
from tianshou.data import Batch, ReplayBuffer
from tianshou.utils.net.common import Net
from torch import nn

from tianshou_offline.atari.networks import NatureCNN
from tianshou_offline.data.atari_buffer import buffer_from_columns
from tianshou_offline.updates.core import DeviceDataset
from tianshou_offline.updates.discrete import FrameStackDataset
from tianshou_offline.updates.select import device_dataset, functional_step, make_fast_update

atari_bcq = load_script("atari_bcq")
atari_cql = load_script("atari_cql")
atari_crr = load_script("atari_crr")
atari_il = load_script("atari_il")

NUM_ACTIONS = 4
FRAME = 10
FREQ = ["--target-update-freq", "2"]  # hard target updates at steps 0, 2, 4 of the five
CASES = {
    "il": (atari_il, []),
    "bcq": (atari_bcq, FREQ),
    "cql": (atari_cql, FREQ),
    "crr": (atari_crr, FREQ),
    "crr_cql": (atari_crr, [*FREQ, "--min-q-weight", "10"]),
    "crr_binary": (atari_crr, [*FREQ, "--policy-improvement-mode", "binary"]),
}


def build(module, argv: list[str], feature_net: nn.Module | None = None):
    torch.manual_seed(0)
    args = module.get_args(["--device", "cpu", "--tianshou-2.0.1-maths", *argv])
    feature_net = TinyFrames() if feature_net is None else feature_net
    return module.build_algorithm(args, feature_net, gym.spaces.Discrete(NUM_ACTIONS))


def random_frames_buffer(size: int, frame: int = FRAME, seed: int = 0) -> ReplayBuffer:
    """Short episodes (1 to 7 steps, ending terminated or truncated) in the Atari format."""
    rng = np.random.default_rng(seed)
    terminated = np.zeros(size, dtype=bool)
    truncated = np.zeros(size, dtype=bool)
    end = -1
    while True:
        end += int(rng.integers(1, 8))
        if end >= size - 1:
            break
        (terminated if rng.random() < 0.5 else truncated)[end] = True
    truncated[size - 1] = not terminated[size - 1]
    columns = {
        "frames": rng.integers(0, 256, (size, frame, frame), dtype=np.uint8),
        "act": rng.integers(0, NUM_ACTIONS, size),
        "rew": rng.choice([-1.0, 0.0, 1.0], size).astype(np.float32),
        "terminated": terminated,
        "truncated": truncated,
    }
    return buffer_from_columns(columns)


def circular_buffer() -> ReplayBuffer:
    """A Tianshou buffer filled by ``add`` past its size (insertion point mid-buffer)."""
    rng = np.random.default_rng(1)
    buffer = ReplayBuffer(50, stack_num=4, ignore_obs_next=True, save_only_last_obs=True)
    for step in range(73):
        done = rng.random() < 0.2
        buffer.add(
            Batch(
                obs=rng.integers(0, 256, (4, 3, 3), dtype=np.uint8),
                act=int(rng.integers(NUM_ACTIONS)),
                rew=float(rng.standard_normal()),
                terminated=done,
                truncated=False,
                done=done,
                obs_next=rng.integers(0, 256, (4, 3, 3), dtype=np.uint8),
                info={},
            )
        )
    return buffer


@pytest.mark.parametrize("make_buffer", [lambda: random_frames_buffer(200), circular_buffer])
def test_stacked_frames_match_the_buffer(make_buffer) -> None:
    buffer = make_buffer()
    data = FrameStackDataset(buffer, "cpu")
    rng = np.random.default_rng(0)
    starts = np.flatnonzero(buffer.done[: len(buffer)])
    # every row, episode starts and ends, and a random draw with repeats
    for indices in (np.arange(len(buffer)), starts, (starts + 1) % len(buffer)):
        indices = np.concatenate([indices, rng.integers(0, len(buffer), 64)])
        expected = buffer[indices]
        got = data.gather(torch.as_tensor(indices))
        assert got["obs"].dtype == torch.uint8
        np.testing.assert_array_equal(got["obs"].numpy(), expected.obs)
        np.testing.assert_array_equal(got["obs_next"].numpy(), expected.obs_next)
        np.testing.assert_array_equal(got["act"].numpy(), expected.act)
        np.testing.assert_allclose(got["rew"].numpy(), expected.rew.astype(np.float32))
        np.testing.assert_array_equal(got["terminated"].numpy(), expected.terminated)
        np.testing.assert_array_equal(got["done"].numpy(), expected.done)
    # the tables see the episode boundaries: a first step repeats its frame, a last step's
    # obs_next is its obs
    first = (starts + 1) % len(buffer)
    frames = data.gather(torch.as_tensor(first))["obs"]
    assert bool((frames == frames[:, :1]).all())
    ends = data.gather(torch.as_tensor(starts))
    assert torch.equal(ends["obs"], ends["obs_next"])


def test_frames_are_not_copied_on_cpu() -> None:
    buffer = random_frames_buffer(100)
    data = FrameStackDataset(buffer, "cpu")
    assert data.frames.data_ptr() == buffer.obs.__array_interface__["data"][0]


def compare_steps(algorithm, buffer: ReplayBuffer, batch_size: int, steps: int = 5) -> None:
    plain = tianshou_twin(algorithm)  # Tianshou 2.0.1's class on the same tensors
    fast = copy.deepcopy(algorithm)
    buffer = plain.process_buffer(buffer)
    step = functional_step(fast)
    assert step is not None
    data = device_dataset(buffer, "cpu")
    step_both_ways(plain, step, data, buffer, steps=steps, batch_size=batch_size)
    assert getattr(fast, "_iter", None) == getattr(plain, "_iter", None)  # target schedule
    assert_same_state(plain, fast)


@pytest.fixture(scope="module")
def frames_buffer() -> ReplayBuffer:
    return random_frames_buffer(300)


@pytest.mark.parametrize("name", list(CASES))
def test_fast_step_matches_tianshou(frames_buffer: ReplayBuffer, name: str) -> None:
    torch.set_num_threads(1)
    module, argv = CASES[name]
    compare_steps(build(module, argv), frames_buffer, batch_size=32)


def test_fast_step_with_nature_cnn() -> None:
    """The scripts' own feature net on 84x84 frames (two steps of CRR w/ CQL, both targets)."""
    torch.set_num_threads(1)
    algorithm = build(atari_crr, [*FREQ, "--min-q-weight", "10"], NatureCNN())
    compare_steps(algorithm, random_frames_buffer(60, frame=84), batch_size=8, steps=3)


@pytest.mark.parametrize("name", ["bcq", "crr_cql"])
def test_fast_step_on_flat_observations(name: str) -> None:
    """The same builders on vector observations (the CartPole learning tests): a plain buffer
    with stored obs_next, an MLP feature net."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    size = 200
    terminated = rng.random(size) < 0.1
    truncated = np.zeros(size, dtype=bool)
    truncated[-1] = not terminated[-1]
    buffer = ReplayBuffer.from_data(
        obs=rng.standard_normal((size, 4)).astype(np.float32),
        act=rng.integers(0, NUM_ACTIONS, size),
        rew=rng.standard_normal(size).astype(np.float32),
        terminated=terminated,
        truncated=truncated,
        done=terminated | truncated,
        obs_next=rng.standard_normal((size, 4)).astype(np.float32),
    )
    assert isinstance(device_dataset(buffer, "cpu"), DeviceDataset)
    module, argv = CASES[name]
    algorithm = build(module, argv, Net(state_shape=4, hidden_sizes=[16]))
    compare_steps(algorithm, buffer, batch_size=32)


def test_make_fast_update_for_atari(frames_buffer: ReplayBuffer, capsys) -> None:
    algorithm = build(atari_bcq, [])
    update = make_fast_update(algorithm, frames_buffer, "cpu", compile=False)
    assert update is not None and isinstance(update.dataset, FrameStackDataset)
    values = [update.run_step(16) for _ in range(3)]
    assert algorithm._iter == 3 and all(bool(torch.isfinite(v).all()) for v in values)
    # n-step returns: Tianshou's update, with the one-line reason
    assert make_fast_update(build(atari_cql, ["--n-step", "3"]), frames_buffer, "cpu") is None
    assert "fast DiscreteCQL supports 1-step returns only" in capsys.readouterr().out


@pytest.mark.parametrize(
    "name",
    [
        "il",  # the discrete family's compiled case in the default run
        pytest.param("cql", marks=pytest.mark.slow),
        pytest.param("crr_cql", marks=pytest.mark.slow),
        pytest.param("bcq", marks=pytest.mark.slow),
    ],
)
def test_compiled_step_matches_eager_step(frames_buffer: ReplayBuffer, name: str) -> None:
    # a script compiles one algorithm per process; these tests compile many in one, and would
    # reach Dynamo's limit of cache entries per code object (the step's runner)
    torch._dynamo.reset()
    module, argv = CASES[name]
    algorithm = build(module, argv)
    results = []
    for compile_step in (False, True):
        fast = copy.deepcopy(algorithm)
        update = make_fast_update(fast, frames_buffer, "cpu", compile=compile_step)
        torch.manual_seed(0)
        values = [update.run_step(32) for _ in range(4)]  # both target-update variants
        results.append((fast, torch.stack(values)))
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-4, atol=1e-5)
    assert_same_state(results[0][0], results[1][0])
