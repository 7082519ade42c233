"""Every fault a user can cause ends in ONE line on stderr and exit code 2, and leaves nothing
behind (issue 16): output-side faults (full disk, a file where a directory should be), argument
checks, --watch results, two processes on one run directory, a policy of another task, leaked
temporary files, corrupt input, an unreachable Ray address, and smaller cases.

Each case runs the real command line as a subprocess. A refusal must exit with 2, print exactly
one ``error:`` line (the last line of stderr) that names the problem, print no traceback, and
leave the test's folder exactly as it was: no new file or directory. The full-disk cases use a
small tmpfs (skipped where one cannot be mounted, e.g. without root) and, everywhere, a fault
injected into ``torch.save`` of the training script.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from example_scripts import load_script
from made_data import write_random_hopper

from tianshou_offline.data.atari_buffer import AtariBufferWriter
from tianshou_offline.data.rl_unplugged_writer import Episode, episode_records, write_shard
from tianshou_offline.errors import UserInputError
from tianshou_offline.files import DirectoryLock, atomic_write

REPO = Path(__file__).resolve().parents[1]
OFFLINE = REPO / "examples" / "offline"
ATARI = REPO / "examples" / "atari"
# see test_atari_e2e.py: numba compiling in every new process would dominate these short runs
SCRIPT_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_DISABLE_JIT": "1"}
TINY = ["--epoch", "1", "--epoch-num-steps", "20", "--test-num", "1", "--device", "cpu"]
TINY += ["--hidden-sizes", "16", "16", "--no-progress"]
DEAD_PID = 4_194_305  # above Linux's largest pid_max: no process has it
# a training script with its torch.save failing as on a full disk, for machines without tmpfs
ENOSPC_TORCH_SAVE = (
    "import errno, runpy, sys, torch\n"
    "def full(*args, **kwargs):\n"
    "    raise OSError(errno.ENOSPC, 'No space left on device')\n"
    "torch.save = full\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def run(script: Path | str, *args: str, cwd: Path, env: dict | None = None, timeout=300):
    command = [sys.executable, *(["-c", script] if isinstance(script, str) else [str(script)])]
    return subprocess.run(
        [*command, *map(str, args)],
        cwd=cwd,
        env={**SCRIPT_ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tree(root: Path) -> set[str]:
    """Every file and directory below ``root`` (with file sizes, so a rewrite shows too)."""
    return {
        f"{p.relative_to(root)}:{p.stat().st_size if p.is_file() else 'dir'}"
        for p in root.rglob("*")
    }


def assert_refused(result: subprocess.CompletedProcess, *words: str) -> str:
    """Exit code 2, one ``error:`` line as stderr's last line, containing ``words``."""
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1] == errors[0]
    for word in words:
        assert word in errors[0], errors[0]
    return errors[0]


def refused_leaving_nothing(root: Path, script: Path | str, *args: str, words, **kwargs) -> str:
    """Run the command in ``root``; it must be refused and leave ``root`` as it was."""
    before = tree(root)
    line = assert_refused(run(script, *args, cwd=root, **kwargs), *words)
    assert tree(root) == before, sorted(tree(root) ^ before)
    return line


@pytest.fixture(scope="module")
def hopper(tmp_path_factory) -> Path:
    return write_random_hopper(tmp_path_factory.mktemp("data") / "hopper-made.hdf5", 300)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, hopper) -> Path:
    """A finished tiny TD3+BC run on Hopper-v2 (read only: tests copy it to change it)."""
    folder = tmp_path_factory.mktemp("trained")
    args = ["--task", "Hopper-v2", "--expert-data-task", hopper, *TINY, "--run-dir", "run"]
    result = run(OFFLINE / "d4rl_td3_bc.py", *args, cwd=folder)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder / "run"


def copy_run(trained: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "log" / "Hopper-v2" / "td3_bc" / "0-copy"))


