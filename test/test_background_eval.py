"""--eval-in-background: the same history and best policy as evaluating in-process, a resume that
finishes the evaluations a checkpoint was still waiting for, no worker left behind, and worker
errors that reach the training process.

The runs are TD3+BC on conftest.py's random Hopper data with tiny networks (a second or two each);
its evaluation policy is deterministic, so on the CPU the two modes must agree exactly.
"""

from __future__ import annotations

import itertools
import multiprocessing
from functools import partial
from pathlib import Path
from unittest import mock

import gymnasium as gym
import pytest
import torch
from example_scripts import load_script
from tianshou.algorithm.modelfree.ddpg import ContinuousDeterministicPolicy
from tianshou.utils.net.common import Net
from tianshou.utils.net.continuous import ContinuousActorDeterministic

from tianshou_offline.errors import UserInputError
from tianshou_offline.run import training
from tianshou_offline.run.background_eval import BackgroundEvaluator
from tianshou_offline.run.d4rl import make_eval_envs
from tianshou_offline.run.evaluation import EvalSetup
from tianshou_offline.run.training import OfflineRun

d4rl_td3_bc = load_script("d4rl_td3_bc")

TINY = ["--task", "Hopper-v2", "--hidden-sizes", "32", "32", "--test-num", "2", "--no-progress"]
# Seed 0 on random_hopper: the best evaluation is epoch 2's, not the last, so policy_best.pth must
# come from a snapshot (epoch 3's parameters are current when epoch 2's result arrives).
RUN = ["--epoch", "3", "--epoch-num-steps", "40", "--seed", "0"]


class Interrupted(Exception):
    """Stands in for whatever stops a run (a crash, a kill) right after a checkpoint."""


def argv_for(random_hopper: Path, run_dir: Path) -> list[str]:
    return TINY + RUN + ["--expert-data-task", str(random_hopper), "--run-dir", str(run_dir)]


def children_left(before: list[multiprocessing.process.BaseProcess]) -> list:
    """The child processes started since ``before`` that are still alive: a pytest worker may
    still be reaping other tests' environment processes, which are not this run's."""
    return [p for p in multiprocessing.active_children() if p not in before]


def tensors_of(path: Path) -> dict[str, torch.Tensor]:
    payload = torch.load(path, weights_only=False)
    return {k: v for k, v in payload["algorithm"].items() if isinstance(v, torch.Tensor)}


def assert_same_tensors(path: Path, reference: Path) -> None:
    expected, actual = tensors_of(reference), tensors_of(path)
    assert expected.keys() == actual.keys()
    for key, value in expected.items():
        assert torch.equal(actual[key], value), key


