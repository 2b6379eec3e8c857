"""P2: a run of every dbt asset, as its run worker pays it, costs at most 1.10x bare `dbt seed && dbt build` on a
real-world-shaped ~1,000-model project (bench/synthetic.py); the demo row holds the run itself at 1.15x.

Three sides, each a fresh process per repetition, from the same warehouse and `target/` state:

- **ours**: the run worker of this code location, exactly as a run launcher starts it: the run of every dbt asset is
  created in a fresh instance configured by devstack/dagster.yaml (SQLite storage, as `make dev` uses) the way the
  webserver or daemon creates it (untimed), then `python -m dagster api execute_run <args>` runs it — interpreter,
  imports, loading `pipeline.definitions` (DBT_PROJECT_DIR at the project, default settings), the run. That runs our
  dbt op: `dbt build` through dbt_launcher.py (seeds that feed sources ordered first, results reported while dbt
  runs), every result a Dagster event written to the instance, row counts, model figures, the artifacts saved under
  DBT_ARTIFACTS_URL and the invocation's target folder removed.
- **stock**: the same for stock dagster-dbt (bench/stock_dbt.py): a plain `@dbt_assets` with the default translator
  and `DbtCliResource` — what a user would pick instead.
- **bare**: what a user runs without Dagster: `dbt seed` then `dbt build` in the project folder, two subprocesses
  timed together from start to exit (the seeds first: this project's seeds load tables it also reads as sources,
  which a fresh `dbt build` may read before they exist).

The goal row compares the run worker's whole process with bare; info rows: stock's, ours against stock's, the CPU
time of each side's process tree (the dbt subprocesses included: on a machine shared with other work the wall
clock also measures the neighbours), and the run alone (its start to end, from the run storage). For the demo
project DBT_PARTITION_INCREMENTAL=0 (its fct_orders chain is partitioned by default, and a run of every asset is one
unpartitioned `dbt build`, as bare's); the synthetic project runs with the default settings (its incremental models
read no raw table of ours, so nothing of it is partitioned).

Before every repetition (untimed): the warehouse file is copied from a template (raw data or synthetic sources
loaded; no seeds) and the project's `target/` restored to what the untimed `dbt parse` left (`manifest.json`,
`partial_parse.msgpack`), so every side may partial-parse. Asserted per repetition: each side succeeded, built the
same number of models/seeds/snapshots and ran the same number of tests (run_results.json), left the same relations,
and ours and stock materialized every dbt asset with every check passing.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from bench.synthetic import generate
from devstack import INSTANCE_YAML

from ..harness import REPO_ROOT, Case, Row, Setup, stopwatch
from ..processes import clean_env, dbt_parse, run_dbt, run_python, run_timed
from ..stock_dbt import OP_NAME as STOCK_OP

FULL_MODELS, QUICK_MODELS = 1_000, 50
FULL_DEMO, QUICK_DEMO = {"days": 14, "customers": 500}, {"days": 3, "customers": 60}
DEMO_START = "2026-11-01"
GOAL_DEMO = 1.15
GOAL_SYNTHETIC = 1.10
#: side -> (module the run worker loads, prefix of its dbt ops)
SIDES = {"ours": ("pipeline.definitions", "dbt_"), "stock": ("bench.stock_dbt", STOCK_OP)}

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

#: The dbt asset keys of a side (setup, untimed). argv: module, op prefix. Prints them as one JSON list.
DBT_KEYS = r"""
import json, os, sys
from dagster._core.definitions.reconstruct import ReconstructableRepository
repo = ReconstructableRepository.for_module(sys.argv[1], "defs", working_directory=os.getcwd()).get_definition()
ops = [a for a in repo.assets_defs_by_key.values() if a.is_executable and a.node_def.name.startswith(sys.argv[2])]
print(json.dumps(sorted({k.to_user_string() for a in ops for k in a.keys})))
"""

#: A side's run, created as the webserver or the daemon creates it before a run launcher starts a run worker (setup,
#: untimed): the code location loaded (ReconstructableRepository), the implicit asset job subset to the given assets,
#: its execution plan, the run stored in the instance (DAGSTER_HOME). argv: module, file of asset keys (JSON). Prints
#: the run worker's argument: ExecuteRunArgs, serialized.
CREATE_RUN = r"""
import json, os, sys
import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.execution.api import create_execution_plan
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import serialize_value
module, keys_file = sys.argv[1], sys.argv[2]
keys = frozenset(dg.AssetKey.from_user_string(k) for k in json.load(open(keys_file)))
repository = ReconstructableRepository.for_module(module, "defs", working_directory=os.getcwd())
job = repository.get_reconstructable_job("__ASSET_JOB").get_subset(asset_selection=keys)
plan = create_execution_plan(job)
with dg.DagsterInstance.get() as instance:
    run = instance.create_run_for_job(
        job_def=job.get_definition(), execution_plan=plan, asset_selection=keys, job_code_origin=job.get_python_origin()
    )
    args = ExecuteRunArgs(job_origin=job.get_python_origin(), run_id=run.run_id, instance_ref=instance.get_ref())
