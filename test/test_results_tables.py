"""The results tables of examples/offline/README.md: published references per dataset level,
variant rows (--norm-obs), kept run summaries, and the committed tables made again from them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tianshou_offline.errors import UserInputError
from tianshou_offline.results import aggregate

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "examples" / "offline" / "results"
REFERENCES = ROOT / "reproduce" / "d4rl_references.json"
ATARI_REFERENCES = ROOT / "reproduce" / "atari_references.json"


def write_run(root: Path, dataset: str, script: str, seed: int, last: float, **args) -> Path:
    """A summary.json as training.OfflineRun.evaluate writes it, for HalfCheetah."""
    run_dir = root / dataset / script / f"seed{seed}"
    run_dir.mkdir(parents=True)
    args = {
        "task": "HalfCheetah-v2",
        "expert_data_task": f"/d/{dataset}.hdf5",
        "seed": seed,
        **args,
    }
    evaluation = {"gradient_step": 100, "return_mean": last, "return_std": 0.0}
    summary = {
        "script": f"{script}.py",
        "args": args,
        "gradient_steps": 100,
        "final": {"return_mean": last, "normalized_score_mean": last / 100},
        "history": [{**evaluation, "normalized_score": last / 100}],
        "best": {**evaluation, "normalized_score": last / 100},
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return run_dir


def test_dataset_levels_of_made_and_d4rl_names():
    assert aggregate.dataset_level("hopper-made-medium-replay-100k") == "hopper-medium-replay"
    assert aggregate.dataset_level("halfcheetah-made-expert-1m") == "halfcheetah-expert"
    assert aggregate.dataset_level("walker2d-made-medium-expert-2m") == "walker2d-medium-expert"
    assert aggregate.dataset_level("hopper-medium-replay-v2") == "hopper-medium-replay"
    assert aggregate.dataset_level("hopper-made-medium-50k") == "hopper-medium"


def test_norm_obs_variants_are_rows_of_their_own_and_references_match_them(tmp_path):
    for seed, last in enumerate([5000.0, 5200.0]):
        write_run(tmp_path, "halfcheetah-made-medium-1m", "d4rl_td3_bc", seed, last, norm_obs=1)
    write_run(tmp_path, "halfcheetah-made-medium-1m", "d4rl_td3_bc", 2, 4000.0, norm_obs=0)
    write_run(tmp_path, "halfcheetah-made-expert-1m", "d4rl_td3_bc", 0, 9000.0, norm_obs=1)
    runs = aggregate.load_runs([tmp_path])
    labels = sorted({(r.dataset, r.algorithm) for r in runs})
    assert labels == [
        ("halfcheetah-made-expert-1m", "d4rl_td3_bc"),  # one value of --norm-obs: no label
        ("halfcheetah-made-medium-1m", "d4rl_td3_bc --norm-obs 0"),
        ("halfcheetah-made-medium-1m", "d4rl_td3_bc --norm-obs 1"),
    ]

    tables = aggregate.format_tables(runs, references=aggregate.load_references(REFERENCES))
    lines = tables.splitlines()
    assert lines[2].endswith(
        "| Tianshou's published return (normalized), D4RL data | CORL last normalized, D4RL data |"
    )
    # Tianshou's 11788.25 on halfcheetah-expert-v2: 100 * (11788.25 + 280.18) / (12135 + 280.18)
    assert lines[4].endswith("| 11788 (97.2) |  |")
    assert lines[5].endswith("| 5724 (48.4) |  |")  # the --norm-obs 0 row: Tianshou's w/o
    assert lines[6].endswith("| 5741 (48.5) | 48.1 |")  # CORL normalizes, as --norm-obs 1


def test_switches_are_named_where_they_are_on(tmp_path):
    """CQL's rows: the corrected defaults, the multiplier, and Tianshou 2.0.1's maths."""
    cql = {"cql_weight": 10.0, "with_lagrange": False, "tianshou_maths": False}
    write_run(tmp_path, "hopper-made-medium-50k", "d4rl_cql", 0, 270.0, **cql)
    lagrange = {**cql, "cql_weight": 1.0, "with_lagrange": True}
    write_run(tmp_path / "b", "hopper-made-medium-50k", "d4rl_cql", 0, 4.0, **lagrange)
    write_run(tmp_path / "c", "hopper-made-medium-50k", "d4rl_cql", 0, 9.0,
              **{**lagrange, "tianshou_maths": True})  # fmt: skip
    labels = [r.algorithm for r in aggregate.load_runs([tmp_path])]
    assert labels == [
        "d4rl_cql --cql-weight 10",
        "d4rl_cql --tianshou-2.0.1-maths --with-lagrange --cql-weight 1",
        "d4rl_cql --with-lagrange --cql-weight 1",
    ]


def test_a_family_shows_only_the_reference_columns_it_has_figures_for(tmp_path):
    write_run(tmp_path, "halfcheetah-made-expert-1m", "d4rl_bcq", 0, 9000.0)
    tables = aggregate.format_tables(
        aggregate.load_runs([tmp_path]), references=aggregate.load_references(REFERENCES)
    )
    assert "Tianshou's published" in tables and "CORL" not in tables  # CORL has no BCQ


def test_a_bad_references_file_is_one_line(tmp_path):
    bad = tmp_path / "refs.json"
    bad.write_text(json.dumps({"columns": [{"key": "x", "label": "x", "kind": "percent"}]}))
    with pytest.raises(UserInputError, match="not a references file .*'percent'"):
        aggregate.load_references(bad)
    with pytest.raises(UserInputError, match="not a references file"):
        aggregate.load_references(tmp_path / "missing.json")


def test_kept_summaries_give_the_same_tables_without_the_logs(tmp_path):
    sweep = tmp_path / "sweep"
    run_dir = write_run(sweep, "halfcheetah-made-medium-1m", "d4rl_il", 0, 4500.0)
    write_run(sweep, "halfcheetah-made-medium-1m", "d4rl_il", 1, 4700.0)
    shutil.copy(run_dir / "summary.json", run_dir / "watch.json")  # not a training run
    out = tmp_path / "results"
    aggregate.main([str(sweep), "--out", str(out), "--keep-runs", "--references", str(REFERENCES)])
    kept = sorted(p.relative_to(out) for p in out.rglob("summary.json"))
    assert kept == [
        Path("runs/sweep/halfcheetah-made-medium-1m/d4rl_il/seed0/summary.json"),
        Path("runs/sweep/halfcheetah-made-medium-1m/d4rl_il/seed1/summary.json"),
    ]
    again = tmp_path / "again"
    aggregate.main([str(out / "runs"), "--out", str(again), "--references", str(REFERENCES)])
    assert (again / "results.md").read_text() == (out / "results.md").read_text()
    assert "| 4600.0 ± 141.4 |" in (out / "results.md").read_text()
    # --into: the tables go between the document's markers, replacing an earlier version
    readme = tmp_path / "README.md"
    readme.write_text("# Results\n\n<!-- results/again -->\nold table\n\n## Next\n")
    aggregate.main([str(out / "runs"), "--out", str(again), "--into", str(readme)])
    aggregate.main([str(out / "runs"), "--out", str(again), "--into", str(readme)])
    expected = (again / "results.md").read_text()
    curves = (
        "Learning curves (mean ± sample std over seeds): "
        "[HalfCheetah_halfcheetah-made-medium-1m](again/HalfCheetah_halfcheetah-made-medium-1m.png)"
    )
    assert readme.read_text() == (
        f"# Results\n\n<!-- results/again -->\n{expected}\n{curves}\n"
        "<!-- end results/again -->\nold table\n\n## Next\n"
    )
    with pytest.raises(UserInputError, match="no line '<!-- results/results -->'"):
        aggregate.main([str(sweep), "--out", str(out), "--into", str(readme)])
    with pytest.raises(UserInputError, match="--keep-runs needs --out"):
        aggregate.main([str(sweep), "--keep-runs"])
    # two sweeps of one folder name would overwrite each other's runs: refused
    write_run(tmp_path / "other" / "sweep", "halfcheetah-made-medium-1m", "d4rl_il", 0, 1.0)
    with pytest.raises(UserInputError, match="would both be kept as"):
        aggregate.main([str(sweep), str(tmp_path / "other"), "--out", str(out), "--keep-runs"])


COMMITTED = sorted(p.parent for p in RESULTS.glob(f"*/{aggregate.KEPT_RUNS_DIR}"))


def table_options(table_dir: Path) -> list[str]:
    """The options reproduce/*.sh make a committed table with: the Atari ones (atari-<game>,
    reproduce/atari_pong.sh) in Tianshou's Atari layout, the others in the D4RL one."""
    if table_dir.name.startswith("atari-"):
        return ["--layout", "atari", "--references", str(ATARI_REFERENCES)]
    return ["--references", str(REFERENCES)]


@pytest.mark.parametrize("table_dir", COMMITTED, ids=[p.name for p in COMMITTED])
def test_committed_tables_are_made_again_from_the_committed_runs(table_dir, tmp_path):
    """reproduce/*.sh end with this aggregate_results.py call; the README quotes the table."""
    out = tmp_path / table_dir.name
    runs = table_dir / aggregate.KEPT_RUNS_DIR
    aggregate.main([str(runs), "--out", str(out), *table_options(table_dir)])
    table = (out / aggregate.TABLE_NAME).read_text()
    assert table == (table_dir / aggregate.TABLE_NAME).read_text()
    assert sorted(p.name for p in out.glob("*.png")) == sorted(
        p.name for p in table_dir.glob("*.png")
    )
    readme = (ROOT / "examples" / "offline" / "README.md").read_text()
    body = table.split("\n\nMean ±")[0]  # the tables, without the closing note
    assert body in readme, f"examples/offline/README.md does not show {table_dir}'s table"
