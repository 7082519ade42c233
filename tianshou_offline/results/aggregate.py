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

Runs of one script on one dataset that differ in an option of ``VARIANT_ARGS`` (``--norm-obs``)
are separate rows, labelled with that option ("d4rl_td3_bc --norm-obs 0"). ``--references FILE``
adds published figures as columns, per dataset level and script (``load_references``), and
``--keep-runs`` copies each run's ``summary.json`` (with its update speed) below ``--out``, so
that the tables and plots can be made again from committed files without the runs' logs.
Runs of one sweep can serve several tables: name the dataset or script folders to aggregate.

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
# options whose values make separate rows when the runs of one script on one dataset differ
VARIANT_ARGS = ("norm_obs",)
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


def _data_name(args: dict[str, Any]) -> str:
    """The dataset a run trained on, as a short name (file names without folder and suffix)."""
    data = args.get("expert_data_task") or args.get("load_buffer_name") or "?"
    names = data if isinstance(data, list) else [data]
    return "+".join(Path(str(n)).name.removesuffix(".hdf5").removesuffix(".h5") for n in names)


def read_summary(path: Path) -> Run:
    try:
        summary = json.loads(path.read_text())
        args = summary["args"]
        final, best = summary["final"], summary.get("best", {})
        run = Run(
            directory=path.parent,
            algorithm=Path(summary["script"]).stem,
            family=str(args["task"]).split("-")[0],
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


def label_variants(runs: list[Run]) -> None:
    """Where the runs of one script on one dataset differ in an option of ``VARIANT_ARGS``,
    add that option to each run's label: "d4rl_td3_bc --norm-obs 0" and "... --norm-obs 1"."""
    groups: dict[tuple[str, str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.family, run.dataset, run.algorithm), []).append(run)
    for members in groups.values():
        for arg in VARIANT_ARGS:
            if len({str(run.args.get(arg)) for run in members}) > 1:
                for run in members:
                    run.algorithm += f" --{arg.replace('_', '-')} {run.args.get(arg)}"


def keep_runs(runs: list[Run], out_dir: Path) -> list[Path]:
    """Copy each run's summary, with its update speed, to ``out_dir/runs/<sweep>/<dataset>/
    <script>/<seed>/summary.json`` (the last four parts of the run's directory, which name it
    in a sweep): what the tables and plots are made from again."""
    kept: dict[Path, Path] = {}
    for run in runs:
        directory = run.directory.resolve()
        path = out_dir / KEPT_RUNS_DIR / Path(*directory.parts[-4:]) / SUMMARY_NAME
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

    def cell(self, group: Group) -> str | None:
        value = self.values.get((dataset_level(group.dataset), group.algorithm))
        if value is None:
            return None
        if self.kind == "score":
            return f"{value:.1f}"
        from tianshou_offline.data.d4rl import normalized_score

        score = normalized_score(group.dataset, value)
        return f"{value:.0f}" if score is None else f"{value:.0f} ({score:.1f})"


def load_references(path: Path) -> list[ReferenceColumn]:
    """``--references FILE``: JSON with ``columns`` (a list of {key, label, kind}) and
    ``values`` ({dataset level: {script label: {column key: figure}}})."""
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="sweep or log directories (searched below)")
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
    references = load_references(args.references) if args.references else None

    runs = load_runs(args.paths)
    if not runs:
        raise UserInputError(f"no {SUMMARY_NAME} below {' '.join(args.paths)}: no run has finished")
    tables = format_tables(runs, parse_reference(args.reference), args.reference_label, references)
    print(tables)
    if args.out:
        out_dir = Path(args.out)
        if args.keep_runs:
            kept = keep_runs(runs, out_dir)
            print(f"kept {len(kept)} run summaries in {out_dir / KEPT_RUNS_DIR}")
        with atomic_write(out_dir / TABLE_NAME) as tmp:
            tmp.write_text(tables)
        plots = plot_learning_curves(runs, out_dir)
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
