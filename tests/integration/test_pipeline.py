"""The whole graph on demo data: temp landing zone + temp DuckDB + the real local CRM and webhook servers."""

import json
import os
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import httpx
import pytest

from devstack import crm as crm_server
from devstack import webhook_receiver
from devstack.demo_data import generate
from devstack.serve import ServerThread
from pipeline import fastpaths

TOKEN = "test-token"
SECRET = "whsec-pipeline"
DIM_CUSTOMERS = dg.AssetKey("dim_customers")
SYNC = dg.AssetKey("crm_contacts_sync")
CRM_CONTACTS = dg.AssetKey(["crm", "contacts"])
WEBHOOK_SYNC = dg.AssetKey("segment_summary_webhook")
RAW_TABLES = ("customers", "products", "orders", "order_items", "payments")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, module_env, demo_manifest):
    root = tmp_path_factory.mktemp("pipeline")
    summary = generate(root / "landing", seed=7, days=4, customers=60, progress=False)
    with (
        ServerThread(crm_server.create_app(root / "crm.sqlite", token=TOKEN)) as crm,
        ServerThread(webhook_receiver.create_app()) as hooks,
        ServerThread(webhook_receiver.create_app(secret=SECRET)) as signed,
    ):
        module_env.setenv("LANDING_URL", str(root / "landing"))
        module_env.setenv("DUCKDB_PATH", str(root / "warehouse.duckdb"))
        module_env.setenv("CRM_URL", crm.url)
        module_env.setenv("CRM_TOKEN", TOKEN)
        module_env.setenv("SLACK_WEBHOOK_URL", f"{hooks.url}/services/T0/B0/slack")
        module_env.setenv("WEBHOOK_URL", f"{signed.url}/hooks")
        module_env.setenv("WEBHOOK_SECRET", SECRET)
        from pipeline.definitions import defs

        yield {
            "root": root,
            "summary": summary,
            "crm": crm.url,
            "hooks": hooks.url,
            "signed": signed.url,
            "defs": defs(),
        }


def crm_get(stack, path: str, **params) -> dict:
    response = httpx.get(f"{stack['crm']}{path}", params=params, headers={"Authorization": f"Bearer {TOKEN}"})
    response.raise_for_status()
    return response.json()


def test_graph_runs_from_the_bucket_to_the_crm(stack):
    graph = stack["defs"].resolve_asset_graph()
    keys = graph.get_all_asset_keys()
    # Landing -> raw: each raw table hangs off its system's landing prefix.
    for table in RAW_TABLES:
        system = "billing" if table == "payments" else "shop"
        assert graph.get(dg.AssetKey(["raw", table])).parent_keys == {dg.AssetKey(["landing", system])}
    # raw -> dbt staging, through the sources' meta.dagster.asset_key (no ingestion keys in Python).
    staging = {k for k in keys if graph.get(k).group_name == "staging"}
    assert {p for k in staging for p in graph.get(k).parent_keys} == {dg.AssetKey(["raw", t]) for t in RAW_TABLES}
    # mart -> sync -> CRM object, and the Slack summary after the sync.
    assert graph.get(SYNC).parent_keys == {DIM_CUSTOMERS}
    assert graph.get(CRM_CONTACTS).parent_keys == {SYNC}
    assert graph.get(dg.AssetKey("slack_run_summary")).parent_keys == {SYNC, WEBHOOK_SYNC}
    assert graph.get(dg.AssetKey(["webhook", "segments"])).parent_keys == {WEBHOOK_SYNC}
    # And the path is unbroken: everything from both landing prefixes is upstream of the CRM object.
    upstream = graph.upstream_key_iterator(CRM_CONTACTS)
    assert {dg.AssetKey(["landing", "shop"]), dg.AssetKey(["landing", "billing"]), DIM_CUSTOMERS} <= set(upstream)
    groups = {graph.get(k).group_name for k in keys}
    assert {"landing", "ingestion", "staging", "intermediate", "marts", "activation", "destinations"} <= groups
    assert graph.get(DIM_CUSTOMERS).owners, "owners come from dbt meta"
    checks = graph.asset_check_keys
    assert len(checks) >= 20 and any(c.asset_key == DIM_CUSTOMERS for c in checks)


