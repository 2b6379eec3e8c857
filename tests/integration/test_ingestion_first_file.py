"""A new table's first landed file breaks its contract: the run fails with the quarantine message and the failed
`landing_contract` check, like any rejected file (it failed on the raw table not existing yet), and leaves the
raw table created, empty, for the dbt sources that read it."""

import dagster as dg
import duckdb

from pipeline.core.resources import LandingResource, WarehouseResource
from pipeline.ingestion.assets import build_ingestion_asset
from pipeline.ingestion.contracts import load_contracts
from pipeline.ingestion.quarantine import ProcessedAction

DAY = "2026-11-02"


def test_a_new_tables_rejected_first_file_fails_with_the_quarantine_message_and_check(tmp_path):
    contract = {c.table: c for c in load_contracts()}["customers"]
    key = f"shop/{DAY}/customers.csv"
    (tmp_path / "landing" / key).parent.mkdir(parents=True)
    (tmp_path / "landing" / key).write_text("customer_id,nickname\n1,ann\n")
    asset = build_ingestion_asset(contract, dg.DailyPartitionsDefinition(start_date=DAY), ProcessedAction.MOVE)
    resources = {
        "warehouse": WarehouseResource(path=str(tmp_path / "w.duckdb")),
        "landing": LandingResource(url=str(tmp_path / "landing")),
    }

    result = dg.materialize(
        [asset], partition_key=DAY, resources=resources, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
    )

    assert not result.success
    quarantined = f"quarantine/{DAY}/shop/customers.csv"
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.error.message
    assert f"{key}: missing required column(s)" in message and f"-> quarantined at {quarantined}" in message
    [evaluation] = result.get_asset_check_evaluations()
    assert (evaluation.check_name, evaluation.passed) == ("landing_contract", False)
    assert (tmp_path / "landing" / quarantined).exists()
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM raw.customers").fetchone() == (0,)
