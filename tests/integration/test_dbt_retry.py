"""A failed dbt build is retried for what failed only (dbt retry semantics), from the artifacts the attempt kept."""

import json
import os
import shutil
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from pipeline.transformation.artifacts import is_invocation_folder
from tests.conftest import dbt_parse

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "harbor_ledger"
# Reads a file that does not exist on the first attempt: the kind of error a retry heals.
FLAKY = """select balances.* from {{ ref('account_balances') }} as balances
cross join read_csv('{{ env_var("HARBOR_FLAKY_MARKER") }}', header = true) as marker"""
AFTER_FLAKY = "select count(*) as accounts from {{ ref('flaky_balances') }}"


@pytest.fixture(scope="module")
def project(tmp_path_factory, module_env):
    root = tmp_path_factory.mktemp("retry")
    project = root / "harbor_ledger"
    shutil.copytree(FIXTURE, project)
    (project / "models" / "ledger" / "flaky_balances.sql").write_text(FLAKY)
    (project / "models" / "ledger" / "after_flaky.sql").write_text(AFTER_FLAKY)
    module_env.setenv("HARBOR_FLAKY_MARKER", str(root / "marker.csv"))
    module_env.setenv("DBT_PROJECT_DIR", str(project))
    module_env.setenv("DUCKDB_PATH", str(root / "unused.duckdb"))
    module_env.setenv("LANDING_URL", str(root / "landing"))
    module_env.setenv("DBT_ARTIFACTS_URL", str(root / "artifacts"))
    dbt_parse(project)
    return root


def heal_after_first_attempt(root: Path) -> threading.Thread:
    """Creates the marker file once attempt 0 has kept its artifacts (i.e. failed), before the retry starts."""

    def wait_and_heal() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if list((root / "artifacts" / "runs").glob("*/dbt_build/attempt-0/run_results.json")):
                (root / "marker.csv").write_text("ok\n1\n")
                return
            time.sleep(0.2)

    thread = threading.Thread(target=wait_and_heal, daemon=True)
    thread.start()
    return thread


def results_of(root: Path, run_id: str, attempt: int) -> dict[str, str]:
    path = root / "artifacts" / "runs" / run_id / "dbt_build" / f"attempt-{attempt}" / "run_results.json"
    return {r["unique_id"].split(".")[-1]: r["status"] for r in json.loads(path.read_text())["results"]}


def test_the_retry_rebuilds_only_what_failed_or_was_skipped(project):
    from pipeline.definitions import defs

    definitions = defs()
    job = definitions.resolve_implicit_global_asset_job_def()
    dbt_keys = {k for k in job.asset_layer.executable_asset_keys if k.path[0] != "raw"}
    healer = heal_after_first_attempt(project)
    result = job.get_subset(asset_selection=dbt_keys).execute_in_process(instance=dg.DagsterInstance.ephemeral())
    healer.join(timeout=1)
    assert result.success, "the retry healed the build"

    first, second = results_of(project, result.run_id, 0), results_of(project, result.run_id, 1)
    assert first["flaky_balances"] == "error" and first["after_flaky"] == "skipped"
    assert first["account_balances"] == "success"
    assert {k for k, v in second.items()} == {"flaky_balances", "after_flaky"}, "only the unfinished nodes ran again"
    assert set(second.values()) == {"success"}
    # Every dbt asset was materialized exactly once across the two attempts.
    materialized = [m.asset_key for m in result.asset_materializations_for_node("dbt_build")]
    assert sorted(materialized) == sorted(dbt_keys)
    # The successful attempt became the state for slim CI.
    latest = json.loads((project / "artifacts" / "latest" / "run_results.json").read_text())
    assert {r["unique_id"].split(".")[-1] for r in latest["results"]} == {"flaky_balances", "after_flaky"}
    assert os.path.exists(project / "artifacts" / "latest" / "manifest.json")
    # target/ keeps the failed attempt's own folder (its dbt.log), not the successful one's.
    kept = [p for p in (project / "harbor_ledger" / "target").iterdir() if is_invocation_folder(p)]
    assert len(kept) == 1
    assert "flaky_balances" in (kept[0] / "dbt.log").read_text()