def test_a_dbt_subset_builds_on_an_empty_warehouse(stack):
    """An asset backfill launches the dbt assets in waves (each as its upstream partitions finish): the seed
    alone must build although relationships tests join it to marts that do not exist yet."""
    job = stack["defs"].resolve_implicit_global_asset_job_def()
    result = job.get_subset(asset_selection={dg.AssetKey("country_regions")}).execute_in_process(
        instance=dg.DagsterInstance.ephemeral()
    )
    assert result.success
    assert [m.asset_key for m in result.get_asset_materialization_events()] == [dg.AssetKey("country_regions")]


def test_materialize_all(stack):
    """What "Materialize all" launches: every raw partition (as one run per asset, single-run backfill policy),
    then dbt and activation once."""
    defs = stack["defs"]
    first, last = stack["summary"]["first_day"], stack["summary"]["last_day"]
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=dg.DagsterInstance.ephemeral(),
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
    )
    assert result.success
    mats = {m.asset_key: m.metadata for m in result.get_asset_materialization_events() for m in [m.materialization]}

    rows = stack["summary"]["rows"]
    for table in RAW_TABLES:
        meta = mats[dg.AssetKey(["raw", table])]
        assert meta["rows_loaded"].value == rows[table]
        assert meta["files"].value == 4 and meta["bytes"].value > 0

    # Loaded files moved under processed/ (LANDING_PROCESSED_ACTION=move), so the landing prefixes hold only
    # what still waits to be loaded.
    landing = stack["root"] / "landing"
    assert not [p for p in (landing / "shop").rglob("*") if p.is_file()]
    assert len([p for p in (landing / "processed").rglob("*") if p.is_file()]) == len(stack["summary"]["files"])

    with duckdb.connect(str(stack["root"] / "warehouse.duckdb"), read_only=True) as conn:
        raw_orders, distinct_orders = conn.execute(
            "select count(*), count(distinct order_id) from raw.orders"
        ).fetchone()
        assert raw_orders > distinct_orders, "demo data re-delivers orders whose status changed"
        assert conn.execute("select count(*) from fct_orders").fetchone()[0] == distinct_orders
        customers = conn.execute("select count(*) from dim_customers").fetchone()[0]
        assert customers == conn.execute("select count(distinct customer_id) from raw.customers").fetchone()[0]
        latest = conn.execute(
            "select customer_id, email, customer_segment from dim_customers order by customer_id desc limit 1"
        ).fetchone()

    if fastpaths.enabled():  # rows are counted inside the dbt process (a fast path)
        assert mats[DIM_CUSTOMERS]["dagster/row_count"].value == customers
    # Run figures the UI plots on each model's page: its timing, rows, and its tests in this run (one per check).
    dbt_checks = [
        (e.event_specific_data.asset_key, e.step_key)
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION and e.step_key.startswith("dbt_")
    ]
    built_in = {m.asset_key: m.step_key for m in result.get_asset_materialization_events()}
    for key in (DIM_CUSTOMERS, dg.AssetKey("fct_orders")):  # from the two invocations: unpartitioned, incremental
        model = mats[key]
        own = [k for k, step in dbt_checks if k == key and step == built_in[key]]
        assert own and model["execution_seconds"].value > 0
        assert (model["dbt_tests_passed"].value, model["dbt_tests_failed"].value) == (len(own), 0)
    # Every model and table-like seed built has its figures; each check comes after its model's materialization.
    dbt_mats = [m for m in result.get_asset_materialization_events() if m.step_key.startswith("dbt_")]
    assert all("execution_seconds" in m.materialization.metadata for m in dbt_mats)
    built, seen = {m.asset_key for m in dbt_mats}, set()
    for event in result.all_events:
        if event.is_step_materialization:
            seen.add(event.asset_key)
        elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            key = event.event_specific_data.asset_key
            assert key not in built or key in seen, f"a check of {key} before its materialization"
    # The invocation's artifacts are kept by run id, and as the latest state for slim CI.
    artifacts = Path(os.environ["DBT_ARTIFACTS_URL"])
    for name in ("manifest.json", "run_results.json"):
        assert (artifacts / "runs" / result.run_id / "dbt_build" / "attempt-0" / name).exists()
        assert (artifacts / "runs" / result.run_id / "dbt_incremental" / "attempt-0" / name).exists()
        assert (artifacts / "latest" / name).exists()
    # The incremental model ran once for the whole partition range, with the range (widened by the lookback) as
    # dbt vars; every day of the range is materialized.
    incremental = artifacts / "runs" / result.run_id / "dbt_incremental" / "attempt-0" / "run_results.json"
    invocation_vars = json.loads(incremental.read_text())["args"]["vars"]
    lookback_start = date.fromisoformat(first) - timedelta(days=3)
    assert invocation_vars == {"window_start": lookback_start.isoformat(), "window_end": last}
    fct_partitions = {
        m.partition
        for m in result.get_asset_materialization_events()
        for m in [m.materialization]
        if m.asset_key == dg.AssetKey("fct_orders")
    }
    assert len(fct_partitions) == (date.fromisoformat(last) - date.fromisoformat(first)).days + 1
    assert mats[SYNC]["sent"].value == customers and mats[SYNC]["created"].value == customers

    # The CRM now holds exactly one contact per customer, with the mart's values.
    assert crm_get(stack, "/_devstack/stats")["contacts"] == customers
    contact = crm_get(stack, f"/crm/v3/objects/contacts/{latest[0]}", idProperty="tidewater_customer_id")
    assert contact["properties"]["email"] == latest[1]
    assert contact["properties"]["tidewater_segment"] == latest[2]

    # Every blocking dbt test and landing contract ran as an asset check and passed. (Freshness checks judge
    # timeliness against today: the demo's dates are in the past, so those fail here, as they should.)
    evaluations = [e for e in result.get_asset_check_evaluations() if "freshness" not in e.check_name]
    assert evaluations and all(e.passed for e in evaluations if e.severity == dg.AssetCheckSeverity.ERROR)
    # None was left unevaluated: a relationships test between a partitioned model and an unpartitioned one runs in
    # the other model's dbt invocation, and its verdict is recorded on its own check all the same.
    graph = defs.resolve_asset_graph()
    blocking = {k for k in graph.asset_check_keys if graph.get_check_spec(k).blocking and "freshness" not in k.name}
    evaluated = {dg.AssetCheckKey(e.asset_key, e.check_name) for e in evaluations}
    assert sorted(k.to_user_string() for k in blocking - evaluated) == []

    # The Slack summary reached the webhook, without the token anywhere in it.
    received = httpx.get(f"{stack['hooks']}/_devstack/received").json()
    assert len(received) == 1 and received[0]["path"] == "/services/T0/B0/slack"
    assert f"{customers} sent" in received[0]["json"]["text"] and TOKEN not in received[0]["body"]
    assert "segment_summary_webhook" in received[0]["json"]["text"]

    # The segment mart reached the signed webhook: six segments in one batch, signature verified by the receiver.
    [hook] = httpx.get(f"{stack['signed']}/_devstack/received").json()
    assert hook["path"] == "/hooks/segments" and "rejected" not in hook
    assert sorted(r["customer_segment"] for r in hook["json"]["records"]) == sorted(
        ["prospect", "new", "active", "loyal", "vip", "lapsed"]
    )
    assert sum(r["customers"] for r in hook["json"]["records"]) == customers


