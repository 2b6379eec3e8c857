"""Slim CI (`python -m pipeline.slim_ci`) on a pull request's copy of the dbt project, against a production built here:
raw tables from the demo data, a full `dbt build`, its manifest kept as `latest/` in moto's S3 server."""

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import duckdb
import pytest

from devstack.demo_data import generate
from pipeline import slim_ci
from pipeline.core.objectstore import LocalLandingStore
from pipeline.core.settings import REPO_ROOT, Settings
from pipeline.ingestion.contracts import load_contracts
from pipeline.ingestion.ingest import files_for_days, load_files
from pipeline.ingestion.quarantine import ProcessedAction
from pipeline.transformation.artifacts import ArtifactStore
from tests.conftest import DBT

pytestmark = [pytest.mark.integration, pytest.mark.once]
pytest_plugins = ["tests.s3_fixtures"]

STAGING = "model.tidewater.stg_shop__customers"
STAGING_SQL = Path("models/staging/shop/stg_shop__customers.sql")
EMAIL_TEST = "not_null_stg_shop__customers_email"


@pytest.fixture(scope="module")
def production(tmp_path_factory, module_env):
    """Production: a warehouse with two demo days in its raw tables, fully built by dbt; its target folder (manifest
    and run_results of that build) kept to be published as `latest/`."""
    root = tmp_path_factory.mktemp("slim_ci")
    summary = generate(root / "landing", seed=5, days=2, customers=30, progress=False)
    first = date.fromisoformat(summary["first_day"])
    days = [first + timedelta(days=n) for n in range((date.fromisoformat(summary["last_day"]) - first).days + 1)]
    warehouse = root / "production" / "warehouse.duckdb"
    warehouse.parent.mkdir()
    store = LocalLandingStore(root / "landing")
    with duckdb.connect(str(warehouse)) as conn:
        for contract in load_contracts():
            files = files_for_days(store, contract, days)
            load_files(conn, store, contract, files, processed=ProcessedAction.LEAVE, run_id="seed", log=logging)
    project = root / "production_project"
    shutil.copytree(REPO_ROOT / "dbt_project", project, ignore=shutil.ignore_patterns("target", "logs"))
    subprocess.run(
        [DBT, "build", "--quiet", "--project-dir", str(project), "--profiles-dir", str(project)],
        env={**os.environ, "DUCKDB_PATH": str(warehouse)},
        cwd=project,
        check=True,
    )
    module_env.setenv("DUCKDB_PATH", str(warehouse))
    return {"root": root, "warehouse": warehouse, "project": project, "target": project / "target"}


@pytest.fixture
def artifacts_url(production, s3_bucket):
    """DBT_ARTIFACTS_URL in a fresh moto bucket holding production's last successful build as `latest/`."""
    url = f"s3://{s3_bucket.bucket}/dbt/artifacts"
    ArtifactStore.open(url, endpoint_url=s3_bucket.endpoint_url).save(
        "production-run", "dbt_build", 0, production["target"], succeeded=True
    )
    return url


@pytest.fixture
def checkout(production, tmp_path):
    """A pull request's checkout of the dbt project: production's, as committed (no target/)."""
    project = tmp_path / "pr_project"
    shutil.copytree(production["project"], project, ignore=shutil.ignore_patterns("target", "logs"))
    return project


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_slim_ci(production, project: Path, artifacts_url: str, endpoint_url: str | None, tmp_path: Path):
    """The command as CI runs it; returns (exit status, output, JSON report, the build's run_results)."""
    env = {
        **os.environ,
        "DBT_PROJECT_DIR": str(project),
        "DBT_PROFILES_DIR": str(project),
        "DBT_ARTIFACTS_URL": artifacts_url,
        "SLIM_CI_DUCKDB_PATH": str(tmp_path / "ci" / "warehouse.duckdb"),
    }
    if endpoint_url:
        env["LANDING_ENDPOINT_URL"] = endpoint_url
    before = digest(production["warehouse"])
    report_dir = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.slim_ci", "--report-dir", str(report_dir)],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert digest(production["warehouse"]) == before, "production's warehouse was written"
    assert not production["warehouse"].with_name("warehouse.duckdb.wal").exists()
    report = json.loads((report_dir / "slim_ci.json").read_text()) if (report_dir / "slim_ci.json").exists() else None
    results_file = project / "target" / "run_results.json"
    run_results = json.loads(results_file.read_text()) if results_file.exists() else None
    return done.returncode, output, report, run_results


