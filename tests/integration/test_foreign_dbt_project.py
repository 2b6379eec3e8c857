"""Any dbt-duckdb project loads and builds through DBT_PROJECT_DIR, without edits to it."""

import json
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from tests.conftest import dbt_parse

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "harbor_ledger"


@pytest.fixture(scope="module")
def harbor(tmp_path_factory, module_env):
    project = tmp_path_factory.mktemp("foreign") / "harbor_ledger"
    shutil.copytree(FIXTURE, project)
    module_env.setenv("DBT_PROJECT_DIR", str(project))
    module_env.setenv("DUCKDB_PATH", str(project.parent / "unused.duckdb"))
    module_env.setenv("LANDING_URL", str(project.parent / "landing"))
    dbt_parse(project)
    from pipeline.definitions import defs

    return project, defs()


def test_loads_with_its_own_shape(harbor):
    _, defs = harbor
    specs = {s.key: s for s in defs.resolve_all_asset_specs()}
    assert {dg.AssetKey(k) for k in ("accounts", "base_transactions", "account_balances", "monthly_flows")} <= set(
        specs
    )
    # A source no ingestion asset feeds is an external asset upstream of the model that reads it.
    assert specs[dg.AssetKey(["bank", "transactions"])].group_name == "external_sources"
    assert dg.AssetKey(["bank", "transactions"]) in {d.asset_key for d in specs[dg.AssetKey("base_transactions")].deps}
    # Groups follow its folders; our demo syncs are left out because it has no dim_customers.
    assert specs[dg.AssetKey("monthly_flows")].group_name == "ledger"
    assert not any(k.path[-1] == "crm_contacts_sync" for k in specs)
    checks = defs.resolve_asset_graph().asset_check_keys
    assert any(c.name.startswith("unique_account_balances") for c in checks)


def test_materializes_every_dbt_asset(harbor):
    project, defs = harbor
    job = defs.resolve_implicit_global_asset_job_def()
    dbt_keys = {k for k in job.asset_layer.executable_asset_keys if k.path[0] != "raw"}
    result = job.get_subset(asset_selection=dbt_keys).execute_in_process(instance=dg.DagsterInstance.ephemeral())
    assert result.success
    materialized = {m.asset_key: m for m in result.asset_materializations_for_node("dbt_build")}
    assert set(materialized) == dbt_keys
    assert materialized[dg.AssetKey("account_balances")].metadata["dagster/row_count"].value == 3
    checks = [e for e in result.get_asset_check_evaluations()]
    assert checks and all(c.passed for c in checks)
    with duckdb.connect(str(project / "harbor.duckdb"), read_only=True) as conn:
        assert conn.execute("select count(*) from monthly_flows").fetchone()[0] == 5


def test_events_from_run_results_match_dagster_dbts_from_the_json_log(harbor):
    """On DuckDB dbt prints a text log and the results are read from run_results.json (`dbt_log_args`): the
    events made from it are the ones dagster-dbt makes from the JSON log's result lines, field for field."""
    from dagster_dbt import DbtCliResource

    from pipeline.transformation.assets import read_run_results, result_events
    from pipeline.transformation.project import dbt_executable

    project, _ = harbor
    manifest = json.loads((project / "target" / "manifest.json").read_text())
    dbt = DbtCliResource(project_dir=str(project), profiles_dir=str(project), dbt_executable=dbt_executable())
    invocation = dbt.cli(["build"], manifest=manifest)
    streamed = list(invocation.stream())  # JSON log, as dagster-dbt runs dbt by default
    built = result_events(invocation, read_run_results(invocation))

    def fields(event) -> tuple:
        metadata = {k: v for k, v in event.metadata.items() if k != "Execution Duration"}
        return (
            type(event).__name__,
            event.asset_key,
            getattr(event, "check_name", None),
            getattr(event, "passed", None),
            getattr(event, "severity", None),
            metadata,
        )

    assert len(streamed) == 7  # 4 models and seeds, 3 tests
    assert any(isinstance(e, dg.AssetCheckEvaluation) for e in streamed)
    assert sorted(map(fields, built), key=repr) == sorted(map(fields, streamed), key=repr)
    # Durations come from the result's compile and execute timing, which lie within the node's span in the log.
    durations = {
        (e.asset_key, getattr(e, "check_name", None)): e.metadata["Execution Duration"].value for e in streamed
    }
    for event in built:
        streamed_duration = durations[(event.asset_key, getattr(event, "check_name", None))]
        assert 0 < event.metadata["Execution Duration"].value <= streamed_duration + 0.001