# ------------------------------------------------------------------------------------------
# group 2: arguments, checked before any work
# ------------------------------------------------------------------------------------------

# Each case runs a script in a subprocess (seconds each): the default run keeps one per family;
# the rest run with -m slow (test_every_script_checks_its_arguments_when_parsing covers them
# in-process).
SLOW = pytest.mark.slow
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


@pytest.mark.parametrize(
    "script, args, words",
    [
        ("d4rl_il.py", ["--batch-size", "0"], ["--batch-size 0", "1 or more"]),
        pytest.param(
            *("d4rl_il.py", ["--test-num", "0"], ["--test-num 0", "1 or more"]), marks=SLOW
        ),
        pytest.param(
            "d4rl_il.py", ["--device", "cuda"], ["--device cuda", "no CUDA"], marks=NO_CUDA
        ),
        pytest.param(
            *("d4rl_il.py", ["--device", "nonsense"], ["--device nonsense", "cpu, cuda"]),
            marks=SLOW,
        ),
        pytest.param(*("d4rl_il.py", ["--seed", "-1"], ["--seed -1", "from 0 to"]), marks=SLOW),
        pytest.param(*("d4rl_il.py", ["--epoch", "0"], ["--epoch 0", "1 or more"]), marks=SLOW),
        pytest.param(
            *("d4rl_il.py", ["--epoch-num-steps", "-5"], ["--epoch-num-steps -5", "1 or more"]),
            marks=SLOW,
        ),
        pytest.param(
            *("d4rl_il.py", ["--hidden-sizes", "16", "0"], ["--hidden-sizes 16 0", "1 or more"]),
            marks=SLOW,
        ),
        ("d4rl_td3_bc.py", ["--task", "CartPole-v1"], ["--task CartPole-v1", "continuous"]),
        pytest.param(
            *("d4rl_il.py", ["--run-dir", "a_file"], ["--run-dir a_file is a file"]), marks=SLOW
        ),
        ("atari_il.py", ["--buffer-size-limit", "0"], ["--buffer-size-limit 0", "1 or more"]),
        pytest.param(
            *("atari_qrdqn.py", ["--device", "nonsense"], ["--device nonsense"]), marks=SLOW
        ),
        ("make_d4rl_dataset.py", ["train", "--device", "nonsense"], ["--device nonsense"]),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_bad_argument_names_the_flag_before_any_work(script, args, words, hopper, tmp_path):
    (tmp_path / "a_file").write_text("not a directory")
    folder = ATARI if script == "atari_qrdqn.py" else OFFLINE
    if script.startswith("d4rl_"):
        args = ["--expert-data-task", hopper, *TINY, *args]
    elif script.startswith("atari_"):
        args = ["--device", "cpu", *args]
    line = refused_leaving_nothing(tmp_path, folder / script, *args, words=words)
    assert "max_transitions" not in line  # the user's flag, not an internal parameter


@pytest.mark.parametrize(
    "script, args, message",
    [
        ("d4rl_il", ["--batch-size", "-4"], "--batch-size -4: expected a batch size of 1 or more"),
        ("d4rl_td3_bc", ["--epoch", "-2"], "--epoch -2: expected a number of epochs of 1 or more"),
        ("d4rl_bcq", ["--vae-hidden-sizes", "0"], "--vae-hidden-sizes 0: expected layer widths"),
        ("d4rl_cql", ["--seed", str(2**32)], "--seed 4294967296: expected a seed from 0 to"),
        ("atari_cql", ["--device", "cuda:x"], "--device cuda:x: not a device"),
        ("atari_bcq", ["--max-episode-steps", "0"], "--max-episode-steps 0: expected a number"),
        ("atari_crr", ["--logdir", "a_file/log"], "--logdir a_file/log needs the directory"),
        ("atari_qrdqn", ["--batch-size", "0"], "--batch-size 0: expected a batch size"),
    ],
)
def test_every_script_checks_its_arguments_when_parsing(script, args, message, tmp_path):
    """The same check in-process, for the other scripts and values: parse_args refuses."""
    (tmp_path / "a_file").write_text("not a directory")
    module = load_script(script)
    args = [a.replace("a_file", str(tmp_path / "a_file")) for a in args]
    with pytest.raises(UserInputError) as refused:
        if script == "atari_qrdqn":
            module.get_parser().parse_args(args)
        else:
            module.get_args(args)
    assert str(refused.value).startswith(message.replace("a_file", str(tmp_path / "a_file")))


# ------------------------------------------------------------------------------------------
# group 3: --watch neither breaks the results tables nor replaces a run's summary
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["--run-dir of the run", "the log tree", "old watch summary"])
def test_watch_leaves_runs_and_results_tables_alone(where, trained, tmp_path):
    run_dir = copy_run(trained, tmp_path)
    summary = (run_dir / "summary.json").read_bytes()
    watch = ["--task", "Hopper-v2", *TINY, "--watch", "--resume-path", run_dir / "policy_best.pth"]
    if where == "old watch summary":  # what --watch wrote before watch.json
        old = tmp_path / "log" / "Hopper-v2" / "td3_bc" / "0-watch" / "summary.json"
        old.parent.mkdir()
        old.write_text(json.dumps({"script": "d4rl_td3_bc.py", "args": {}, "watch": {}}))
    else:
        extra = ["--run-dir", run_dir] if where.startswith("--run-dir") else ["--logdir", "log"]
        watched = run(OFFLINE / "d4rl_td3_bc.py", *watch, *extra, cwd=tmp_path)
        assert watched.returncode == 0, watched.stderr[-3000:]
        (written,) = (tmp_path / "log").rglob("watch.json")
        assert "watch" in json.loads(written.read_text())
    assert (run_dir / "summary.json").read_bytes() == summary
    tables = run(OFFLINE / "aggregate_results.py", "log", cwd=tmp_path)
    assert tables.returncode == 0, tables.stderr[-3000:]
    assert "| d4rl_td3_bc | 1 |" in tables.stdout  # the training run, once


# ------------------------------------------------------------------------------------------
# group 4: one process per run directory
# ------------------------------------------------------------------------------------------

HOLD_LOCK = (
    "import sys, time\n"
    "from tianshou_offline.files import DirectoryLock\n"
    "DirectoryLock(sys.argv[1], 'run directory')\n"
    "print('locked', flush=True)\n"
    "time.sleep(300)\n"
)


def start_holding(command: list[str], cwd: Path, ready, stdout=subprocess.PIPE):
    """Start ``command``; return it once ``ready(process)`` says it holds the lock."""
    process = subprocess.Popen(
        command, cwd=cwd, env=SCRIPT_ENV, stdout=stdout, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while not ready(process):
        assert process.poll() is None and time.time() < deadline, "the first process ended"
        time.sleep(0.05)
    return process


@pytest.mark.parametrize(
    "first, second",
    [
        ("training run", "new run"),  # two training runs, as in the issue
        ("lock holder", "new run"),  # the others: a process that only holds the lock
        pytest.param(*("lock holder", "--resume-path"), marks=SLOW),
        pytest.param(*("lock holder", "--watch"), marks=SLOW),
    ],
)
def test_second_process_on_a_run_directory_is_refused(first, second, trained, hopper, tmp_path):
    run_dir = copy_run(trained, tmp_path) if second != "new run" else tmp_path / "run"
    train = [OFFLINE / "d4rl_td3_bc.py", "--task", "Hopper-v2", "--expert-data-task", hopper]
    train += TINY
    if first == "lock holder":
        run_dir.mkdir(exist_ok=True)
        command = [sys.executable, "-c", HOLD_LOCK, str(run_dir)]
        holder = start_holding(command, tmp_path, lambda p: p.stdout.readline())
    else:  # a real training run, long enough to be still running
        command = [sys.executable, *map(str, train), "--run-dir", str(run_dir)]
        command += ["--epoch", "500", "--epoch-num-steps", "50"]
        locked = (run_dir / ".lock").exists
        holder = start_holding(command, tmp_path, lambda p: locked(), stdout=subprocess.DEVNULL)
    try:
        if second == "new run":
            args = [*train, "--run-dir", run_dir]
        elif second == "--resume-path":
            args = [*train, "--epoch", "2", "--resume-path", run_dir]
        else:
            args = [*train, "--watch", "--resume-path", run_dir / "policy_best.pth"]
            args += ["--run-dir", run_dir]
        if first == "lock holder":
            line = refused_leaving_nothing(tmp_path, *args, words=["another process"])
        else:
            line = assert_refused(run(*args, cwd=tmp_path), "another process")
            assert len(list(run_dir.glob("events.out.tfevents.*"))) <= 1  # only the first's
        assert f"(process {holder.pid})" in line and str(run_dir) in line
    finally:
        holder.kill()
        holder.wait()


def test_lock_is_released_by_a_killed_process_and_taken_again_in_process(tmp_path):
    command = [sys.executable, "-c", HOLD_LOCK, str(tmp_path)]
    holder = start_holding(command, tmp_path, lambda p: p.stdout.readline())
    with pytest.raises(UserInputError, match="another process"):
        DirectoryLock(tmp_path)
    holder.kill()  # as kill -9: the kernel drops the lock
    holder.wait()
    first, again = DirectoryLock(tmp_path), DirectoryLock(tmp_path)  # the same process: fine
    again.release()
    assert (tmp_path / ".lock").exists()
    first.release()
    assert not (tmp_path / ".lock").exists()


# ------------------------------------------------------------------------------------------
# group 5: a policy or checkpoint records its task and script
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["watch other task", "watch other script", "resume other task"])
def test_policy_of_another_task_or_script_is_refused(case, trained, hopper, tmp_path):
    run_dir = copy_run(trained, tmp_path)
    script, task = "d4rl_td3_bc.py", "Hopper-v3"  # Hopper-v3: the same shapes as Hopper-v2
    args = ["--expert-data-task", hopper, *TINY]
    if case == "watch other script":
        script, task = "d4rl_il.py", "Hopper-v2"
    if case.startswith("watch"):
        args += ["--watch", "--resume-path", run_dir / "policy_best.pth"]
    else:
        args += ["--epoch", "2", "--resume-path", run_dir]
    words = ["--task Hopper-v2, not Hopper-v3"] if task == "Hopper-v3" else ["d4rl_td3_bc.py"]
    refused_leaving_nothing(tmp_path, OFFLINE / script, "--task", task, *args, words=words)
    assert torch.load(run_dir / "checkpoint.pth", weights_only=False)["task"] == "Hopper-v2"


def test_policy_without_a_task_record_is_accepted(trained, tmp_path):
    payload = torch.load(trained / "policy_best.pth", weights_only=False)
    assert (payload.pop("task"), payload.pop("script")) == ("Hopper-v2", "d4rl_td3_bc.py")
    torch.save(payload, tmp_path / "old_policy.pth")
    args = ["--task", "Hopper-v3", *TINY, "--watch", "--resume-path", "old_policy.pth"]
    result = run(OFFLINE / "d4rl_td3_bc.py", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]


# ------------------------------------------------------------------------------------------
# group 1: output-side faults
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case", ["--run-dir", "--logdir", "--out", "--buffer-dir", "D4RL_DATASET_DIR", "--save-buffer"]
)
def test_a_file_where_a_directory_is_needed(case, trained, hopper, tmp_path):
    (tmp_path / "a_file").write_text("not a directory")
    d4rl = [OFFLINE / "d4rl_il.py", "--task", "Hopper-v2", "--expert-data-task", hopper, *TINY]
    env = None
    if case in ("--run-dir", "--logdir"):
        command = [*d4rl, case, "a_file" if case == "--run-dir" else "a_file/log"]
    elif case == "--out":
        command = [OFFLINE / "aggregate_results.py", trained, "--out", "a_file"]
    elif case == "--buffer-dir":
        command = [OFFLINE / "convert_rl_unplugged_atari.py", "--task", "Breakout"]
        command += ["--dataset-dir", "datasets", "--buffer-dir", "a_file"]
    elif case == "D4RL_DATASET_DIR":
        command = [*d4rl, "--expert-data-task", "hopper-medium-v2"]
        env = {"D4RL_DATASET_DIR": str(tmp_path / "a_file"), "D4RL_URL_BASE": "http://127.0.0.1:1"}
    else:  # checked before the recording, not after it
        command = [ATARI / "atari_qrdqn.py", "--watch", "--resume-path", "missing.pth"]
        command += ["--device", "cpu", "--save-buffer-name", "a_file/expert.hdf5"]
    refused_leaving_nothing(tmp_path, *command, words=["a_file", "is a file", case], env=env)


