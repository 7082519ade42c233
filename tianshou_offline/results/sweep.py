"""Run a grid of offline scripts (scripts x datasets x seeds) with Ray, then print the results.

    python examples/offline/sweep.py --scripts d4rl_td3_bc d4rl_cql \\
        --datasets examples/offline/data/hopper-made-medium.hdf5 halfcheetah-medium-v2 \\
        --seeds 0 1 2 --epoch 20

Every argument the sweep does not know is passed through to every script (``--epoch 20``
above, ``--hidden-sizes 64 64``, ``--device cpu``, ...).

Scheduling: each run is a Ray task that starts the script as a subprocess, its output going to
``run.log`` in the run's directory, so a crashing run cannot take a Ray worker down with it. By
default a local Ray instance is started on this machine's cores and GPUs; ``--address`` joins
an existing cluster instead (its nodes need this checkout and the data at the same paths, and
``--sweep-dir`` on a shared filesystem). A small offline run leaves a GPU mostly idle, so on a
GPU several runs share it (``--gpus-per-run 0.25``: four at a time); on CPU each run gets
``--cpus-per-run`` cores (2 by default) and as many BLAS/OpenMP threads.

Every grid point has a fixed directory, ``<sweep-dir>/<dataset>/<script>/seed<k>/`` (passed as
``--run-dir``), so the sweep can be interrupted and rerun with the same command: runs with a
``summary.json`` are skipped, and runs that stopped half-way continue from their
``checkpoint.pth``. The directory says nothing about the passed-through arguments: use a new
``--sweep-dir`` when you change them. Failed runs do not stop the others; they are listed at the
end with their log file, and the exit code is then 1.

The dataset's environment (``--task``) is taken from D4RL-style file names ("hopper-...",
"halfcheetah-medium-v2" -> Hopper-v2, HalfCheetah-v2); write ``TASK=DATASET`` to give it
explicitly, or pass ``--task`` through to use one task for all datasets.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tianshou_offline.errors import UserInputError
from tianshou_offline.results.aggregate import format_tables, load_runs
from tianshou_offline.run.summary import SUMMARY_NAME

LOG_NAME = "run.log"
D4RL_DATA, ATARI_DATA = "--expert-data-task", "--load-buffer-name"
# The scripts the sweep runs, by name, with the option through which each takes its data.
SCRIPTS = {
    "d4rl_il": D4RL_DATA,
    "d4rl_bcq": D4RL_DATA,
    "d4rl_cql": D4RL_DATA,
    "d4rl_td3_bc": D4RL_DATA,
    "d4rl_iql": D4RL_DATA,
    "d4rl_rebrac": D4RL_DATA,
    "atari_il": ATARI_DATA,
    "atari_bcq": ATARI_DATA,
    "atari_cql": ATARI_DATA,
    "atari_crr": ATARI_DATA,
}
# options the sweep sets for every run itself
RESERVED_OPTIONS = (
    "--seed",
    "--run-dir",
    "--resume-path",
    "--logdir",
    "--watch",
    D4RL_DATA,
    ATARI_DATA,
)


@dataclass(frozen=True)
class GridPoint:
    """One run of the grid and where its files go."""

    script: Path
    dataset: str  # as the script takes it (a path made absolute, or a name)
    task: str | None  # --task for the script, None to leave the script's default
    seed: int
    run_dir: Path

    @property
    def label(self) -> str:
        return f"{self.script.stem} {self.run_dir.parent.parent.name} seed {self.seed}"

    @property
    def summary(self) -> Path:
        return self.run_dir / SUMMARY_NAME

    @property
    def log_file(self) -> Path:
        return self.run_dir / LOG_NAME

    def command(self, extra_args: list[str]) -> list[str]:
        command = [sys.executable, str(self.script), SCRIPTS[self.script.stem], self.dataset]
        if self.task is not None:
            command += ["--task", self.task]
        command += ["--seed", str(self.seed), "--run-dir", str(self.run_dir), "--no-progress"]
        if (self.run_dir / "checkpoint.pth").is_file():  # interrupted earlier: continue it
            command += ["--resume-path", str(self.run_dir)]
        return command + extra_args


# ----------------------------------------------------------------------------------------------
# The grid
# ----------------------------------------------------------------------------------------------


def resolve_script(name: str, scripts_dir: Path) -> Path:
    """ "d4rl_cql", "d4rl_cql.py" (in ``scripts_dir``) or a path to a copy of one of SCRIPTS
    (same file name) -> the script's absolute path."""
    path = Path(name).expanduser()
    stem = path.name.removesuffix(".py")
    if stem not in SCRIPTS:
        raise UserInputError(
            f"no script {name!r} in the sweep's table; choose from {', '.join(SCRIPTS)}"
        )
    if path.suffix != ".py" or not path.is_file():
        path = scripts_dir / f"{stem}.py"
    if not path.is_file():
        raise UserInputError(f"no script {stem}.py in {scripts_dir}: give its path")
    return path.resolve()