@pytest.fixture(scope="module")
def in_process(random_hopper: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The reference: the same run evaluating in the training process."""
    run_dir = tmp_path_factory.mktemp("in_process")
    return d4rl_td3_bc.main(argv_for(random_hopper, run_dir))


def test_same_history_and_best_policy_as_evaluating_in_process(
    in_process: dict, random_hopper: Path, tmp_path: Path
) -> None:
    before = multiprocessing.active_children()
    background = d4rl_td3_bc.main(argv_for(random_hopper, tmp_path) + ["--eval-in-background"])
    assert children_left(before) == []  # the worker ended with the run

    assert [h["gradient_step"] for h in background["history"]] == [0, 40, 80, 120]
    assert background["history"] == in_process["history"]
    assert background["best"] == in_process["best"]
    assert background["final"] == in_process["final"]
    best_epoch = background["history"].index(background["best"])
    assert 0 < best_epoch < 3, "the case this run was chosen for: the best is not the last"
    reference = Path(in_process["log_path"])
    assert_same_tensors(tmp_path / "policy_best.pth", reference / "policy_best.pth")
    assert_same_tensors(tmp_path / "policy_last.pth", reference / "policy_last.pth")


def test_resume_evaluates_what_the_checkpoint_was_waiting_for(
    in_process: dict, random_hopper: Path, tmp_path: Path
) -> None:
    argv = argv_for(random_hopper, tmp_path) + ["--eval-in-background"]
    save_checkpoint = OfflineRun._save_checkpoint
    before = multiprocessing.active_children()

    def save_then_stop_after_epoch_2(run: OfflineRun, epoch: int, *steps: int) -> str:
        path = save_checkpoint(run, epoch, *steps)
        if epoch == 2:
            raise Interrupted
        return path

    # No result is read before the interruption: the checkpoint then holds the snapshots of
    # epochs 0 and 1 (epoch 2's parameters are the checkpoint's own), whatever the timing.
    with (
        mock.patch.object(BackgroundEvaluator, "finished_results", return_value=[]),
        mock.patch.object(OfflineRun, "_save_checkpoint", save_then_stop_after_epoch_2),
        pytest.raises(Interrupted),
    ):
        d4rl_td3_bc.main(argv)
    assert children_left(before) == []  # the worker ended with the failed run
    checkpoint = torch.load(tmp_path / "checkpoint.pth", weights_only=False)
    assert checkpoint["epoch"] == 2 and checkpoint["history"] == []
    assert [p["epoch"] for p in checkpoint["pending_evaluations"]] == [0, 1]

    with pytest.raises(UserInputError, match="resume it with --eval-in-background"):
        d4rl_td3_bc.main(argv_for(random_hopper, tmp_path) + ["--resume-path", str(tmp_path)])

    resumed = d4rl_td3_bc.main(argv + ["--resume-path", str(tmp_path)])
    assert resumed["history"] == in_process["history"]
    assert resumed["final"] == in_process["final"]
    reference = Path(in_process["log_path"])
    assert_same_tensors(tmp_path / "policy_best.pth", reference / "policy_best.pth")
    assert children_left(before) == []


@pytest.mark.parametrize("error", [RuntimeError("a bug in training"), KeyboardInterrupt()])
def test_no_worker_outlives_a_run_stopped_by_an_error(
    error: BaseException, random_hopper: Path, tmp_path: Path
) -> None:
    training_step = training._ProgressOfflineTrainer._training_step
    calls = itertools.count(1)
    workers_at_failure = []
    before = multiprocessing.active_children()

    def fail_in_epoch_2(trainer: training._ProgressOfflineTrainer):
        if next(calls) == 50:
            workers_at_failure.extend(children_left(before))
            raise error
        return training_step(trainer)

    argv = argv_for(random_hopper, tmp_path) + ["--eval-in-background"]
    with (
        mock.patch.object(training._ProgressOfflineTrainer, "_training_step", fail_in_epoch_2),
        pytest.raises(type(error)),
    ):
        d4rl_td3_bc.main(argv)
    assert len(workers_at_failure) == 1
    assert children_left(before) == []
    assert not workers_at_failure[0].is_alive()


def tiny_hopper_policy() -> ContinuousDeterministicPolicy:
    env = gym.make("Hopper-v5")
    actor = ContinuousActorDeterministic(
        preprocess_net=Net(state_shape=11, hidden_sizes=[8]), action_shape=3, max_action=1.0
    )
    return ContinuousDeterministicPolicy(actor=actor, action_space=env.action_space)


@pytest.mark.parametrize(
    "make_envs, error, message",
    [
        # bad input found by the worker: the same one line as in the training process
        (partial(make_eval_envs, "NoSuchTask-v2", 1, None), UserInputError, "NoSuchTask-v2"),
        # a bug: the worker's traceback
        (
            partial(make_eval_envs, "Hopper-v2", 1, "not observation statistics"),
            RuntimeError,
            r"(?s)background evaluation failed:\nTraceback.*AttributeError",
        ),
    ],
    ids=["bad-input", "bug"],
)
def test_worker_errors_reach_the_training_process(make_envs, error, message) -> None:
    policy = tiny_hopper_policy()
    before = multiprocessing.active_children()
    with BackgroundEvaluator(policy, EvalSetup(make_envs=make_envs, seed=0), 1) as evaluator:
        evaluator.submit(0, 0, policy.state_dict())
        with pytest.raises(error, match=message):
            evaluator.remaining_results()
    assert children_left(before) == []
