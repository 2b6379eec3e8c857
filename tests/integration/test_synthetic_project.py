"""The synthetic dbt project (bench/synthetic.py) parses to the planned graph and `dbt build`s cleanly."""

import json
import subprocess

import duckdb
import pytest

from bench.synthetic import generate
from tests.conftest import DBT, dbt_parse

pytestmark = pytest.mark.integration


def test_parses_to_the_planned_layers_and_builds(tmp_path):
    project = generate(tmp_path / "synthetic", 30, seed=5)
    manifest = json.loads(dbt_parse(project.path).read_text())
    models = {n["name"]: n for n in manifest["nodes"].values() if n["resource_type"] == "model"}
    assert set(models) == set(project.by_name)
    tests = [n for n in manifest["nodes"].values() if n["resource_type"] == "test"]
    assert len(tests) == project.tests
    for name, node in models.items():
        planned = project.by_name[name]
        parents = {models_name for models_name in planned.parents}
        assert {p.rsplit(".", 1)[-1] for p in node["depends_on"]["nodes"]} == (parents or {planned.source})
        assert node["config"]["group"] == planned.domain and node["config"]["meta"]["owner"]
    assert manifest["groups"]

    build = subprocess.run([DBT, "build", "--profiles-dir", "."], cwd=project.path, capture_output=True, text=True)
    assert build.returncode == 0, build.stdout[-3000:]
    with duckdb.connect(str(project.database), read_only=True) as conn:
        last = project.models[-1].name
        assert conn.execute(f"select count(*), count(distinct id) from {last}").fetchone() == (200, 200)