def descendants(manifest: dict, unique_id: str) -> set[str]:
    found, todo = set(), [unique_id]
    while todo:
        for child in manifest["child_map"].get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def built(run_results: dict) -> set[str]:
    return {r["unique_id"] for r in run_results["results"] if r["unique_id"].split(".")[0] in slim_ci.BUILT_TYPES}


def test_an_edited_model_builds_it_and_its_descendants_and_reports_the_crm_sync(
    production, artifacts_url, s3_bucket, checkout, tmp_path
):
    sql = checkout / STAGING_SQL
    sql.write_text(sql.read_text() + "-- a comment: the model's checksum changes, its result does not\n")

    status, output, report, run_results = run_slim_ci(
        production, checkout, artifacts_url, s3_bucket.endpoint_url, tmp_path
    )

    assert status == 0, output
    manifest = json.loads((checkout / "target" / "manifest.json").read_text())
    family = {STAGING} | descendants(manifest, STAGING)
    expected = {u for u in family if u.split(".")[0] in slim_ci.BUILT_TYPES}
    assert built(run_results) == expected, "exactly the model and its descendants were built"
    assert {"model.tidewater.dim_customers", "snapshot.tidewater.snap_customers"} <= expected
    assert "model.tidewater.fct_orders" not in expected, "the rest is deferred to production"
    tests = {r["unique_id"] for r in run_results["results"] if r["unique_id"].startswith("test.")}
    assert tests and all(set(manifest["parent_map"][t]) & expected for t in tests), "only tests of what was built"
    assert run_results["args"]["defer"] is True
    assert [m["unique_id"] for m in report["modified"]] == [STAGING]
    assert {d["unique_id"] for d in report["downstream"]} == expected - {STAGING}
    impacted = {a["key"]: a for a in report["dagster_assets"]}
    assert impacted["crm_contacts_sync"]["upstream"] == ["dim_customers"]
    assert impacted["crm/contacts"]["upstream"] == ["crm_contacts_sync"]
    assert impacted["crm/contacts"]["kind"] == "external"
    assert "dim_customers" not in impacted, "dbt's own assets are listed as models, not here"
    assert report["tests"] and {t["status"] for t in report["tests"]} == {"pass"}
    assert "## Downstream Dagster assets" in output and "`crm_contacts_sync`" in output
    assert report["build"] == "slim" and report["exit_code"] == 0
    assert list(report["seconds"]) == ["manifest", "copy", "parse", "compare", "build", "impact"]
    # The CI warehouse holds the rebuilt model, and production's models it did not rebuild.
    with duckdb.connect(str(tmp_path / "ci" / "warehouse.duckdb"), read_only=True) as conn:
        assert conn.execute("select count(*) from fct_orders").fetchone()[0] > 0


def test_an_unchanged_project_builds_nothing(production, artifacts_url, s3_bucket, checkout, tmp_path):
    status, output, report, run_results = run_slim_ci(
        production, checkout, artifacts_url, s3_bucket.endpoint_url, tmp_path
    )

    assert status == 0, output
    assert run_results["results"] == []
    assert report["modified"] == [] and report["downstream"] == [] and report["dagster_assets"] == []
    assert report["tests"] == []


def test_a_failing_test_fails_the_check_and_is_named(production, artifacts_url, s3_bucket, checkout, tmp_path):
    sql = checkout / STAGING_SQL
    sql.write_text(sql.read_text().replace("lower(trim(email)) as email", "cast(null as varchar) as email"))

    status, output, report, _ = run_slim_ci(production, checkout, artifacts_url, s3_bucket.endpoint_url, tmp_path)

    assert status == 1, output
    failed = {t["name"]: t for t in report["tests"] if t["status"] == "fail"}
    assert EMAIL_TEST in failed and "configured to fail if != 0" in failed[EMAIL_TEST]["message"]
    assert report["failed"] is True
    assert f"**fail** `{EMAIL_TEST}`" in output


