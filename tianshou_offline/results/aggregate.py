"""Results tables and learning curves from the runs of the offline scripts.

    python examples/offline/aggregate_results.py log/sweep --out examples/offline/results

reads every run below the given directories (each run directory holds the ``summary.json`` that
``training.OfflineRun.evaluate`` writes, and its TensorBoard events), groups the runs by dataset
and script, and writes

* ``results.md``: one Markdown table per dataset family (the environment: Hopper, HalfCheetah,
  ...), with the mean ± standard deviation over seeds of the LAST evaluation (the final one,
  after training) and, separately, of the BEST evaluation during training (the best epoch by mean
  return: an optimistic number, since it picks the epoch with the test episodes themselves), both
  as raw return and as D4RL normalized score; the number of seeds; gradient steps; and gradient
  updates per second (from TensorBoard's update timing, evaluation excluded);
* ``<family>_<dataset>.png``: the evaluations during training, mean over seeds with a band of
  ± one standard deviation, one line per script.

Runs of one script on one dataset that differ in an option of ``VARIANT_ARGS`` (``--norm-obs``,
``--min-q-weight``, CQL's ``--cql-weight``, ``--with-lagrange`` and ``--tianshou-2.0.1-maths``) are
separate rows, labelled with that option ("d4rl_td3_bc --norm-obs 0").
``--references FILE`` adds published figures as columns, per dataset level and script
(``load_references``), and ``--keep-runs`` copies each run's ``summary.json`` (with its update
speed) below ``--out``, so that the tables and plots can be made again from committed files
without the runs' logs. Runs of one sweep can serve several tables: name the dataset or script
folders to aggregate.

``--layout atari`` writes Tianshou's Atari tables instead (``format_atari_tables``): per game, a
row per buffer and a column per algorithm, beside the online expert (``--expert-run``) and the
behaviour policy's returns in each buffer (``--buffers``); see "Tianshou's Atari tables" below.

The standard deviation is the SAMPLE standard deviation over seeds (n - 1 in the denominator,
``numpy.std(ddof=1)``); with one seed there is none and only the mean is shown.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tianshou_offline.errors import UserInputError
from tianshou_offline.files import atomic_write, check_directory
from tianshou_offline.run.summary import SUMMARY_NAME

TABLE_NAME = "results.md"
KEPT_RUNS_DIR = "runs"  # below --out: the summaries --keep-runs copies
# options whose values make separate rows when the runs of one script on one dataset differ:
# TD3+BC with and without observation normalisation; atari_crr without and with CQL's penalty;
# CQL's settings and Tianshou 2.0.1's maths beside the corrected defaults
VARIANT_ARGS = ("tianshou_maths", "with_lagrange", "cql_weight", "norm_obs", "min_q_weight")
FLAG_NAMES = {"tianshou_maths": "tianshou-2.0.1-maths"}  # where the option is not the dest's name
# TensorBoard scalars Tianshou's trainer logs once per epoch
UPDATE_STEP_TAG = "info/update_step"  # gradient steps so far
UPDATE_TIME_TAG = "info/timing/train_time_update"  # seconds spent in updates by this process


@dataclass
class Evaluation:
    return_mean: float
    normalized_score: float | None


@dataclass
class Run:
    """What the tables and plots need from one run directory."""

    directory: Path
    algorithm: str  # the script's name, e.g. "d4rl_td3_bc"
    family: str  # the environment, e.g. "Hopper"
    dataset: str  # the data's name, e.g. "hopper-made-medium"
    seed: int
    gradient_steps: int
    last: Evaluation
    best: Evaluation
    history: list[dict[str, Any]]  # per epoch: gradient_step, return_mean, normalized_score
    updates_per_second: float | None
    args: dict[str, Any]  # the script's parsed arguments


# ----------------------------------------------------------------------------------------------
# Reading runs
# ----------------------------------------------------------------------------------------------


def _file_name(path: str | Path) -> str:
    """A data file's short name: without folder and suffix ("log/.../expert.hdf5" -> "expert")."""
    return Path(str(path)).name.removesuffix(".hdf5").removesuffix(".h5")


def _data_name(args: dict[str, Any]) -> str:
    """The dataset a run trained on, as a short name (file names without folder and suffix)."""
    data = args.get("expert_data_task") or args.get("load_buffer_name") or "?"
    names = data if isinstance(data, list) else [data]
    return "+".join(_file_name(n) for n in names)


