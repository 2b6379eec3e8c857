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