def test_an_unchanged_rerun_sends_nothing_and_a_full_resync_updates_in_place(stack):
    defs = stack["defs"]
    before = crm_get(stack, "/_devstack/stats")
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection={SYNC})
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral())
    assert result.success
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert (meta["planned"].value, meta["sent"].value, meta["unchanged"].value) == (0, 0, before["contacts"])
    assert crm_get(stack, "/_devstack/stats")["upsert_requests"] == before["upsert_requests"], "nothing was sent"

    resync = job.execute_in_process(
        instance=dg.DagsterInstance.ephemeral(),
        run_config={"ops": {"crm_contacts_sync": {"config": {"full_resync": True}}}},
    )
    meta = resync.get_asset_materialization_events()[0].materialization.metadata
    assert meta["created"].value == 0 and meta["updated"].value == before["contacts"]
    assert crm_get(stack, "/_devstack/stats")["contacts"] == before["contacts"]


def test_slack_summary_is_skipped_without_a_webhook(stack, module_env):
    module_env.delenv("SLACK_WEBHOOK_URL")
    from pipeline.definitions import defs as load

    defs = load()
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection={dg.AssetKey("slack_run_summary")})
    instance = dg.DagsterInstance.ephemeral()
    result = job.execute_in_process(instance=instance)
    assert result.success
    [event] = result.get_asset_materialization_events()
    assert event.materialization.metadata["posted"].value == 0
    assert "SLACK_WEBHOOK_URL is not set" in event.materialization.metadata["skipped_reason"].value
    assert len(httpx.get(f"{stack['hooks']}/_devstack/received").json()) == 1, "nothing posted this time"
    messages = [record.user_message for record in instance.all_logs(result.run_id)]
    assert any("SLACK_WEBHOOK_URL is not set" in m for m in messages)