def _family(task: str) -> str:
    """The environment a task names: "HalfCheetah-v2" -> "HalfCheetah"; Atari's
    "PongNoFrameskip-v4" and "ALE/Pong-v5" -> "Pong", the game."""
    name = task.split("/")[-1].split("-")[0]
    return name.removesuffix("NoFrameskip").removesuffix("Deterministic")


def read_summary(path: Path) -> Run:
    try:
        summary = json.loads(path.read_text())
        args = summary["args"]
        final, best = summary["final"], summary.get("best", {})
        run = Run(
            directory=path.parent,
            algorithm=Path(summary["script"]).stem,
            family=_family(str(args["task"])),
            dataset=_data_name(args),
            seed=int(args["seed"]),
            gradient_steps=int(summary["gradient_steps"]),
            last=Evaluation(final["return_mean"], final["normalized_score_mean"]),
            # a run without evaluations during training: its final evaluation is its best
            best=Evaluation(
                best.get("return_mean", final["return_mean"]),
                best.get("normalized_score", final["normalized_score_mean"]),
            ),
            history=summary["history"],
            updates_per_second=None,
            args=args,
        )
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserInputError(
            f"{path} is not a summary written by the offline scripts ({type(err).__name__}: "
            f"{err}); remove it or rerun that run"
        ) from err
    # measured from TensorBoard's events; a kept summary (no events) carries the measurement
    run.updates_per_second = read_update_speed(path.parent) or summary.get("updates_per_second")
    return run


def read_update_speed(run_dir: Path) -> float | None:
    """Gradient updates per second from the run's TensorBoard events, or None without them.

    A resumed run has one event file per process, each timing only its own updates; the steps
    of a file are those after the previous file's last step.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    total_steps, total_seconds, previous_steps = 0.0, 0.0, 0.0
    for events in sorted(run_dir.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        tags = accumulator.Tags()["scalars"]
        if UPDATE_STEP_TAG not in tags or UPDATE_TIME_TAG not in tags:
            continue
        steps = accumulator.Scalars(UPDATE_STEP_TAG)[-1].value
        total_steps += steps - previous_steps
        total_seconds += accumulator.Scalars(UPDATE_TIME_TAG)[-1].value
        previous_steps = steps
    return total_steps / total_seconds if total_seconds > 0 else None


def _is_watch_summary(path: Path) -> bool:
    """A summary.json that ``--watch`` wrote before watches got their own watch.json: an
    evaluation of a saved policy, not a training run."""
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and "watch" in summary and "final" not in summary


def load_runs(paths: list[Path] | list[str]) -> list[Run]:
    """Every run below ``paths`` (run directories or folders above them), in a fixed order.
    Evaluations by ``--watch`` are not runs: skipped (watch.json, or an old watch summary)."""
    summaries: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise UserInputError(f"{path} does not exist: give a sweep or log directory")
        summaries += [path] if path.is_file() else sorted(path.rglob(SUMMARY_NAME))
    runs = [read_summary(p) for p in dict.fromkeys(summaries) if not _is_watch_summary(p)]
    label_variants(runs)
    return sorted(runs, key=lambda r: (r.family, r.dataset, r.algorithm, r.seed))


def _option_text(value: Any) -> str:
    """An option's value as one would type it: 10.0 -> "10", 0.5 -> "0.5", 1 -> "1"."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _option_label(arg: str, value: Any) -> str:
    """The option as typed: "--norm-obs 0"; a switch only when on ("--with-lagrange", or
    nothing)."""
    flag = "--" + FLAG_NAMES.get(arg, arg.replace("_", "-"))
    if isinstance(value, bool):
        return flag if value else ""
    return f"{flag} {_option_text(value)}"


def label_variants(runs: list[Run]) -> None:
    """Where the runs of one script on one dataset differ in an option of ``VARIANT_ARGS``,
    add that option to each run's label: "d4rl_td3_bc --norm-obs 0" and "... --norm-obs 1",
    "atari_crr --min-q-weight 0" and "atari_crr --min-q-weight 10", "d4rl_cql --cql-weight 10"
    and "d4rl_cql --with-lagrange --cql-weight 1" (a switch is named only where it is on)."""
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.family, run.dataset, run.algorithm), []).append(run)
    for members in groups.values():
        for arg in VARIANT_ARGS:
            if len({_option_text(run.args.get(arg)) for run in members}) > 1:
                for run in members:
                    label = _option_label(arg, run.args.get(arg))
                    run.algorithm += f" {label}" if label else ""


