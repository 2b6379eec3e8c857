"""A sync whose model was never built in the warehouse fails at once, naming the model, its relation and what to do,
instead of retrying DuckDB's CatalogException three times."""

import dagster as dg
import duckdb
import pytest

from pipeline.activation.assets import build_sync_asset
from pipeline.activation.destinations.crm_contacts import CrmResource
from pipeline.activation.syncs import ResolvedSync, load_syncs
from pipeline.core.resources import WarehouseResource

pytestmark = pytest.mark.integration

DIM = dg.AssetKey("dim_customers")


def sync_run(tmp_path, relation: str) -> dg.ExecuteInProcessResult:
    spec = next(s for s in load_syncs() if s.name == "crm_contacts_sync")
    sync = build_sync_asset(ResolvedSync(spec, DIM, relation))
    db = tmp_path / "w.duckdb"
    duckdb.connect(str(db)).close()  # a warehouse that exists, without the model's table
    return dg.materialize(
        [sync],
        resources={
            "warehouse": WarehouseResource(path=str(db)),
            # never reached: the sync stops before it opens a connection to the CRM
            "crm": CrmResource(base_url="http://127.0.0.1:9", token="unused"),
        },
        instance=dg.DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def test_a_model_never_built_fails_the_sync_without_retries(tmp_path):
    result = sync_run(tmp_path, '"w"."main"."dim_customers"')
    assert not result.success
    events = [e.event_type_value for e in result.all_events]
    assert "STEP_UP_FOR_RETRY" not in events and events.count("STEP_FAILURE") == 1
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    description = failure.step_failure_data.user_failure_data.description
    assert description == (
        f'Sync crm_contacts_sync reads dbt model dim_customers, whose table "w"."main"."dim_customers" does not exist'
        f" in the warehouse {tmp_path / 'w.duckdb'}: the model has not been built there yet. Materialize"
        " dim_customers (with its upstream assets, or Materialize all), then this sync."
    )
    assert "CatalogException" not in str(failure.step_failure_data.error)