def test_without_a_production_manifest_it_builds_everything_and_says_why(production, checkout, tmp_path):
    empty = tmp_path / "no_artifacts"
    status, output, report, run_results = run_slim_ci(production, checkout, str(empty), None, tmp_path)

    assert status == 0, output
    assert f"Full build: there is no production manifest at {empty}/latest/manifest.json (DBT_ARTIFACTS_URL)" in output
    assert report["build"] == "full" and report["modified"] is None
    assert list(report["seconds"]) == ["manifest", "copy", "parse", "build", "impact"], "nothing to compare with"
    manifest = json.loads((checkout / "target" / "manifest.json").read_text())
    every = {u for u, n in manifest["nodes"].items() if n["resource_type"] in slim_ci.BUILT_TYPES}
    assert built(run_results) == every
    assert "crm_contacts_sync" in {a["key"] for a in report["dagster_assets"]}


# The setup errors: each stops with exit status 2 before anything is copied or built.


def run_main(monkeypatch, caplog, tmp_path, **env) -> int:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with caplog.at_level(logging.ERROR, logger="pipeline.slim_ci"):
        return slim_ci.main(["--report-dir", str(tmp_path / "report")])


def test_the_production_warehouse_is_refused_as_the_ci_warehouse(production, monkeypatch, caplog, tmp_path):
    warehouse = production["warehouse"]
    before = digest(warehouse)
    alias = tmp_path / "elsewhere" / "warehouse.duckdb"
    alias.parent.mkdir()
    alias.symlink_to(warehouse)
    for ci in (warehouse, alias):
        caplog.clear()
        status = run_main(
            monkeypatch, caplog, tmp_path, SLIM_CI_DUCKDB_PATH=str(ci), DBT_ARTIFACTS_URL=str(tmp_path / "none")
        )
        assert status == slim_ci.EXIT_SETUP
        assert "SLIM_CI_DUCKDB_PATH" in caplog.text and "SLIM_CI_PRODUCTION_DUCKDB_PATH" in caplog.text
    assert digest(warehouse) == before
    assert not (tmp_path / "report").exists()


def test_a_profile_that_ignores_duckdb_path_is_refused(production, monkeypatch, caplog, tmp_path):
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    hard_coded = (REPO_ROOT / "dbt_project" / "profiles.yml").read_text()
    hard_coded = hard_coded.replace(
        "{{ env_var('DUCKDB_PATH', '../.data/warehouse.duckdb') }}", str(production["warehouse"])
    )
    (profiles / "profiles.yml").write_text(hard_coded)
    status = run_main(
        monkeypatch,
        caplog,
        tmp_path,
        DBT_PROFILES_DIR=str(profiles),
        DBT_PROJECT_DIR=str(production["project"]),
        SLIM_CI_DUCKDB_PATH=str(tmp_path / "ci" / "warehouse.duckdb"),
        DBT_ARTIFACTS_URL=str(tmp_path / "none"),
    )
    assert status == slim_ci.EXIT_SETUP
    assert f"writes {production['warehouse']}, not the CI warehouse" in caplog.text
    assert not (tmp_path / "ci" / "warehouse.duckdb").exists(), "refused before the copy"


def test_a_busy_production_warehouse_says_retry_or_use_a_snapshot(production, tmp_path):
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('open', flush=True); input()",
        ]
        + [str(production["warehouse"])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "open"
        with pytest.raises(slim_ci.SetupError, match="busy.*Retry.*SLIM_CI_PRODUCTION_DUCKDB_PATH at a snapshot"):
            slim_ci.copy_production(production["warehouse"], tmp_path / "ci" / "warehouse.duckdb")
    finally:
        writer.communicate("\n", timeout=30)


def test_an_unreadable_production_manifest_is_a_reason_for_a_full_build(production, s3_bucket, tmp_path):
    folder = tmp_path / "artifacts"
    (folder / "latest").mkdir(parents=True)
    (folder / "latest" / "manifest.json").write_text("{not json")
    local = Settings.from_env({"DBT_ARTIFACTS_URL": str(folder)})
    manifest, reason = slim_ci.production_manifest(local, tmp_path / "state")
    assert manifest is None and reason.startswith(f"the production manifest {folder}/latest/manifest.json")
    assert "(DBT_ARTIFACTS_URL) is not JSON" in reason

    # An S3 endpoint nobody answers at (moto's port is taken by moto; port 9 of loopback, discard, is closed).
    unreachable = Settings.from_env(
        {"DBT_ARTIFACTS_URL": f"s3://{s3_bucket.bucket}/dbt", "LANDING_ENDPOINT_URL": "http://127.0.0.1:9"}
    )
    manifest, reason = slim_ci.production_manifest(unreachable, tmp_path / "state")
    assert manifest is None and "(DBT_ARTIFACTS_URL) could not be read" in reason