def _kept_name(run: Run) -> Path:
    """Where --keep-runs keeps a run below ``runs/``: ``<sweep>/<dataset>/<script>/<seed>``, the
    last four parts of its directory, which name it in a sweep; the online expert's directory
    can be anywhere (the committed one is in the repository), so it goes to a fixed place."""
    if _script(run.algorithm) == EXPERT_SCRIPT:
        return Path(EXPERT_KEPT_DIR, str(run.args.get("task", run.family)), f"seed{run.seed}")
    return Path(*run.directory.resolve().parts[-4:])


def keep_runs(runs: list[Run], out_dir: Path) -> list[Path]:
    """Copy each run's summary, with its update speed, to ``out_dir/runs/<sweep>/<dataset>/
    <script>/<seed>/summary.json`` (``_kept_name``): what the tables and plots are made from
    again."""
    kept: dict[Path, Path] = {}
    for run in runs:
        directory = run.directory.resolve()
        path = out_dir / KEPT_RUNS_DIR / _kept_name(run) / SUMMARY_NAME
        if path in kept and kept[path] != directory:
            raise UserInputError(
                f"--keep-runs: {kept[path]} and {directory} would both be kept as {path}; "
                "give the sweeps different folder names"
            )
        kept[path] = directory
        summary = json.loads((directory / SUMMARY_NAME).read_text())
        summary["updates_per_second"] = run.updates_per_second
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as tmp:
            tmp.write_text(json.dumps(summary, indent=1) + "\n")
    return list(kept)


# ----------------------------------------------------------------------------------------------
# Aggregation over seeds
# ----------------------------------------------------------------------------------------------


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and SAMPLE standard deviation (ddof=1); no deviation from a single value."""
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else None


@dataclass
class Group:
    """The seeds of one script on one dataset."""

    family: str
    dataset: str
    algorithm: str
    runs: list[Run]

    def stat(self, which: str, field: str) -> tuple[float, float | None] | None:
        """mean_std over seeds of ``last``/``best`` ``return_mean``/``normalized_score``;
        None where a run has no normalized score (an environment D4RL has no scores for)."""
        values = [getattr(getattr(run, which), field) for run in self.runs]
        return None if any(v is None for v in values) else mean_std(values)


def group_runs(runs: list[Run]) -> list[Group]:
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.family, run.dataset, run.algorithm), []).append(run)
    return [Group(*key, members) for key, members in groups.items()]


def _format(stat: tuple[float, float | None] | None, digits: int) -> str:
    if stat is None:
        return "–"
    mean, std = stat
    return f"{mean:.{digits}f}" if std is None else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _format_steps(runs: list[Run]) -> str:
    low, high = min(r.gradient_steps for r in runs), max(r.gradient_steps for r in runs)
    return f"{low:,}" if low == high else f"{low:,}–{high:,}"


def dataset_level(dataset: str) -> str:
    """The D4RL dataset level a data name stands for, the key of the references:
    "hopper-made-medium-replay-100k" and "hopper-medium-replay-v2" -> "hopper-medium-replay"."""
    name = dataset.lower().replace("-made-", "-")
    return re.sub(r"-(v\d+|\d+(\.\d+)?[km]?)$", "", name)


@dataclass
class ReferenceColumn:
    """Published figures for the same dataset level and script, as a column of the tables."""

    label: str
    kind: str  # "return": a raw return, shown with its normalized score; "score": normalized
    values: dict[tuple[str, str], float]  # (dataset level, script label) -> figure

    def figure(self, level: str, script: str) -> float | None:
        return self.values.get((level, script))

    def cell(self, group: Group) -> str | None:
        value = self.figure(dataset_level(group.dataset), group.algorithm)
        if value is None:
            return None
        if self.kind == "score":
            return f"{value:.1f}"
        from tianshou_offline.data.d4rl import normalized_score

        score = normalized_score(group.dataset, value)
        return f"{value:.0f}" if score is None else f"{value:.0f} ({score:.1f})"


def load_references(path: Path) -> list[ReferenceColumn]:
    """``--references FILE``: JSON with ``columns`` (a list of {key, label, kind}) and
    ``values`` ({dataset level: {script label: {column key: figure}}}). For ``--layout atari``
    the levels are game and buffer ("pong-expert.size_1e5", ``atari_reference_level``) and the
    script labels the tables' column headers ("CRR w/ CQL"). Other keys are notes for readers."""
    try:
        spec = json.loads(Path(path).read_text())
        columns = []
        for column in spec["columns"]:
            if column["kind"] not in ("return", "score"):
                raise ValueError(f"column kind {column['kind']!r} is not 'return' or 'score'")
            values = {
                (level, script): float(figures[column["key"]])
                for level, scripts in spec["values"].items()
                for script, figures in scripts.items()
                if column["key"] in figures
            }
            columns.append(ReferenceColumn(column["label"], column["kind"], values))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise UserInputError(
            f"--references {path}: not a references file ({type(err).__name__}: {err}); see "
            "load_references in tianshou_offline/results/aggregate.py for its layout"
        ) from err
    return columns


