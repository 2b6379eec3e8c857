"""A 7-day backfill: one run for the whole range (raw and the incremental dbt models alike), which stops at the
first failure instead of building marts and sending syncs on top of a half-loaded week."""

import dagster as dg
import duckdb
import pytest

from devstack.demo_data import generate


@pytest.fixture(scope="module")
def week(module_env, demo_manifest, tmp_path_factory):
    root = tmp_path_factory.mktemp("backfill")
    summary = generate(root / "landing", seed=11, days=7, customers=40, progress=False)
    module_env.setenv("LANDING_URL", str(root / "landing"))
    module_env.setenv("DUCKDB_PATH", str(root / "warehouse.duckdb"))
    from pipeline.definitions import defs

    return root, summary, defs()


def test_a_week_backfill_is_one_run_and_stops_at_the_first_failure(week):
    root, summary, defs = week
    days = sorted({key.split("/")[1] for key in summary["files"]})
    assert len(days) == 7
    # Day 3's customer export arrives broken: the contract check quarantines it and the load fails.
    [broken] = [p for p in (root / "landing" / "shop" / days[2]).iterdir() if p.name.startswith("customers.")]
    broken.write_text("not,the,customers,export\n1,2,3,4\n")

    job = defs.resolve_job_def("daily_build")
    result = job.execute_in_process(
        instance=dg.DagsterInstance.ephemeral(),
        tags={"dagster/asset_partition_range_start": days[0], "dagster/asset_partition_range_end": days[-1]},
        raise_on_error=False,
    )
    assert not result.success
    failed = {e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE}
    assert failed == {"raw__customers"}
    executed = {e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START}
    assert {"raw__orders", "raw__payments"} <= executed, "the other tables of the week loaded"
    # Nothing downstream of the broken table was built, and nothing was sent: Dagster runs the dbt steps only for
    # the models whose upstream loaded (e.g. the seed, products) and skips the rest.
    graph = defs.resolve_asset_graph()
    raw_customers = dg.AssetKey(["raw", "customers"])
    downstream = {k for k in graph.get_all_asset_keys() if raw_customers in set(graph.upstream_key_iterator(k))}
    materialized = {m.materialization.asset_key for m in result.get_asset_materialization_events()}
    assert dg.AssetKey("dim_customers") in downstream and dg.AssetKey("crm_contacts_sync") in downstream
    assert not materialized & downstream, "nothing built on top of the broken table"
    assert not executed & {"crm_contacts_sync", "segment_summary_webhook"}, "nothing sent"
    assert (root / "landing" / "quarantine" / days[2] / "shop").exists()
    with duckdb.connect(str(root / "warehouse.duckdb"), read_only=True) as conn:
        loaded_days = conn.execute("select count(distinct _landing_date) from raw.orders").fetchone()[0]
    assert loaded_days == 7, "the whole range loaded in the one run"