def d4rl_task_of(dataset: str) -> str | None:
    """D4RL's task for a D4RL-style dataset name: "hopper-made-medium.hdf5" -> "Hopper-v2"."""
    from tianshou_offline.data.d4rl import gym_task_id, normalized_score

    env_key = Path(dataset.removeprefix("minari:")).name.lower().split("-")[0]
    if normalized_score(env_key, 0.0) is None:  # not one of D4RL's environments
        return None
    gym_name = gym_task_id(f"{env_key}-v2").split("-")[0]  # "hopper" -> "Hopper-v5" -> "Hopper"
    # the -v2 name, not -v5: make_env gives it D4RL's observation layout (Ant, Walker2d)
    return f"{gym_name}-v2"


def slug(text: str) -> str:
    # \w: letters and digits of every script ("hopper-мой датасет" keeps its letters), so that
    # two datasets whose names differ only in non-ASCII letters do not share a directory
    return re.sub(r"[^\w.-]+", "_", text).strip("_") or "dataset"


def parse_dataset(spec: str, task_passed_through: bool) -> tuple[str, str | None, str]:
    """``[TASK=]DATASET`` -> (dataset as the script takes it, task or None, directory name)."""
    task, _, dataset = spec.rpartition("=")
    path = Path(dataset).expanduser()
    if path.exists():  # a file: absolute, since the runs do not share our working directory
        dataset = str(path.resolve())
        name = path.name.removesuffix(".hdf5").removesuffix(".h5")
    elif dataset.endswith((".hdf5", ".h5")):
        raise UserInputError(f"dataset file {dataset} not found")
    else:  # a D4RL name (downloaded by the script) or minari:<id>
        name = dataset.removeprefix("minari:")
    if not task and not task_passed_through:
        task = d4rl_task_of(dataset)
    return dataset, task or None, slug(f"{task}_{name}" if "=" in spec else name)


def make_grid(
    scripts: list[str],
    datasets: list[str],
    seeds: list[int],
    sweep_dir: Path,
    extra_args: list[str],
    scripts_dir: Path | None = None,
) -> list[GridPoint]:
    """All runs, seed by seed, so that a sweep stopped early has every algorithm on every
    dataset for its first seeds."""
    for option in RESERVED_OPTIONS:
        if any(arg == option or arg.startswith(option + "=") for arg in extra_args):
            raise UserInputError(f"{option} is set by the sweep for each run; leave it out")
    task_passed_through = any(a == "--task" or a.startswith("--task=") for a in extra_args)
    scripts_dir = Path.cwd() if scripts_dir is None else scripts_dir
    script_paths = [resolve_script(s, scripts_dir) for s in dict.fromkeys(scripts)]
    parsed = [parse_dataset(d, task_passed_through) for d in dict.fromkeys(datasets)]
    names = [name for _, _, name in parsed]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UserInputError(
            f"two datasets would share the run directory {duplicates[0]!r}: rename one file"
        )
    return [
        GridPoint(script, dataset, task, seed, sweep_dir / name / script.stem / f"seed{seed}")
        for seed in dict.fromkeys(seeds)
        for dataset, task, name in parsed
        for script in script_paths
    ]


# ----------------------------------------------------------------------------------------------
# Running with Ray
# ----------------------------------------------------------------------------------------------


def execute(command: list[str], log_file: str, threads: int) -> tuple[int, float]:
    """Ray task: run ``command`` as a subprocess, output appended to ``log_file``.

    Returns (exit code, seconds). If the sweep is cancelled (Ray raises KeyboardInterrupt
    here), the subprocess is stopped too; its last checkpoint lets the next sweep continue it.
    """
    # BLAS/OpenMP would otherwise start one thread per core of the node in every run
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    started = time.time()
    with open(log_file, "a") as log:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log.write(f"### {stamp} on {socket.gethostname()}: {shlex.join(command)}\n")
        log.flush()
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            return_code = process.wait()
        except BaseException:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
            raise
    return return_code, time.time() - started