def test_sync_gates_watch_every_check_upstream_of_the_mart(stack):
    from pipeline.activation.syncs import load_syncs, resolve_syncs
    from pipeline.core.settings import Settings
    from pipeline.ingestion.assets import raw_partitions
    from pipeline.transformation.assets import transformation_defs

    settings = Settings.from_env()
    stage = transformation_defs(settings, ingested=set(), partitions_def=raw_partitions(settings))
    contracts = {dg.AssetKey(["raw", t]): ["landing_contract"] for t in RAW_TABLES}
    syncs = resolve_syncs(load_syncs(), stage.manifest, stage.key_of, contracts)
    [sync] = [s for s in syncs if s.spec.name == "crm_contacts_sync"]
    assert {dg.AssetKey(["raw", t]) for t in RAW_TABLES} <= sync.upstream
    assert dg.AssetKey("stg_shop__customers") in sync.upstream and DIM_CUSTOMERS not in sync.upstream
    assert dg.AssetCheckKey(dg.AssetKey(["raw", "orders"]), "landing_contract") in sync.checks
    assert any(c.asset_key == DIM_CUSTOMERS and c.name.startswith("unique_") for c in sync.checks)
    graph_checks = stack["defs"].resolve_asset_graph().asset_check_keys
    assert sync.checks <= graph_checks, "every watched check is a real asset check"


def test_relationships_tests_between_the_two_dbt_steps_are_evaluated_as_a_backfill_runs_them(stack):
    """A backfill runs the partitioned models in one run and the rest in another (a subset of the dbt step's
    assets): a relationships test of a partitioned model against an unpartitioned one (fct_orders.customer_id in
    dim_customers) runs in the second run's dbt invocation and is recorded on its check, not skipped. (On the raw
    tables `test_materialize_all` loaded.)"""
    defs = stack["defs"]
    graph = defs.resolve_asset_graph()
    dbt_steps = ("dbt_build", "dbt_incremental")
    steps = {a.node_def.name: a for a in graph.assets_defs if a.is_executable and a.node_def.name in dbt_steps}
    partitioned, rest = steps["dbt_incremental"].keys, steps["dbt_build"].keys
    job = defs.resolve_implicit_global_asset_job_def()
    first, last = stack["summary"]["first_day"], stack["summary"]["last_day"]
    instance = dg.DagsterInstance.ephemeral()
    chain = job.get_subset(asset_selection=set(partitioned)).execute_in_process(
        instance=instance,
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
    )
    others = job.get_subset(asset_selection=set(rest) - {dg.AssetKey("mart_channel_performance")})
    assert chain.success and others.execute_in_process(instance=instance).success

    across = [
        k
        for k in graph.asset_check_keys
        if k.asset_key in partitioned and k.name.startswith("relationships_") and graph.get_check_spec(k).blocking
    ]
    for prefix in ("relationships_fct_orders_customer_id__", "relationships_stg_shop__orders_customer_id__"):
        assert any(k.name.startswith(prefix) for k in across), prefix
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(across)
    statuses = {k.name: latest[k].status.value if k in latest else None for k in across}
    assert set(statuses.values()) == {"SUCCEEDED"}, statuses