def format_tables(
    runs: list[Run],
    reference: dict[str, str] | None = None,
    reference_label: str = "reference",
    references: list[ReferenceColumn] | None = None,
) -> str:
    """One Markdown table per family; ``reference`` adds a column of text per script, each of
    ``references`` a column of published figures where the family has any."""
    header = [
        "dataset", "script", "seeds", "gradient steps",
        "last return", "last normalized", "best return", "best normalized", "upd/s",
    ]  # fmt: skip
    sections = []
    groups = group_runs(runs)
    for family in dict.fromkeys(g.family for g in groups):
        members = [g for g in groups if g.family == family]
        columns = [c for c in references or [] if any(c.cell(g) for g in members)]
        extra = ([reference_label] if reference else []) + [c.label for c in columns]
        lines = [f"#### {family}", "", "| " + " | ".join(header + extra) + " |"]
        lines.append("|" + "|".join(["---"] * 2 + ["--:"] * (len(header + extra) - 2)) + "|")
        for group in members:
            speeds = [r.updates_per_second for r in group.runs]
            cells = [
                group.dataset,
                group.algorithm,
                str(len(group.runs)),
                _format_steps(group.runs),
                _format(group.stat("last", "return_mean"), 1),
                _format(group.stat("last", "normalized_score"), 1),
                _format(group.stat("best", "return_mean"), 1),
                _format(group.stat("best", "normalized_score"), 1),
                "–" if None in speeds else f"{np.mean(speeds):.0f}",
            ]
            if reference:
                cells.append(reference.get(group.algorithm, ""))
            cells += [c.cell(group) or "" for c in columns]
            lines.append("| " + " | ".join(cells) + " |")
        sections.append("\n".join(lines))
    note = (
        "Mean ± sample standard deviation (n−1) over seeds. last: the evaluation after "
        "training; best: each seed's best evaluation during training (picked on the test "
        "episodes, so optimistic)."
    )
    return "\n\n".join(sections) + "\n\n" + note + "\n"


# ----------------------------------------------------------------------------------------------
# Tianshou's Atari tables: a row per buffer, a column per algorithm
# ----------------------------------------------------------------------------------------------

EXPERT_SCRIPT = "atari_qrdqn"  # the online expert whose play the buffers record
EXPERT_KEPT_DIR = "online-expert"  # below --out/runs: its summary, kept by --keep-runs
BEHAVIOUR_NAME = "behaviour.json"  # below --out/runs: the buffers' returns, kept by --keep-runs
ONLINE_HEADER, BEHAVIOUR_HEADER = "Online QRDQN", "Behavioral"  # Tianshou's headers


@dataclass
class Behaviour:
    """The behaviour policy's returns in one buffer file: the scores of its whole games."""

    family: str  # the game, e.g. "Pong"
    dataset: str  # the buffer's short name, as the runs name it: "expert", "expert.size_1e5"
    transitions: int
    returns: list[float]
    file: str  # where they were read from (for readers of behaviour.json)