print(json.dumps({"run_id": run.run_id, "args": serialize_value(args)}))
"""

#: What the run worker did (setup, untimed). argv: run id. Prints one JSON line.
RUN_OUTCOME = r"""
import json, sys
import dagster as dg
with dg.DagsterInstance.get() as instance:
    run = instance.get_run_by_id(sys.argv[1])
    stats = instance.get_run_stats(run.run_id)
    def records(kind):
        return [r.event_log_entry for r in instance.get_records_for_run(run.run_id, of_type=kind, limit=10**6).records]
    materialized = {
        e.dagster_event.asset_key.to_user_string() for e in records(dg.DagsterEventType.ASSET_MATERIALIZATION)
    }
    checks = [e.dagster_event.event_specific_data for e in records(dg.DagsterEventType.ASSET_CHECK_EVALUATION)]
print(json.dumps({
    "status": run.status.value, "run": stats.end_time - stats.start_time, "materialized": sorted(materialized),
    "checks": len(checks), "checks_passed": sum(c.passed for c in checks),
}))
"""


@contextmanager
def prepare(quick: bool, workdir: Path) -> Iterator[Setup]:
    measures, rows, notes = {}, [], []
    demo = prepare_demo(workdir / "demo", QUICK_DEMO if quick else FULL_DEMO)
    models = QUICK_MODELS if quick else FULL_MODELS
    synthetic = prepare_synthetic(workdir / "synthetic", models)
    for bench_project in (demo, synthetic):
        label = bench_project.label
        measures.update(side_measures(bench_project, workdir))
        bare = f"bare {label}: {bench_project.bare_command}"
        if bench_project is demo:
            rows.append(
                Row(
                    f"every dbt asset, {label}: our run (in the run process) vs bare `{bench_project.bare_command}`",
                    f"ours {label}: run",
                    bare,
                    GOAL_DEMO,
                )
            )
        rows += [
            Row(
                f"every dbt asset, {label}: ours, the run worker process (interpreter, imports, Definitions, run) vs"
                f" bare `{bench_project.bare_command}`",
                f"ours {label}: process",
                bare,
                GOAL_SYNTHETIC if bench_project is synthetic else None,
            ),
            Row(f"… {label}: stock dagster-dbt's run worker vs bare", f"stock {label}: process", bare),
            Row(f"… {label}: ours vs stock, run worker", f"ours {label}: process", f"stock {label}: process"),
            Row(f"… {label}: CPU time, ours (run worker and dbt) vs bare", f"ours {label}: process CPU", f"{bare} CPU"),
            Row(f"… {label}: CPU time, stock vs bare", f"stock {label}: process CPU", f"{bare} CPU"),
        ]
        if bench_project is synthetic:
            rows.append(Row(f"… {label}: our run alone (run start to end) vs bare", f"ours {label}: run", bare))
        notes.append(bench_project.note)
    notes += [
        "Ours and stock: per repetition a fresh instance (devstack/dagster.yaml) and a run of every dbt asset created"
        " in it as the webserver or daemon creates one (untimed); then, timed, the run worker a run launcher starts:"
        " `python -m dagster api execute_run <args>` (it loads the code location itself: twice, as Dagster 1.13's"
        " worker does for a run with an asset selection); `process` is its wall time, `process CPU` the CPU time of"
        " its process tree (the dbt subprocesses included), `run` the run's start to end from the run storage",
        "Ours: module `pipeline.definitions`, DBT_PROJECT_DIR/DBT_PROFILES_DIR at the project, DUCKDB_PATH at the"
        " repetition's warehouse, other settings in a temp folder; stock: module `bench.stock_dbt`",
        "Bare: `dbt seed` (when the project needs it) then `dbt build`, `--project-dir P --profiles-dir P`, the"
        " working directory at P, timed from the parent (start of the first to exit of the last), CPU likewise",
        "Before every repetition (untimed): the warehouse is copied from its template and `target/` restored to"
        " the untimed `dbt parse`'s manifest and partial-parse file",
    ]
    yield Setup(measures=measures, rows=rows, notes=notes)


class BenchProject:
    """A dbt project with a warehouse template: `reset()` puts both back to the state every repetition starts in.

    `seed_first`: the project's seeds must run before `dbt build` on a fresh warehouse (they feed sources), so bare
    and stock run `dbt seed` first; `settings`: what ours needs beyond the defaults."""

    def __init__(
        self,
        label: str,
        project: Path,
        template: Path,
        warehouse: Path,
        note: str,
        *,
        seed_first: bool,
        settings: dict[str, str],
    ) -> None:
        self.label, self.project, self.template, self.warehouse, self.note = label, project, template, warehouse, note
        self.seed_first, self.settings = seed_first, settings
        self.pristine = project.parent / f"{project.name}.target"
        shutil.copytree(project / "target", self.pristine)

    @property
    def bare_command(self) -> str:
        return "dbt seed && dbt build" if self.seed_first else "dbt build"

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

    from devstack.demo_data import generate as demo_data

    project = root / "dbt_project"
    shutil.copytree(REPO_ROOT / "dbt_project", project, ignore=shutil.ignore_patterns("target", "logs"))
    template = root / "template.duckdb"  # not raw.duckdb: its catalog name would clash with schema raw
    with stopwatch() as made:
        summary = demo_data(
            root / "landing",
            days=size["days"],
            customers=size["customers"],
            start=date.fromisoformat(DEMO_START),
            progress=False,
        )
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
    # One `dbt build` of the whole project, as bare: fct_orders' chain not split out as partitions.
    return BenchProject(
        "demo",
        project,
        template,
        root / "warehouse.duckdb",
        note,
        seed_first=False,
        settings={"DBT_PARTITION_INCREMENTAL": "0"},
    )


def prepare_synthetic(root: Path, models: int) -> BenchProject:
    with stopwatch() as made:
        synthetic = generate(root / "project", models)
        dbt_parse(synthetic.path, clean_env())
    template = root / "sources.duckdb"
    shutil.copy(synthetic.database, template)
    manifest = json.loads((synthetic.path / "target" / "manifest.json").read_text())
    counts: dict[str, int] = {}
    for node in manifest["nodes"].values():
        counts[node["resource_type"]] = counts.get(node["resource_type"], 0) + 1
    incremental = sum(m.materialized == "incremental" for m in synthetic.models)
    note = (
        f"{models:,} models: bench/synthetic.py, {synthetic.layers} layers, {len(synthetic.sources)} source tables of"
        f" {synthetic.rows} rows; manifest: {counts.get('model', 0):,} models, {counts.get('test', 0):,} data tests,"
        f" {len(manifest['unit_tests'])} unit tests, {counts.get('seed', 0)} seeds ({len(synthetic.fed_seeds)} feeding"
        f" sources of the same relation), {counts.get('snapshot', 0)} snapshots, {incremental} incremental models"
        f" (none partitioned), {len(manifest['semantic_models'])} semantic models, {len(manifest['metrics'])}"
        f" metrics, {len(manifest['exposures'])} exposures, 2 vendored packages; views in staging, tables after"
        f" (generated and parsed in {made.seconds:.0f} s, not timed)"
    )
    # The synthetic profile's warehouse is ./warehouse.duckdb in the project (dbt runs there). Default settings.
    return BenchProject(
        f"{models:,} models", synthetic.path, template, synthetic.database, note, seed_first=True, settings={}
    )


def side_measures(bp: BenchProject, workdir: Path) -> dict[str, Callable[[], dict[str, float]]]:
    """ours, stock, bare for one project, in that order (the harness interleaves them)."""
    label = bp.label
    runs = iter(range(1_000_000))
    seen: dict[str, tuple] = {}
    keys_file = workdir / f"{bp.project.name}-{label.replace(' ', '_')}-keys.json"
    keys: dict[str, list[str]] = {}

    def settings(side: str, n: int) -> dict[str, str]:
        home = workdir / "dagster_home" / f"{side}-{label}-{n}"
        home.mkdir(parents=True)
        shutil.copy(INSTANCE_YAML, home)  # the instance `make dev` runs: devstack/dagster.yaml
        return clean_env(
            DBT_PROJECT_DIR=str(bp.project),
            DBT_PROFILES_DIR=str(bp.project),
            DUCKDB_PATH=str(bp.warehouse),
            LANDING_URL=str(workdir / "landing"),
            DBT_ARTIFACTS_URL=str(workdir / "artifacts" / f"{label}-{n}"),
            DAGSTER_HOME=str(home),
            STOCK_DBT_SEED_FIRST="1" if bp.seed_first else "",
            **bp.settings,
        )

    def run_worker(side: str) -> dict[str, float]:
        module, prefix = SIDES[side]
        bp.reset()
        n = next(runs)
        env = settings(side, n)
        if side not in keys:  # the dbt asset keys of the side (untimed); both sides must agree on them
            out, _ = run_python(DBT_KEYS, module, prefix, env=env, what=f"{side} dbt asset keys ({label})")
            keys[side] = out
            other = keys.get("stock" if side == "ours" else "ours")
            assert other is None or other == out, f"{label}: ours and stock have different dbt assets"
            keys_file.write_text(json.dumps(out))
        created, _ = run_python(CREATE_RUN, module, str(keys_file), env=env, what=f"{side} run creation ({label})")
        # The run worker, as the run launcher starts it (DefaultRunLauncher: `python -m dagster api execute_run`).
        worker = [sys.executable, "-m", "dagster", "api", "execute_run", created["args"]]
        done = run_timed(worker, env=env, what=f"{side} run worker ({label})")
        out, _ = run_python(RUN_OUTCOME, created["run_id"], env=env, what=f"{side} run outcome ({label})")
        assert out["status"] == "SUCCESS", out["status"]
        assert out["materialized"] == keys[side], f"{side} ({label}) did not materialize every dbt asset"
        assert out["checks"] == out["checks_passed"] > 0, out
        results = (
            _latest_run_results(workdir / "artifacts" / f"{label}-{n}")
            if side == "ours"
            else _invocation_run_results(bp.project / "target", STOCK_OP)
        )
        _same_work(label, side, _work(results) + (frozenset(bp.relations()),), seen)
        shutil.rmtree(env["DAGSTER_HOME"], ignore_errors=True)
        return {
            f"{side} {label}: process": done.seconds,
            f"{side} {label}: process CPU": done.cpu_seconds,
            f"{side} {label}: run": out["run"],
        }

    def bare() -> dict[str, float]:
        bp.reset()
        env = clean_env(DUCKDB_PATH=str(bp.warehouse))
        commands = ["seed", "build"] if bp.seed_first else ["build"]
        done = [run_dbt(bp.project, command, env=env) for command in commands]
        results = json.loads((bp.project / "target" / "run_results.json").read_text())
        _same_work(label, "bare", _work(results) + (frozenset(bp.relations()),), seen)
        return {
            f"bare {label}: {bp.bare_command}": sum(d.seconds for d in done),
            f"bare {label}: {bp.bare_command} CPU": sum(d.cpu_seconds for d in done),
        }

    return {
        f"ours {label}": lambda: run_worker("ours"),
        f"stock {label}": lambda: run_worker("stock"),
        f"bare {label}": bare,
    }


def _invocation_run_results(target: Path, op: str) -> dict:
    """The run_results.json of the newest invocation folder dagster-dbt made for `op` under `target`."""
    folders = sorted(target.glob(f"{op}-*/run_results.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(folders[-1].read_text())


def _latest_run_results(artifacts: Path) -> dict:
    return json.loads((artifacts / "latest" / "run_results.json").read_text())


def _work(run_results: dict) -> tuple:
    """(nodes built, tests run) by resource type, and that every one succeeded."""
    built: dict[str, int] = {}
    for result in run_results["results"]:
        kind = result["unique_id"].split(".", 1)[0]
        built[kind] = built.get(kind, 0) + 1
        # dbt 1.10+ reports exposures as no-op
        assert result["status"] in ("success", "pass") or kind == "exposure", result["unique_id"]
    return (tuple(sorted(built.items())),)


def _same_work(label: str, side: str, work: tuple, seen: dict[str, tuple]) -> None:
    seen[side] = work
    assert len(set(seen.values())) == 1, f"{label}: the sides did different work: {seen}"


CASE = Case(
    "p2",
    "every dbt asset through Dagster, as a run worker (ours; stock dagster-dbt) vs bare `dbt seed && dbt build`",
    prepare,
)
