"""P2: a `dbt build` through our Dagster assets costs at most 1.15x (demo project) / 1.05x (500 models) bare dbt.

Ours is what a run of the code location's dbt assets does: a fresh Python process imports and loads
`pipeline.definitions` with DBT_PROJECT_DIR at the project, then executes every dbt asset (and its checks) of the
implicit global asset job in process against a fresh on-disk Dagster instance configured by devstack/dagster.yaml
(SQLite storage, as `make dev` uses). That runs our dbt op: the dbt resource (dbt version, profile), `dbt build` in
a subprocess (through dbt_launcher.py, on DuckDB) with the partial-parse file copied in, every result turned into
Dagster events while dbt runs and written to the instance, row counts, model figures and the artifacts saved under
DBT_ARTIFACTS_URL. The baseline is what a user
runs without Dagster: `dbt build` in the project folder, as a subprocess, timed from start to exit.

The main rows compare the execution (from the run's start to its end, inside the process) with the whole bare
`dbt build` process: the interpreter start and dbt's imports are paid inside both (ours starts `dbt` as a
subprocess too). Start-up of our process (interpreter, imports of dagster/dagster-dbt/the code location, loading
the Definitions) is what a run worker pays before any step; it is reported as `info` rows: our whole process
against bare dbt. Another `info` row takes out the time spent in the instance's `store_event` (timed by wrapping
it in the run): a run writes ~3 events per model and 2 per test, a few SQLite transactions each — Dagster's cost
of recording assets, which no dbt integration avoids (devstack/dagster.yaml already makes it several times cheaper,
see pipeline/instance_storage.py). DBT_PARTITION_INCREMENTAL=0
for ours, so it runs one `dbt build` of the whole project, as bare does.

Both sides start every repetition from the same state: the warehouse file copied from a template (raw data or
synthetic sources loaded, untimed) and the project's `target/` restored to what the untimed `dbt parse` left
(`manifest.json`, `partial_parse.msgpack`), so both may partial-parse. Asserted per repetition: both succeeded, built
the same number of models/seeds/snapshots and ran the same number of tests, and left the same relations.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from bench.synthetic import generate
from devstack import INSTANCE_YAML

from ..harness import REPO_ROOT, Case, Row, Setup, stopwatch
from ..processes import DBT, clean_env, dbt_parse, run_python

FULL_MODELS, QUICK_MODELS = 500, 50
FULL_DEMO, QUICK_DEMO = {"days": 14, "customers": 500}, {"days": 3, "customers": 60}
DEMO_START = "2026-11-01"
GOAL_DEMO = 1.15
GOAL_SYNTHETIC = 1.05

#: Loads the demo's raw tables through the ingestion assets (setup, untimed). argv: first day, last day.
LOAD_RAW = r"""
import sys
import dagster as dg
import pipeline.definitions as location
defs = location.defs()
job = defs.resolve_implicit_global_asset_job_def()
raw = {k for k in job.asset_layer.executable_asset_keys if k.path[0] == "raw"}
result = job.get_subset(asset_selection=raw).execute_in_process(
    instance=dg.DagsterInstance.ephemeral(),
    tags={"dagster/asset_partition_range_start": sys.argv[1], "dagster/asset_partition_range_end": sys.argv[2]},
)
assert result.success
"""

#: Ours, timed: argv = Dagster home (a fresh folder). Prints one JSON line.
MATERIALIZE = r"""
import json, sys, time
started = time.perf_counter()
import dagster as dg
import pipeline.definitions as location
imported = time.perf_counter()
defs = location.defs()
job = defs.resolve_implicit_global_asset_job_def()
keys = set()
for a in defs.get_repository_def().assets_defs_by_key.values():
    if a.is_executable and a.op.name.startswith("dbt_"):
        keys |= set(a.keys)
loaded = time.perf_counter()
stored = [0.0]
def timed(method):
    def wrapper(*args, **kwargs):
        begun = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            stored[0] += time.perf_counter() - begun
    return wrapper
with dg.DagsterInstance.local_temp(sys.argv[1]) as instance:
    storage = instance.event_log_storage
    storage.store_event = timed(storage.store_event)  # store_event_batch calls it per event
    begun = time.perf_counter()
    result = job.get_subset(asset_selection=keys).execute_in_process(instance=instance)
    ran = time.perf_counter()
    assert result.success
    mats = result.get_asset_materialization_events()
    checks = result.get_asset_check_evaluations()