def read_behaviour(path: str | Path) -> Behaviour:
    """``--buffers FILE``: the returns of the whole games in an Atari buffer file, i.e. the sums
    of the (unclipped) rewards of the episodes that end in a terminal state.

    Summed from the file's rows, not taken from the recording's ``behaviour_returns``
    attribute, which a subset does not have (and files made before 2026-12-04 copied from the
    whole recording, scoring games the subset does not hold). An
    episode cut short (the unfinished last game of each recording env, marked truncated) has
    no final score and is left out; a subset may hold no whole game at all.
    """
    import h5py

    if not Path(path).is_file():
        raise UserInputError(f"--buffers {path}: no such file")
    try:
        with h5py.File(path, "r") as file:
            task = str(file.attrs["task"])
            rewards = np.asarray(file["rew"][:], dtype=np.float64)
            terminated = np.asarray(file["terminated"][:], dtype=bool)
            done = terminated | np.asarray(file["truncated"][:], dtype=bool)
    except (OSError, KeyError) as err:
        raise UserInputError(
            f"--buffers {path}: not an Atari buffer file ({type(err).__name__}: {err})"
        ) from err
    ends = np.flatnonzero(done)  # the last row of each episode; rows are in time order
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64)
    sums = np.add.reduceat(rewards, starts) if len(ends) else np.zeros(0)
    return Behaviour(
        family=_family(task),
        dataset=_file_name(path),
        transitions=len(rewards),
        returns=sums[terminated[ends]].tolist() if len(ends) else [],
        file=str(path),
    )


def load_behaviours(paths: list[str], buffer_files: list[str]) -> list[Behaviour]:
    """The behaviour returns kept below ``paths`` (``behaviour.json``, written by --keep-runs)
    and those of ``buffer_files``, one per game and buffer name."""
    found: list[Behaviour] = []
    kept_files = [
        k for p in map(Path, paths) if p.is_dir() for k in sorted(p.rglob(BEHAVIOUR_NAME))
    ]
    for kept in kept_files:
        try:
            found += [Behaviour(**entry) for entry in json.loads(kept.read_text())["buffers"]]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise UserInputError(
                f"{kept} is not a {BEHAVIOUR_NAME} written by --keep-runs ({type(err).__name__}: "
                f"{err}); remove it or make the table again with --buffers"
            ) from err
    found += [read_behaviour(path) for path in buffer_files]
    behaviours: dict[tuple[str, str], Behaviour] = {}
    for behaviour in found:
        key = (behaviour.family, behaviour.dataset)
        if key in behaviours and behaviours[key].returns != behaviour.returns:
            raise UserInputError(
                f"two different buffers are named {behaviour.dataset!r} for {behaviour.family}: "
                f"{behaviours[key].file} and {behaviour.file}; give only one"
            )
        behaviours[key] = behaviour
    return list(behaviours.values())


def keep_behaviours(behaviours: list[Behaviour], out_dir: Path) -> Path:
    """Write the behaviour returns to ``out_dir/runs/behaviour.json``: with the kept run
    summaries, all that the Atari tables are made from again (the buffers are gigabytes)."""
    path = out_dir / KEPT_RUNS_DIR / BEHAVIOUR_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = {
        "about": "returns of the whole games in each buffer file (aggregate.read_behaviour)",
        "buffers": [vars(b) for b in behaviours],
    }
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps(kept, indent=1) + "\n")
    return path


def _script(label: str) -> str:
    """The script of a row label, without its variant options: "atari_crr --min-q-weight 10"
    -> "atari_crr"."""
    return label.split(" --")[0]


@dataclass(frozen=True)
class AtariColumn:
    """A column of Tianshou's Atari tables: the runs of one offline script."""

    header: str  # Tianshou's name for it, also its key in the references file
    script: str
    # atari_crr is two columns: without CQL's penalty (--min-q-weight 0), and with it
    with_cql_penalty: bool | None = None

    def takes(self, group: Group) -> bool:
        if _script(group.algorithm) != self.script:
            return False
        weight = float(group.runs[0].args.get("min_q_weight") or 0.0)  # one value per group
        return self.with_cql_penalty is None or (weight > 0) == self.with_cql_penalty


ATARI_COLUMNS = (
    AtariColumn("IL", "atari_il"),
    AtariColumn("BCQ", "atari_bcq"),
    AtariColumn("CQL", "atari_cql"),
    AtariColumn("CRR", "atari_crr", with_cql_penalty=False),
    AtariColumn("CRR w/ CQL", "atari_crr", with_cql_penalty=True),
)


