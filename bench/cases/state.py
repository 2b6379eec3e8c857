"""P6: state-aware runs and slim CI on a ~200-model project whose sources are raw tables of this code location.

The project is bench/synthetic.py's generator with `landing=True`: ~200 layered models (plus reference and history
models, seeds feeding sources, snapshots, unit tests, a package, exposures, incremental models), 20 source tables
that are raw tables of our ingestion (its contracts file, LANDING_CONTRACTS_PATH; one CSV per table per landing
day), so every dbt input is versioned by Dagster. Default settings, but DBT_PARTITION_INCREMENTAL=0 (the incremental
models are not partitioned, so a build is one dbt invocation, as in P2's demo row).

One repetition, each run in a fresh process (`python -c`, the job executed in process against a persistent SQLite
instance configured by devstack/dagster.yaml, DAGSTER_HOME in the work folder):

1. **full**: the daily build (`daily_build`, tagged as its schedule tags it) of landing day 1 on an empty warehouse
   and instance: every raw table loads, dbt builds every node (no earlier build).
2. **unchanged**: the daily build again, no new file, no code change: the raw tables report "already loaded" (same
   data versions), dbt builds nothing; every dbt node is recorded as reused (asserted: 0 built).
3. **slim CI**: a pull-request copy of the project with one staging model's SQL changed (the staging model whose
   downstream cone is the median of all staging models'), `python -m pipeline.slim_ci` against step 1's production
   (manifest from DBT_ARTIFACTS_URL, warehouse copied read-only); then the same command with no production manifest,
   which falls back to a full build. Asserted: the slim build built exactly the changed model and its descendants.
4. **one new file**: a day-2 file for one raw table (the source whose cone is the median of all sources'), loaded
   as the arrival sensor's run loads it, then a run of every dbt asset as declarative automation launches it.
   Asserted: dbt built exactly that source's downstream cone; the rest is reused.

Goal rows: (a) slim CI's `dbt build` (state:modified+ --defer) against the same command's full `dbt build`, both
timed by the command itself (`seconds.build` in slim_ci.json): the parse and the copy of production are the same
on both sides and are shown in the info rows; (b) the dbt step of the unchanged daily build against the dbt step of
the full one (step start to step success, from the event log): the whole runs (process start, definitions load,
the raw steps) are info rows. (c) is reported as counts under the table, its dbt step as an info row.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.synthetic import CONTRACTS_FILE, generate, write_landing_files
from devstack import INSTANCE_YAML

from ..harness import Case, Row, Setup
from ..processes import clean_env, dbt_parse, run_python, run_timed

FULL_MODELS, QUICK_MODELS = 200, 30
FULL_SOURCES, QUICK_SOURCES = 20, 4
ROWS = 200
GOAL_SLIM = 0.15
GOAL_UNCHANGED = 0.05
SCHEDULE_TAGS = {"dagster/schedule_name": "daily_build_schedule"}
AUTOMATION_TAGS = {"dagster/sensor_name": "default_automation_condition_sensor"}
ARRIVAL_TAGS = {"dagster/sensor_name": "landing_arrival_sensor"}

#: One run, executed in this process against DAGSTER_HOME's instance. argv: a JSON spec {"job": name or null (the
#: implicit asset job), "select": "dbt" | "raw:<table>" | null (the whole job), "partition", "tags"}. Prints one JSON
#: line: the run's success, each step's seconds (start to success), and the dbt nodes (unique ids) it built and reused.
RUN = r"""
import json, sys
import dagster as dg
import pipeline.definitions as location
spec = json.loads(sys.argv[1])
defs = location.defs()
repo = defs.get_repository_def()
from dagster_dbt.asset_utils import DAGSTER_DBT_UNIQUE_ID_METADATA_KEY as UNIQUE_ID
dbt_keys = {
    spec.key: spec.metadata[UNIQUE_ID] for a in repo.assets_defs_by_key.values()
    if a.is_executable and a.node_def.name.startswith("dbt_") for spec in a.specs
}
job = defs.get_job_def(spec["job"]) if spec["job"] else defs.resolve_implicit_global_asset_job_def()
if spec["select"] == "dbt":
    job = job.get_subset(asset_selection=set(dbt_keys))
elif spec["select"]:
    job = job.get_subset(asset_selection={dg.AssetKey(spec["select"].split(":"))})