print(json.dumps({
    "imports": imported - started, "load": loaded - imported, "run": ran - begun, "event_storage": stored[0],
    "assets": len(keys), "materialized": len(mats), "checks": len(checks),
    "checks_passed": sum(c.passed for c in checks),
}))
"""


@contextmanager
def prepare(quick: bool, workdir: Path) -> Iterator[Setup]:
    measures, rows, notes = {}, [], []
    demo = prepare_demo(workdir / "demo", QUICK_DEMO if quick else FULL_DEMO)
    models = QUICK_MODELS if quick else FULL_MODELS
    synthetic = prepare_synthetic(workdir / "synthetic", models)
    for label, bench_project, goal in (("demo", demo, GOAL_DEMO), (f"{models:,} models", synthetic, GOAL_SYNTHETIC)):
        ours_m, bare_m = side_measures(label, bench_project, workdir)
        measures[f"ours {label}"] = ours_m
        measures[f"bare {label}"] = bare_m
        rows += [
            Row(
                f"dbt build of every asset, {label}: our dbt assets (run, in process) vs bare `dbt build` (process)",
                f"ours {label}: run",
                f"bare {label}: dbt build",
                goal,
            ),
            Row(
                f"… {label}: the run less the time spent writing events to the instance's SQLite event log",
                f"ours {label}: run without event storage",
                f"bare {label}: dbt build",
            ),
            Row(
                f"… {label}: our whole process (interpreter, imports, Definitions, run) vs bare `dbt build`",
                f"ours {label}: process total",
                f"bare {label}: dbt build",
            ),
        ]
        notes.append(bench_project.note)
    notes += [
        "Ours: a fresh `python -c` process loads `pipeline.definitions` (DBT_PROJECT_DIR at the project,"
        " DUCKDB_PATH at the repetition's warehouse, other settings in a temp folder), then"
        " `resolve_implicit_global_asset_job_def().get_subset(<every dbt asset>).execute_in_process(instance=<fresh"
        " DagsterInstance.local_temp()>)`; `run` is that call, timed inside the process",
        "Bare: `dbt build --project-dir P --profiles-dir P` with the working directory at P, same target and"
        " warehouse state, timed from the parent (start to exit)",
        "Before every repetition (untimed): the warehouse is copied from its template and `target/` restored to"
        " the untimed `dbt parse`'s manifest and partial-parse file",
    ]
    yield Setup(measures=measures, rows=rows, notes=notes)


class BenchProject:
    """A dbt project with a warehouse template: `reset()` puts both back to the state every repetition starts in."""

    def __init__(self, project: Path, template: Path, warehouse: Path, note: str) -> None:
        self.project, self.template, self.warehouse, self.note = project, template, warehouse, note
        self.pristine = project.parent / f"{project.name}.target"
        shutil.copytree(project / "target", self.pristine)

    def reset(self) -> None:
        for path in (self.warehouse, self.warehouse.with_name(self.warehouse.name + ".wal")):
            path.unlink(missing_ok=True)
        shutil.copy(self.template, self.warehouse)
        shutil.rmtree(self.project / "target", ignore_errors=True)
        shutil.rmtree(self.project / "logs", ignore_errors=True)
        shutil.copytree(self.pristine, self.project / "target")

    def relations(self) -> set[str]:
        with duckdb.connect(str(self.warehouse), read_only=True) as conn:
            return {
                f"{s}.{t}"
                for s, t in conn.execute("select table_schema, table_name from information_schema.tables").fetchall()
            }


def prepare_demo(root: Path, size: dict[str, int]) -> BenchProject:
    """Our dbt project, copied (its own target/), over the demo's raw tables loaded by our ingestion assets."""
    from datetime import date

    from pipeline.demo_data import generate as demo_data

    project = root / "dbt_project"
    shutil.copytree(REPO_ROOT / "dbt_project", project, ignore=shutil.ignore_patterns("target", "logs"))
    template = root / "template.duckdb"  # not raw.duckdb: its catalog name would clash with schema raw
    with stopwatch() as made:
        summary = demo_data(root / "landing", days=size["days"], customers=size["customers"], progress=False)
        env = clean_env(
            DUCKDB_PATH=str(template),
            DBT_PROJECT_DIR=str(project),
            LANDING_URL=str(root / "landing"),
            LANDING_PROCESSED_ACTION="leave",
            DBT_ARTIFACTS_URL=str(root / "setup_artifacts"),
        )
        # Parsed with the warehouse path the repetitions use: dbt's partial parsing starts over when an env var
        # the profile reads (DUCKDB_PATH) changes.
        dbt_parse(project, {**env, "DUCKDB_PATH": str(root / "warehouse.duckdb")})
        run_python(LOAD_RAW, summary["first_day"], summary["last_day"], env=env, what="loading the demo's raw tables")
    rows = sum(summary["rows"].values())
    assert date.fromisoformat(summary["first_day"]) == date.fromisoformat(DEMO_START)
    note = (
        f"Demo: our dbt_project (copied) over {size['days']} days of demo data for {size['customers']} customers"
        f" ({rows:,} raw rows, loaded by our ingestion assets into a template warehouse; {made.seconds:.0f} s, not"
        " timed)"
    )
    return BenchProject(project, template, root / "warehouse.duckdb", note)