def atari_reference_level(family: str, dataset: str) -> str:
    """The references' key of a game's buffer: "pong-expert", "pong-expert.size_1e5". The
    game comes first because Atari buffer names ("expert") do not say which game they hold."""
    return f"{family.lower()}-{dataset}"


def _seeds_cell(group: Group) -> str:
    """ "last mean ± std (best mean ± std), n seeds" of a group's returns."""
    seeds = f"{len(group.runs)} seed{'s' if len(group.runs) > 1 else ''}"
    last, best = group.stat("last", "return_mean"), group.stat("best", "return_mean")
    return f"{_format(last, 1)} (best {_format(best, 1)}), {seeds}"


def _column_cell(groups: list[Group]) -> str:
    """The cell of the groups one column takes on one buffer: "–" for none; several variants
    (e.g. CQL with two --min-q-weight values) one below the other, each after its options."""
    if len(groups) < 2:
        return _seeds_cell(groups[0]) if groups else "–"
    return "<br>".join(
        f"{g.algorithm.removeprefix(_script(g.algorithm)).strip()}: {_seeds_cell(g)}"
        for g in groups
    )


def _behaviour_cell(behaviour: Behaviour | None) -> str:
    if behaviour is None:
        return "–"
    if not behaviour.returns:
        return "no whole game"
    games = len(behaviour.returns)
    return f"{_format(mean_std(behaviour.returns), 1)}, {games} game{'s' if games > 1 else ''}"


def format_atari_tables(
    runs: list[Run],
    behaviours: list[Behaviour],
    references: list[ReferenceColumn] | None = None,
) -> str:
    """Tianshou's Atari tables, one per game: a row per buffer (largest first), columns
    Online QRDQN (the expert run), Behavioral (``behaviours``) and one per offline algorithm
    (``ATARI_COLUMNS``, then any other script). Each buffer's row of our runs is followed by a
    row per column of ``references`` that has figures for it."""
    groups = group_runs(runs)
    experts = {g.family: g for g in groups if _script(g.algorithm) == EXPERT_SCRIPT}
    offline = [g for g in groups if _script(g.algorithm) != EXPERT_SCRIPT]
    sizes = {(b.family, b.dataset): b for b in behaviours}
    sections = []
    for family in dict.fromkeys([g.family for g in groups] + [b.family for b in behaviours]):
        members = [g for g in offline if g.family == family]
        others = [g for g in members if not any(c.takes(g) for c in ATARI_COLUMNS)]
        columns = list(ATARI_COLUMNS) + [
            AtariColumn(s, s) for s in dict.fromkeys(_script(g.algorithm) for g in others)
        ]
        datasets = dict.fromkeys(
            [b.dataset for b in behaviours if b.family == family] + [g.dataset for g in members]
        )
        known = {d: sizes[(family, d)].transitions for d in datasets if (family, d) in sizes}
        # the full buffer first, then its subsets; buffers of unknown size last, by name
        order = sorted(datasets, key=lambda d: (d not in known, -known.get(d, 0), d))
        headers = [ONLINE_HEADER, BEHAVIOUR_HEADER] + [c.header for c in columns]
        lines = [
            f"#### {family}",
            "",
            "| " + " | ".join(["buffer (transitions)", ""] + headers) + " |",
        ]
        lines.append("|---|---|" + "--:|" * len(headers))
        expert = experts.get(family)
        for dataset in order:
            ours = [
                f"{dataset} ({known[dataset]:,})" if dataset in known else dataset,
                "ours",
                _seeds_cell(expert) if expert else "–",
                _behaviour_cell(sizes.get((family, dataset))),
            ]
            for column in columns:
                ours.append(
                    _column_cell([g for g in members if g.dataset == dataset and column.takes(g)])
                )
            lines.append("| " + " | ".join(ours) + " |")
            level = atari_reference_level(family, dataset)
            for reference in references or []:
                figures = [reference.figure(level, header) for header in headers]
                if any(f is not None for f in figures):
                    published = ["–" if f is None else f"{f:.1f}" for f in figures]
                    lines.append("| " + " | ".join(["", reference.label] + published) + " |")
        sections.append("\n".join(lines))
    note = (
        "Mean ± sample standard deviation (n−1) over seeds of the return after training; in "
        "brackets, each seed's best evaluation during training (picked on the test episodes, so "
        "optimistic). Online QRDQN: the expert's best policy evaluated after its training. "
        "Behavioral: mean ± sample standard deviation of the returns of the whole games in the "
        "buffer. The rows below ours: published figures."
    )
    return "\n\n".join(sections) + "\n\n" + note + "\n"