def connect_ray(address: str | None, num_cpus: int | None) -> None:
    """Join ``address``, or start a local instance (unless the caller has one already)."""
    import ray

    if ray.is_initialized():
        return
    if address:
        _check_reachable(address)
        try:
            ray.init(address=address, logging_level="WARNING")
        except ConnectionError as err:
            raise UserInputError(
                f"no Ray cluster at --address {address} ({err}); start one with "
                "'ray start --head', or leave --address out to run on this machine"
            ) from err
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level="WARNING")


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail within seconds where nothing listens at ``address`` (host:port or ray://host:port);
    Ray itself retries for minutes. "auto" and addresses without a port are left to Ray."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit() or not host:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as err:
        raise UserInputError(
            f"no Ray cluster at --address {address} ({err.strerror or err}); start one with "
            "'ray start --head', or leave --address out to run on this machine"
        ) from err


def run_grid(
    grid: list[GridPoint],
    extra_args: list[str],
    *,
    cpus_per_run: float = 2,
    gpus_per_run: float | None = None,
) -> tuple[list[GridPoint], list[GridPoint], list[GridPoint]]:
    """Run the grid points without a summary on the connected Ray instance.

    ``gpus_per_run`` None: 0.25 where the cluster has GPUs, else 0. Returns (skipped because
    finished before, finished now, failed) and prints a line per finished run.
    """
    import ray

    skipped = [point for point in grid if point.summary.is_file()]
    todo = [point for point in grid if not point.summary.is_file()]
    if gpus_per_run is None:
        gpus_per_run = 0.25 if ray.cluster_resources().get("GPU", 0) > 0 else 0
    print(
        f"sweep: {len(grid)} runs, {len(skipped)} finished before, {len(todo)} to run "
        f"({cpus_per_run:g} CPUs{f' and {gpus_per_run:g} GPU' if gpus_per_run else ''} each)",
        flush=True,
    )
    task = ray.remote(execute).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run)
    threads = max(1, int(cpus_per_run))
    pending = {}
    for point in todo:
        point.run_dir.mkdir(parents=True, exist_ok=True)
        ref = task.remote(point.command(extra_args), str(point.log_file), threads)
        pending[ref] = point
    finished, failed = [], []
    try:
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            point = pending.pop(ref)
            try:
                return_code, seconds = ray.get(ref)
                problem = f"exit code {return_code}" if return_code != 0 else None
            except ray.exceptions.RayError as err:  # the worker or node died, ...
                problem, seconds = f"{type(err).__name__}: {str(err).strip().splitlines()[-1]}", 0.0
            if problem is None and not point.summary.is_file():
                problem = f"no {SUMMARY_NAME} written"
            done = len(finished) + len(failed) + 1
            if problem is None:
                finished.append(point)
                outcome = f"done in {seconds / 60:.1f} min"
            else:
                failed.append(point)
                outcome = f"FAILED ({problem}), see {point.log_file}"
            print(f"[{done}/{len(todo)}] {point.label}: {outcome}", flush=True)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref)  # stops the subprocesses; their checkpoints stay
        print("sweep interrupted: rerun the same command to continue", file=sys.stderr)
        raise
    return skipped, finished, failed


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def get_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        # no abbreviations: "--seed" must not be taken for "--seeds", and so on
        allow_abbrev=False,
        epilog="Other arguments are passed to every script.",
    )
    parser.add_argument("--scripts", nargs="+", required=True, help="e.g. d4rl_td3_bc d4rl_cql")
    parser.add_argument(
        "--datasets",
        nargs="+",
        required=True,
        help="[TASK=]DATASET: a file, D4RL name, minari:<id>",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sweep-dir", default="log/sweep", help="where the runs' directories go")
    parser.add_argument(
        "--address", default=None, help="an existing Ray cluster (ray://... or auto)"
    )
    parser.add_argument("--num-cpus", type=int, default=None, help="local Ray: cores to use")
    parser.add_argument("--cpus-per-run", type=float, default=2)
    parser.add_argument(
        "--gpus-per-run", type=float, default=None, help="default 0.25 with GPUs, else 0"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args, extra_args = parser.parse_known_args(argv)
    if extra_args[:1] == ["--"]:
        extra_args = extra_args[1:]
    return args, extra_args


def main(argv: list[str] | None = None, scripts_dir: Path | None = None) -> int:
    """``scripts_dir``: where the scripts named in --scripts are (examples/offline/sweep.py
    passes its own folder; default: the working directory)."""
    args, extra_args = get_args(argv)
    sweep_dir = Path(args.sweep_dir).expanduser().resolve()
    grid = make_grid(args.scripts, args.datasets, args.seeds, sweep_dir, extra_args, scripts_dir)
    if args.dry_run:
        for point in grid:
            done = "  # finished" if point.summary.is_file() else ""
            print(shlex.join(point.command(extra_args)) + done)
        return 0

    started = time.time()
    if all(point.summary.is_file() for point in grid):  # nothing to run: no Ray to start
        skipped, finished, failed = grid, [], []
        print(f"sweep: {len(grid)} runs, all finished before", flush=True)
    else:
        connect_ray(args.address, args.num_cpus)
        skipped, finished, failed = run_grid(
            grid, extra_args, cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run
        )
    print(
        f"sweep finished in {(time.time() - started) / 60:.1f} min: {len(finished)} runs now, "
        f"{len(skipped)} before, {len(failed)} failed"
    )
    runs = load_runs([p.run_dir for p in grid if p.summary.is_file()])
    if runs:
        print(f"\nresults ({sweep_dir}; more with aggregate_results.py {args.sweep_dir}):\n")
        print(format_tables(runs))
    if failed:
        print(f"\n{len(failed)} failed runs:", file=sys.stderr)
        for point in failed:
            print(f"  {point.label}: {point.log_file}", file=sys.stderr)
        return 1
    return 0