def prepare_synthetic(root: Path, models: int) -> BenchProject:
    with stopwatch() as made:
        synthetic = generate(root / "project", models)
        dbt_parse(synthetic.path, clean_env())
    template = root / "sources.duckdb"
    shutil.copy(synthetic.database, template)
    note = (
        f"{models:,} models: bench/synthetic.py, {synthetic.layers} layers, {len(synthetic.sources)} source tables of"
        f" {synthetic.rows} rows, {synthetic.tests} tests; views in staging, tables (a few incremental) after"
        f" (generated and parsed in {made.seconds:.0f} s, not timed)"
    )
    # The synthetic profile's warehouse is ./warehouse.duckdb in the project (dbt runs there).
    return BenchProject(synthetic.path, template, synthetic.database, note)


def side_measures(label: str, bp: BenchProject, workdir: Path):
    runs = iter(range(1_000_000))
    seen: dict[str, tuple] = {}

    def ours() -> dict[str, float]:
        bp.reset()
        n = next(runs)
        home = workdir / "dagster_home" / f"{label}-{n}"
        home.mkdir(parents=True)
        shutil.copy(INSTANCE_YAML, home)  # the instance `make dev` runs: devstack/dagster.yaml
        env = clean_env(
            DBT_PROJECT_DIR=str(bp.project),
            DBT_PROFILES_DIR=str(bp.project),
            DUCKDB_PATH=str(bp.warehouse),
            LANDING_URL=str(workdir / "landing"),
            DBT_ARTIFACTS_URL=str(workdir / "artifacts" / f"{label}-{n}"),
            DAGSTER_HOME=str(home),
            # One `dbt build` of the whole project, as bare: incremental models not split out as partitions.
            DBT_PARTITION_INCREMENTAL="0",
        )
        out, total = run_python(MATERIALIZE, str(home), env=env, what=f"ours ({label})")
        results = _latest_run_results(workdir / "artifacts" / f"{label}-{n}")
        work = _work(results) + (frozenset(bp.relations()),)
        assert out["materialized"] == out["assets"], out
        assert out["checks"] == out["checks_passed"], out
        _same_work(label, "ours", work, seen)
        shutil.rmtree(home, ignore_errors=True)
        return {
            f"ours {label}: run": out["run"],
            f"ours {label}: run without event storage": out["run"] - out["event_storage"],
            f"ours {label}: process total": total,
        }

    def bare() -> dict[str, float]:
        bp.reset()
        env = clean_env(DUCKDB_PATH=str(bp.warehouse))
        with stopwatch() as t:
            done = subprocess.run(
                [DBT, "build", "--project-dir", str(bp.project), "--profiles-dir", str(bp.project)],
                cwd=bp.project,
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
        if done.returncode != 0:
            raise RuntimeError(f"bare dbt build ({label}) failed:\n{done.stdout[-4000:]}")
        results = json.loads((bp.project / "target" / "run_results.json").read_text())
        _same_work(label, "bare", _work(results) + (frozenset(bp.relations()),), seen)
        return {f"bare {label}: dbt build": t.seconds}

    return ours, bare


def _latest_run_results(artifacts: Path) -> dict:
    return json.loads((artifacts / "latest" / "run_results.json").read_text())


def _work(run_results: dict) -> tuple:
    """(nodes built, tests run) by resource type, and that every one succeeded."""
    built: dict[str, int] = {}
    for result in run_results["results"]:
        kind = result["unique_id"].split(".", 1)[0]
        built[kind] = built.get(kind, 0) + 1
        assert result["status"] in ("success", "pass"), result["unique_id"]
    return (tuple(sorted(built.items())),)


def _same_work(label: str, side: str, work: tuple, seen: dict[str, tuple]) -> None:
    seen[side] = work
    other = seen.get("bare" if side == "ours" else "ours")
    assert other is None or other == work, f"{label}: ours and bare did different work: {seen}"


CASE = Case(
    "p2", "dbt build through Dagster (ours: our dbt assets, run in process; baseline: bare `dbt build`)", prepare
)