# ----------------------------------------------------------------------------------------------
# Learning curves
# ----------------------------------------------------------------------------------------------


def curve(runs: list[Run], field: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(gradient steps, mean, sample std) over seeds of an evaluation ``field``, at the steps
    every seed evaluated (std 0 for a single seed)."""
    steps = sorted(set.intersection(*({h["gradient_step"] for h in r.history} for r in runs)))
    values = np.array(
        [
            [next(h[field] for h in r.history if h["gradient_step"] == s) for s in steps]
            for r in runs
        ],
        dtype=float,
    ).reshape(len(runs), len(steps))
    std = values.std(axis=0, ddof=1) if len(runs) > 1 else np.zeros(len(steps))
    return np.asarray(steps), values.mean(axis=0), std


def _slug(text: str) -> str:
    # \w: letters and digits of every script, so that non-ASCII names stay apart
    return re.sub(r"[^\w.-]+", "_", text).strip("_")


def plot_learning_curves(runs: list[Run], out_dir: Path) -> list[Path]:
    """One PNG per dataset: evaluations during training, a line per script. Returns the files."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    groups = group_runs(runs)
    written = []
    for family, dataset in dict.fromkeys((g.family, g.dataset) for g in groups):
        these = [g for g in groups if (g.family, g.dataset) == (family, dataset)]
        # normalized score where every run has one, so that datasets compare; else raw return
        has_score = all(
            h["normalized_score"] is not None for g in these for r in g.runs for h in r.history
        )
        field = "normalized_score" if has_score else "return_mean"
        figure, axes = plt.subplots(figsize=(6, 3.6), dpi=100)
        for group in these:
            steps, mean, std = curve(group.runs, field)
            (line,) = axes.plot(steps, mean, label=f"{group.algorithm} ({len(group.runs)} seeds)")
            axes.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        axes.set_title(f"{dataset} ({family}): mean ± sample std over seeds", fontsize="medium")
        axes.set_xlabel("gradient steps")
        axes.set_ylabel("D4RL normalized score" if has_score else "return")
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
        figure.tight_layout()
        path = out_dir / f"{_slug(family)}_{_slug(dataset)}.png"
        with atomic_write(path) as tmp:
            figure.savefig(tmp, format="png")
        plt.close(figure)
        written.append(path)
    return written


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def put_into(document: Path, name: str, tables: str) -> None:
    """Put ``tables`` into a Markdown ``document`` between the lines ``<!-- name -->`` and
    ``<!-- end name -->`` (the end line is added the first time)."""
    begin, end = f"<!-- {name} -->", f"<!-- end {name} -->"
    try:
        text = document.read_text()
    except OSError as err:
        raise UserInputError(f"--into {document}: cannot read it ({err.strerror})") from err
    if begin not in text:
        raise UserInputError(f"--into {document}: no line '{begin}' to put the tables after")
    before, rest = text.split(begin, 1)
    after = rest.split(end, 1)[1] if end in rest else rest
    with atomic_write(document) as tmp:
        tmp.write_text(f"{before}{begin}\n{tables.rstrip()}\n{end}{after}")


def parse_reference(items: list[str]) -> dict[str, str]:
    reference = {}
    for item in items:
        script, sep, text = item.partition("=")
        if not sep:
            raise UserInputError(f"--reference {item!r}: write SCRIPT=TEXT, e.g. d4rl_il=11355")
        reference[script] = text
    return reference


def expert_summary(run_dir: str) -> Path:
    """``--expert-run DIR``: the summary.json atari_qrdqn.py writes when its training ends."""
    path = Path(run_dir)
    path = path if path.name == SUMMARY_NAME else path / SUMMARY_NAME
    if not path.is_file():
        raise UserInputError(
            f"--expert-run {run_dir}: no {SUMMARY_NAME} there; atari_qrdqn.py writes it when the "
            "expert's training ends (give its run directory, e.g. log/<task>/qrdqn/expert-seed0)"
        )
    if read_summary(path).algorithm != EXPERT_SCRIPT:
        raise UserInputError(f"--expert-run {run_dir}: {path} is not a run of {EXPERT_SCRIPT}.py")
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="sweep or log directories (searched below)")
    parser.add_argument(
        "--layout",
        choices=("d4rl", "atari"),
        default="d4rl",
        help="d4rl: a row per dataset and script, with normalized scores (the default); atari: "
        "Tianshou's Atari tables, a row per buffer and a column per algorithm",
    )
    parser.add_argument(
        "--expert-run",
        default=None,
        help="--layout atari: the run directory of atari_qrdqn.py, the Online QRDQN column",
    )
    parser.add_argument(
        "--buffers",
        nargs="*",
        default=[],
        help="--layout atari: the buffer files (HDF5) whose whole games are the Behavioral "
        f"column (--keep-runs keeps their returns in <out>/{KEPT_RUNS_DIR}/{BEHAVIOUR_NAME})",
    )
    parser.add_argument("--out", default=None, help=f"write {TABLE_NAME} and the PNGs here")
    parser.add_argument(
        "--reference",
        nargs="*",
        default=[],
        help="SCRIPT=TEXT: an extra column, e.g. published numbers",
    )
    parser.add_argument("--reference-label", default="reference", help="its header")
    parser.add_argument(
        "--references", default=None, help="a JSON file of published figures per dataset level"
    )
    parser.add_argument(
        "--into",
        default=None,
        help="with --out: also put the tables into this Markdown file, after its line "
        "'<!-- results/<out folder name> -->' (replacing what an earlier call put there)",
    )
    parser.add_argument(
        "--keep-runs",
        action="store_true",
        help=f"with --out: copy each run's {SUMMARY_NAME} to <out>/{KEPT_RUNS_DIR}/ (to commit)",
    )
    args = parser.parse_args(argv)
    if args.out:  # a file in the way: say so before reading the runs
        check_directory(args.out, "--out")
    for option in ("keep_runs", "into"):
        if getattr(args, option) and not args.out:
            raise UserInputError(f"--{option.replace('_', '-')} needs --out")
    atari = args.layout == "atari"
    for option in ("expert_run", "buffers"):
        if getattr(args, option) and not atari:
            raise UserInputError(f"--{option.replace('_', '-')} needs --layout atari")
    if atari and args.reference:
        raise UserInputError(
            "--reference is for the d4rl layout; with --layout atari use --references"
        )
    references = load_references(args.references) if args.references else None
    expert = [expert_summary(args.expert_run)] if args.expert_run else []
    behaviours = load_behaviours(args.paths, args.buffers) if atari else []

    runs = load_runs(args.paths + expert)
    if not runs:
        raise UserInputError(f"no {SUMMARY_NAME} below {' '.join(args.paths)}: no run has finished")
    if atari:
        tables = format_atari_tables(runs, behaviours, references)
    else:
        reference = parse_reference(args.reference)
        tables = format_tables(runs, reference, args.reference_label, references)
    print(tables)
    if args.out:
        out_dir = Path(args.out)
        if args.keep_runs:
            kept = keep_runs(runs, out_dir)
            print(f"kept {len(kept)} run summaries in {out_dir / KEPT_RUNS_DIR}")
            if behaviours:
                print(f"kept the buffers' returns in {keep_behaviours(behaviours, out_dir)}")
        with atomic_write(out_dir / TABLE_NAME) as tmp:
            tmp.write_text(tables)
        # learning curves of the offline runs (the online expert's are in its own run directory)
        offline = [r for r in runs if _script(r.algorithm) != EXPERT_SCRIPT]
        plots = plot_learning_curves(offline, out_dir)
        for path in plots:
            print(f"wrote {path}")
        print(f"wrote {out_dir / TABLE_NAME}")
        if args.into:
            document = Path(args.into)
            links = ", ".join(
                f"[{path.stem}]({os.path.relpath(path, document.resolve().parent)})"
                for path in (p.resolve() for p in plots)
            )
            curves = f"\nLearning curves (mean ± sample std over seeds): {links}\n"
            put_into(document, f"results/{out_dir.resolve().name}", tables + curves)
            print(f"put the tables into {args.into}")