@pytest.fixture
def full_disk(tmp_path):
    """A 1 MiB tmpfs, ``tmp_path / "full"``, filled up (``leave_free`` frees some of it);
    skipped where none can be mounted."""
    mount = tmp_path / "full"
    mount.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        with pytest.raises(OSError), open(mount / "filler", "wb", buffering=0) as filler:
            while True:
                filler.write(b"\0" * 4096)
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def leave_free(full: Path, kib: int) -> None:
    os.truncate(full / "filler", max(0, os.path.getsize(full / "filler") - kib * 1024))


def atari_source(folder: Path) -> tuple[Path, Path]:
    """A 40-frame buffer file and an RL Unplugged shard of one 40-step episode."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(41, 84, 84), dtype=np.uint8)
    episode = Episode.from_frames(
        frames,
        actions=rng.integers(0, 4, 40),
        rewards=np.zeros(40, np.float32),
        terminal=True,
        episode_id=1,
    )
    shard = folder / "datasets" / "Breakout" / "run_1-00000-of-00100"
    shard.parent.mkdir(parents=True)
    write_shard(shard, list(episode_records(episode, range(40))))
    buffer = folder / "buffer.hdf5"
    with AtariBufferWriter(buffer, num_actions=4, task="BreakoutNoFrameskip-v4", source="t") as w:
        w.append(frames[:40], rng.integers(0, 4, 40), np.zeros(40), *[np.zeros(40, bool)] * 2)
    return shard, buffer


@pytest.mark.parametrize("writer", ["training", "make_d4rl_dataset", "converter", "subset", "md"])
def test_full_disk_is_one_line(writer, full_disk, trained, hopper, tmp_path):
    atari_source(tmp_path)
    (full_disk / "buffers" / "Breakout").mkdir(parents=True)  # the converter makes it first
    # room for the training's TensorBoard file but not its policy; none for results.md
    leave_free(full_disk, 0 if writer == "md" else 16)
    commands = {
        "training": [OFFLINE / "d4rl_td3_bc.py", "--task", "Hopper-v2", "--expert-data-task"]
        + [hopper, *TINY, "--run-dir", "full/run"],
        "make_d4rl_dataset": [OFFLINE / "make_d4rl_dataset.py", "make", "--snapshots"]
        + [OFFLINE / "snapshots" / "hopper", "--levels", "random", "--num-transitions", "2000"]
        + ["--workers", "1", "--num-envs", "1", "--out", "full/data"],
        "converter": [OFFLINE / "convert_rl_unplugged_atari.py", "--task", "Breakout"]
        + ["--dataset-dir", "datasets", "--buffer-dir", "full/buffers", "--num-workers", "0"],
        "subset": [ATARI / "atari_buffer.py", "subset", "buffer.hdf5", "full/sub.hdf5"]
        + ["--size", "30"],
        "md": [OFFLINE / "aggregate_results.py", trained, "--out", "full/results"],
    }
    refused_leaving_nothing(tmp_path, *commands[writer], words=["could not write", "full/"])


def test_full_disk_during_training_injected(hopper, tmp_path):
    """The same as the tmpfs case, where none can be mounted: torch.save fails with ENOSPC."""
    args = ["--task", "Hopper-v2", "--expert-data-task", hopper, *TINY, "--run-dir", "run"]
    refused_leaving_nothing(
        tmp_path,
        ENOSPC_TORCH_SAVE,
        OFFLINE / "d4rl_td3_bc.py",
        *args,
        words=["could not write", "policy_best.pth", "No space left on device"],
    )


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EDQUOT, "Disk quota exceeded"),
        # HDF5's text spans lines and comes without errno; torch's zip writer has no errno
        OSError(
            "Can't write data (file write failed: time = Mon\n, errno = 28, error "
            "message = 'No space left on device')"
        ),  # fmt: skip
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0"),
    ],
    ids=["ENOSPC", "EDQUOT", "h5py", "torch"],
)
def test_atomic_write_reports_a_full_disk_in_one_line(error, tmp_path):
    target = tmp_path / "new" / "deeper" / "file.bin"
    with pytest.raises(UserInputError, match="could not write") as raised:
        with atomic_write(target) as tmp:
            tmp.write_bytes(b"partial")
            raise error
    assert "\n" not in str(raised.value)
    assert list(tmp_path.iterdir()) == []  # no temporary file, no directory made for it


# ------------------------------------------------------------------------------------------
# group 7: temporary files of killed writers are removed by the next writer
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, removed",
    [
        (f".results.md.{DEAD_PID}-abcd1234.tmp", True),  # its writer is gone
        (".results.md.abcd1234.tmp", True),  # the older name without a pid, from before this run
        ("LIVE", False),  # its writer still runs: the test process
        (".results.md.x.abcd1234.tmp", False),  # not a temporary file of results.md
    ],
    ids=["dead writer", "old name", "live writer", "other name"],
)
def test_stale_temporary_files_are_removed_by_the_next_write(name, removed, trained, tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    name = f".results.md.{os.getpid()}-abcd1234.tmp" if name == "LIVE" else name
    (out / name).write_bytes(b"\0" * 1000)
    hour_ago = time.time() - 3600
    os.utime(out / name, (hour_ago, hour_ago))
    result = run(OFFLINE / "aggregate_results.py", trained, "--out", out, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "results.md").is_file()
    assert (out / name).exists() != removed


def test_resume_removes_a_killed_checkpoint_write(trained, hopper, tmp_path):
    run_dir = copy_run(trained, tmp_path)
    stale = run_dir / f".checkpoint.pth.{DEAD_PID}-abcd1234.tmp"
    stale.write_bytes(b"\0" * 1000)
    args = ["--task", "Hopper-v2", "--expert-data-task", hopper, *TINY, "--epoch", "2"]
    result = run(OFFLINE / "d4rl_td3_bc.py", *args, "--resume-path", run_dir, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not stale.exists()
    assert not list(run_dir.glob(".*.tmp")) and not (run_dir / ".lock").exists()


# ------------------------------------------------------------------------------------------
# groups 8 and 6: corrupt input; actions outside the environment's bounds
# ------------------------------------------------------------------------------------------


def d4rl_copy(source: Path, target: Path, **changes) -> Path:
    with h5py.File(source) as file, h5py.File(target, "w") as copy:
        for key in file:
            copy[key] = changes.get(key, file[key][()])
    return target


@pytest.mark.parametrize("case", ["garbage .pkl", "byte-string rewards", "actions x50"])
def test_corrupt_input_is_one_line(case, hopper, tmp_path):
    if case == "garbage .pkl":
        (tmp_path / "buffer.pkl").write_text("I1x\n.garbage")
        command = [OFFLINE / "atari_il.py", "--device", "cpu", "--test-num", "1"]
        command += ["--load-buffer-name", "buffer.pkl"]
        words = ["buffer.pkl", "not a readable pickle"]
    else:
        with h5py.File(hopper) as file:
            rewards, actions = file["rewards"][()], file["actions"][()]
        if case == "byte-string rewards":
            bad = d4rl_copy(hopper, tmp_path / "bad.hdf5", rewards=rewards.astype("S8"))
            words = ["'rewards'", "not numbers"]
        else:
            bad = d4rl_copy(hopper, tmp_path / "bad.hdf5", actions=actions * 50)
            words = ["outside the action bounds", "300 of 300 transitions"]
        command = [OFFLINE / "d4rl_il.py", "--task", "Hopper-v2", *TINY]
        command += ["--expert-data-task", bad]
    refused_leaving_nothing(tmp_path, *command, words=words)


# ------------------------------------------------------------------------------------------
# groups 9, 10 and 11: sweep address, smaller cases, the converter's help
# ------------------------------------------------------------------------------------------


def test_sweep_to_an_address_where_nothing_listens_fails_at_once(hopper, tmp_path):
    started = time.time()
    args = ["--scripts", "d4rl_il", "--datasets", hopper, "--seeds", "0"]
    args += ["--sweep-dir", "sweep", "--address", "127.0.0.1:1"]
    refused_leaving_nothing(
        tmp_path, OFFLINE / "sweep.py", *args, words=["no Ray cluster at --address 127.0.0.1:1"]
    )
    assert time.time() - started < 120  # Ray's own retries take many minutes


@pytest.mark.parametrize(
    "case", ["export without index", "dataset is a directory", "missing dataset", "subset X X"]
)
def test_smaller_cases(case, hopper, tmp_path):
    (tmp_path / "folder").mkdir()
    if case == "export without index":
        command = [OFFLINE / "make_d4rl_dataset.py", "export", "--run-dir", "folder"]
        command += ["--out", "exported"]
        words = ["pass --run-dir"]
    elif case == "dataset is a directory":
        command = [OFFLINE / "d4rl_il.py", "--task", "Hopper-v2", *TINY]
        command += ["--expert-data-task", "folder"]
        words = ["folder is a directory"]
    elif case == "missing dataset":  # refused before a run directory is made
        command = [OFFLINE / "d4rl_il.py", "--task", "Hopper-v2", *TINY]
        command += ["--expert-data-task", "missing.hdf5"]
        words = ["missing.hdf5 not found"]
    else:
        _, buffer = atari_source(tmp_path)
        command = [ATARI / "atari_buffer.py", "subset", buffer, "./buffer.hdf5", "--size", "3"]
        words = ["the source file itself"]
    line = refused_leaving_nothing(tmp_path, *command, words=words)
    assert "--snapshots" not in line


def test_sweep_keeps_non_ascii_letters_in_run_directories(hopper, tmp_path):
    for name in ("hopper-мой датасет.hdf5", "hopper-другой.hdf5"):
        shutil.copy(hopper, tmp_path / name)
    args = ["--scripts", "d4rl_il", "--seeds", "0", "--sweep-dir", "sweep", "--dry-run"]
    args += ["--datasets", tmp_path / "hopper-мой датасет.hdf5", tmp_path / "hopper-другой.hdf5"]
    result = run(OFFLINE / "sweep.py", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sweep/hopper-мой_датасет/d4rl_il/seed0" in result.stdout
    assert "sweep/hopper-другой/d4rl_il/seed0" in result.stdout


def test_converter_help_says_what_a_shard_starting_mid_episode_loses(tmp_path):
    result = run(OFFLINE / "convert_rl_unplugged_atari.py", "--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "starts in the middle of an episode" in " ".join(result.stdout.split())
