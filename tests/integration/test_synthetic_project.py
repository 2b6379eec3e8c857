"""The synthetic dbt project (bench/synthetic.py) parses to the planned graph, with every shape a real project has,
and `dbt seed && dbt build`s cleanly (offline: its packages are vendored)."""

import json
import subprocess

import duckdb
import pytest

from bench.synthetic import generate
from tests.conftest import DBT, dbt_parse

pytestmark = pytest.mark.integration


def test_parses_to_the_planned_shapes_and_builds(tmp_path):
    project = generate(tmp_path / "synthetic", 60, seed=0)
    manifest = json.loads(dbt_parse(project.path).read_text())
    nodes = manifest["nodes"].values()
    models = {n["name"]: n for n in nodes if n["resource_type"] == "model" and n["package_name"] == "synthetic"}
    assert set(models) == set(project.by_name) | {"metricflow_time_spine"}
    assert {n["name"] for n in nodes if n["package_name"] == "synth_audit"} == set(project.package_models)
    assert sum(n["resource_type"] == "test" for n in nodes) == project.tests
    assert len(manifest["unit_tests"]) == project.unit_tests > 0
    assert {n["name"] for n in nodes if n["resource_type"] == "seed"} == {s.name for s in project.seeds}
    assert {n["name"] for n in nodes if n["resource_type"] == "snapshot"} == {s.name for s in project.snapshots}
    assert {s["name"] for s in manifest["semantic_models"].values()} == set(project.semantic_models)
    assert {m["name"] for m in manifest["metrics"].values()} == set(project.metrics)
    assert {e["name"] for e in manifest["exposures"].values()} == set(project.exposures)
    assert any(m["package_name"] == "synth_utils" for m in manifest["macros"].values())
    assert manifest["groups"]
    for name, node in models.items():
        if name == "metricflow_time_spine":
            continue
        planned = project.by_name[name]
        upstream = {p.rsplit(".", 1)[-1] for p in node["depends_on"]["nodes"]}
        assert upstream == (set(planned.parents) | ({planned.seed} if planned.seed else set()) or {planned.source})
        assert node["config"]["materialized"] == planned.materialized
        if planned.kind == "layered":
            assert node["config"]["group"] == planned.domain and node["config"]["meta"]["owner"]
    # A seed and the source over its table name the same relation; dbt relates neither to the other.
    sources = {s["name"]: s for s in manifest["sources"].values() if s["source_name"] == "reference_data"}
    seeds = {n["name"]: n for n in nodes if n["resource_type"] == "seed"}
    for name in project.fed_seeds:
        assert sources[name]["relation_name"] == seeds[name]["relation_name"]

    env_dir = ["--profiles-dir", "."]
    for command in (["seed"], ["build"]):
        done = subprocess.run([DBT, *command, *env_dir], cwd=project.path, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout[-3000:]
    results = json.loads((project.path / "target" / "run_results.json").read_text())["results"]
    assert {r["status"] for r in results if not r["unique_id"].startswith("exposure.")} == {"success", "pass"}
    assert {r["status"] for r in results if r["unique_id"].startswith("exposure.")} == {"no-op"}  # dbt 1.10+
    with duckdb.connect(str(project.database), read_only=True) as conn:
        last = next(m.name for m in reversed(project.models) if m.kind == "layered" and m.materialized == "table")
        assert conn.execute(f"select count(*) = count(distinct id) from {last}").fetchone() == (True,)
        assert conn.execute("select count(*) from main.audit_runs").fetchone()[0] == 2  # the package's hook ran


def test_with_landing_files_its_sources_are_ingestion_assets_and_a_day_builds(tmp_path, module_env):
    """`generate(landing=True)` (bench P6): its contracts file, through LANDING_CONTRACTS_PATH, makes its source tables
    raw ingestion assets upstream of its staging models; a day's files load and the whole graph builds on them (with
    the default settings: its incremental models read raw tables, so they and their upstream are partitioned). The
    quick bench (test_bench_quick, P6) runs its daily builds, slim CI and a new file on it."""
    import dagster as dg

    from bench.synthetic import CONTRACTS_FILE, write_landing_files

    project = generate(tmp_path / "synthetic", 30, sources=3, landing=True)
    day = "2026-11-30"
    write_landing_files(tmp_path / "landing", day, project.sources, 50)
    for name, value in {
        "DBT_PROJECT_DIR": str(project.path),
        "DBT_PROFILES_DIR": str(project.path),
        "DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
        "LANDING_URL": str(tmp_path / "landing"),
        "LANDING_CONTRACTS_PATH": str(project.path / CONTRACTS_FILE),
        "LANDING_START_DATE": day,
        "DBT_ARTIFACTS_URL": str(tmp_path / "artifacts"),
    }.items():
        module_env.setenv(name, value)
    dbt_parse(project.path)
    from pipeline.definitions import defs

    definitions = defs()
    specs = {s.key: s for s in definitions.resolve_all_asset_specs()}
    raw = {dg.AssetKey(["raw", name]) for name in project.sources}
    assert raw <= set(specs) and not any(s.group_name == "external_sources" for s in specs.values())
    staging = [m for m in project.models if m.layer == 0 and m.kind == "layered"]
    for model in staging:
        assert {d.asset_key for d in specs[dg.AssetKey(model.name)].deps} == {dg.AssetKey(["raw", model.source])}

    job = definitions.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(partition_key=day, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    assert result.success
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as conn:
        assert conn.execute(f"select count(*) from raw.{project.sources[0]}").fetchone()[0] == 50
        assert conn.execute(f"select count(*) from main.{staging[0].name}").fetchone()[0] == 50