with dg.DagsterInstance.get() as instance:
    result = job.execute_in_process(
        instance=instance, partition_key=spec["partition"], tags=spec["tags"], raise_on_error=False
    )
    starts, seconds = {}, {}
    for entry in instance.all_logs(result.run_id):
        event = entry.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            starts[event.step_key] = entry.timestamp
        elif event.event_type == dg.DagsterEventType.STEP_SUCCESS:
            seconds[event.step_key] = entry.timestamp - starts[event.step_key]
    built, reused = [], []
    for entry in instance.all_logs(result.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        materialization = entry.asset_materialization
        if materialization.asset_key not in dbt_keys:
            continue
        state = materialization.metadata.get("dbt_state")
        (reused if state is not None and state.value == "reused" else built).append(dbt_keys[materialization.asset_key])
print(json.dumps({
    "success": result.success, "run_id": result.run_id, "seconds": seconds,
    "built": sorted(built), "reused": sorted(reused), "dbt_nodes": len(dbt_keys),
}))
"""


def descendants(manifest: dict, unique_id: str) -> set[str]:
    """The models, seeds and snapshots downstream of `unique_id` in dbt's graph (itself not included)."""
    found: set[str] = set()
    todo = [unique_id]
    while todo:
        for child in manifest["child_map"].get(todo.pop(), []):
            if child not in found and child.split(".")[0] in ("model", "seed", "snapshot"):
                found.add(child)
                todo.append(child)
    return found


def relations(manifest: dict, unique_ids: set[str]) -> set[str]:
    """The nodes of `unique_ids` that dbt builds a relation for (an ephemeral model is compiled into its readers)."""
    nodes = manifest["nodes"]
    return {u for u in unique_ids if nodes[u]["config"].get("materialized") != "ephemeral"}


def median_by_cone(manifest: dict, candidates: list[str]) -> tuple[str, set[str]]:
    """The candidate whose downstream cone has the median size (ties: the first in name order), and its cone."""
    cones = sorted((len(descendants(manifest, c)), c) for c in sorted(candidates))
    size, chosen = cones[(len(cones) - 1) // 2]
    return chosen, descendants(manifest, chosen)


@contextmanager
def prepare(quick: bool, workdir: Path) -> Iterator[Setup]:
    models, sources = (QUICK_MODELS, QUICK_SOURCES) if quick else (FULL_MODELS, FULL_SOURCES)
    project = generate(workdir / "project", models, sources=sources, landing=True)
    today = datetime.now(UTC).date()
    day1, day2 = (today - timedelta(days=2)).isoformat(), (today - timedelta(days=1)).isoformat()
    production = workdir / "production"
    env = clean_env(
        DBT_PROJECT_DIR=str(project.path),
        DBT_PROFILES_DIR=str(project.path),
        DUCKDB_PATH=str(production / "warehouse.duckdb"),
        LANDING_URL=str(production / "landing"),
        LANDING_CONTRACTS_PATH=str(project.path / CONTRACTS_FILE),
        LANDING_START_DATE=day1,
        DBT_ARTIFACTS_URL=str(production / "artifacts"),
        DBT_PARTITION_INCREMENTAL="0",
        DAGSTER_HOME=str(production / "dagster_home"),
    )
    dbt_parse(project.path, env)
    manifest = json.loads((project.path / "target" / "manifest.json").read_text())
    parsed_target = workdir / "parsed_target"
    shutil.copytree(project.path / "target", parsed_target)
    staging = [
        u
        for u, n in manifest["nodes"].items()
        if n["resource_type"] == "model" and n["name"].startswith("stg_") and "reference" not in n["name"]
    ]
    changed_model, model_cone = median_by_cone(manifest, staging)
    synth_sources = [u for u, s in manifest["sources"].items() if s["source_name"] == "synth"]
    new_file_source, source_cone = median_by_cone(manifest, synth_sources)
    source_table = manifest["sources"][new_file_source]["name"]
    dbt_node_count = sum(
        1
        for n in manifest["nodes"].values()
        if n["resource_type"] in ("model", "seed", "snapshot") and n["config"].get("materialized") != "ephemeral"
    )
    counts: dict[str, list[int]] = {}

    def run(spec: dict, what: str) -> tuple[dict, float]:
        out, seconds = run_python(RUN, json.dumps(spec), env=env, what=what)
        if not out.get("success"):
            raise RuntimeError(f"{what}: run {out.get('run_id')} failed (see {env['DAGSTER_HOME']})")
        return out, seconds

    def slim_ci(artifacts: Path, report: Path) -> tuple[dict, float]:
        ci_env = {
            **env,
            "DBT_PROJECT_DIR": str(pr),
            "DBT_PROFILES_DIR": str(pr),
            "DBT_ARTIFACTS_URL": str(artifacts),
            "SLIM_CI_PRODUCTION_DUCKDB_PATH": env["DUCKDB_PATH"],
            "SLIM_CI_DUCKDB_PATH": str(workdir / "ci" / "warehouse.duckdb"),
        }
        argv = [sys.executable, "-m", "pipeline.slim_ci", "--report-dir", str(report)]
        done = run_timed(argv, env=ci_env, what=f"slim CI ({report.name})")
        return json.loads((report / "slim_ci.json").read_text()), done.seconds

    pr = workdir / "pr"

    def reset() -> None:
        """An empty warehouse and instance, day 1's files in the landing folder, the parse's target/."""
        shutil.rmtree(production, ignore_errors=True)
        home = production / "dagster_home"
        home.mkdir(parents=True)
        shutil.copy(INSTANCE_YAML, home / "dagster.yaml")
        write_landing_files(production / "landing", day1, project.sources, ROWS)
        shutil.rmtree(project.path / "target", ignore_errors=True)
        shutil.copytree(parsed_target, project.path / "target")
        shutil.rmtree(pr, ignore_errors=True)
        shutil.rmtree(workdir / "ci", ignore_errors=True)

    def repetition() -> dict[str, float]:
        reset()
        daily = {"job": "daily_build", "select": None, "partition": day1, "tags": SCHEDULE_TAGS}
        full, full_run = run(daily, "the first daily build")
        if full["reused"] or len(full["built"]) != dbt_node_count:
            raise RuntimeError(f"the first build built {len(full['built'])} of {dbt_node_count} dbt nodes")
        unchanged, unchanged_run = run(daily, "the daily build again")
        if unchanged["built"]:
            raise RuntimeError(f"the unchanged daily build rebuilt {unchanged['built']}")

        # (a) a pull request changing one staging model
        shutil.copytree(project.path, pr, ignore=shutil.ignore_patterns("target", "logs"))
        model_file = pr / manifest["nodes"][changed_model]["original_file_path"]
        sql = model_file.read_text()
        model_file.write_text(sql.replace("select id, amount,", "select id, coalesce(amount, 0) as amount,", 1))
        slim, slim_total = slim_ci(production / "artifacts", workdir / "report-slim")
        built = {n["unique_id"] for n in slim["modified"] + slim["downstream"] if "unique_id" in n}
        expected = relations(manifest, {changed_model} | model_cone)
        if slim["build"] != "slim" or slim["failed"] or not expected <= built:
            raise RuntimeError(f"slim CI: {slim['build']} build, failed={slim['failed']}, missing {expected - built}")
        empty = workdir / "no-artifacts"
        empty.mkdir(exist_ok=True)
        full_ci, full_ci_total = slim_ci(empty, workdir / "report-full")
        if full_ci["build"] != "full" or full_ci["failed"]:
            raise RuntimeError(f"slim CI without a production manifest: {full_ci['build']} build")

        # (c) one new file in one raw table
        write_landing_files(production / "landing", day2, [source_table], ROWS // 10, first_id=ROWS + 1)
        arrival = {"job": None, "select": f"raw:{source_table}", "partition": day2, "tags": ARRIVAL_TAGS}
        run(arrival, f"the load of raw/{source_table} day 2")
        automation = {"job": None, "select": "dbt", "partition": None, "tags": AUTOMATION_TAGS}
        cone, cone_run = run(automation, "the dbt run after one new file")
        wanted = relations(manifest, source_cone)
        if set(cone["built"]) != wanted:
            raise RuntimeError(
                f"after one new file in raw/{source_table}: built {len(cone['built'])}, its cone is {len(wanted)};"
                f" extra {sorted(set(cone['built']) - wanted)[:5]}, missing {sorted(wanted - set(cone['built']))[:5]}"
            )
        for name, value in (
            ("slim_built", len(built)),
            ("full_ci_built", len(full_ci["modified"] or []) + len(full_ci["downstream"])),
            ("cone_built", len(cone["built"])),
            ("cone_reused", len(cone["reused"])),
        ):
            counts.setdefault(name, []).append(value)
        return {
            "full_step": full["seconds"]["dbt_build"],
            "unchanged_step": unchanged["seconds"]["dbt_build"],
            "full_run": full_run,
            "unchanged_run": unchanged_run,
            "slim_build": slim["seconds"]["build"],
            "full_ci_build": full_ci["seconds"]["build"],
            "slim_total": slim_total,
            "full_ci_total": full_ci_total,
            "cone_step": cone["seconds"]["dbt_build"],
            "cone_run": cone_run,
        }

    notes = [
        f"Project: bench/synthetic.py, {models} layered models ({len(project.models)} with the reference and history"
        f" models), {len(project.sources)} raw source tables of {ROWS} rows, {len(project.seeds)} seeds,"
        f" {len(project.snapshots)} snapshots, {project.tests} data tests, {project.unit_tests} unit tests;"
        f" {dbt_node_count} dbt assets.",
        f"(a) changed: `{manifest['nodes'][changed_model]['name']}` (median cone of the staging models:"
        f" {len(model_cone)} descendants).",
        f"(c) new file: raw/{source_table} ({ROWS // 10} rows, day 2); its cone:"
        f" {len(relations(manifest, source_cone))} dbt assets of {dbt_node_count}.",
    ]
    setup = Setup(
        measures={"p6": repetition},
        rows=[
            Row(
                "(a) slim CI, one staging model changed: its dbt build vs the full build",
                "slim_build",
                "full_ci_build",
                GOAL_SLIM,
            ),
            Row("(a) the whole slim CI command vs the command building everything", "slim_total", "full_ci_total"),
            Row(
                "(b) daily build, no new data, no code change: dbt step vs the full build's",
                "unchanged_step",
                "full_step",
                GOAL_UNCHANGED,
            ),
            Row("(b) the whole unchanged daily build run vs the full one", "unchanged_run", "full_run"),
            Row("(c) one new file in one raw table: dbt step vs the full build's", "cone_step", "full_step"),
        ],
        notes=notes,
    )
    yield setup
    for name, values in counts.items():
        notes.append(f"{name}: {', '.join(map(str, values))} (median {statistics.median(values):g})")
    setup.notes = notes


CASE = Case("p6", "state-aware runs and slim CI on a ~200-model project whose sources are raw tables of ours", prepare)
