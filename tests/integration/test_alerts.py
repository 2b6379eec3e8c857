"""Failure and freshness alerts, routed by asset owner, posted to a real local webhook receiver."""

from datetime import UTC, datetime

import dagster as dg
import httpx
import pytest
from dagster._core.test_utils import freeze_time

from devstack import webhook_receiver
from devstack.serve import ServerThread

UI = "https://dagster.example.com"
RAW_CUSTOMERS, RAW_PAYMENTS = dg.AssetKey(["raw", "customers"]), dg.AssetKey(["raw", "payments"])


@pytest.fixture(scope="module")
def setup(module_env, demo_manifest, tmp_path_factory):
    root = tmp_path_factory.mktemp("alerts")
    (root / "landing").mkdir()  # nothing has landed: every load fails, every raw table is stale
    with ServerThread(webhook_receiver.create_app()) as hooks:
        module_env.setenv("LANDING_URL", str(root / "landing"))
        module_env.setenv("DUCKDB_PATH", str(root / "w.duckdb"))
        module_env.setenv("DAGSTER_UI_BASE_URL", UI)
        module_env.setenv(
            "ALERT_ROUTES",
            f'{{"data-platform@tidewater.example": "{hooks.url}/route/platform",'
            f' "team:finance_data": "{hooks.url}/route/finance"}}',
        )
        module_env.setenv("ALERT_WEBHOOK_URL", f"{hooks.url}/route/default")
        from pipeline.definitions import defs

        yield defs(), hooks.url


def received(url, path):
    return [r for r in httpx.get(f"{url}/_devstack/received").json() if r["path"] == path]


def test_a_failed_run_reaches_the_owner_with_what_to_act_on(setup):
    defs, hooks = setup
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection={RAW_CUSTOMERS})
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(instance=instance, partition_key="2026-11-01", raise_on_error=False)
        assert not result.success
        run = instance.get_run_by_id(result.run_id)
        failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
        sensor = defs.resolve_sensor_def("run_failure_alert")
        context = dg.build_run_status_sensor_context(
            sensor_name=sensor.name, dagster_instance=instance, dagster_run=run, dagster_event=failure
        ).for_run_failure()
        sensor(context)

    [alert] = received(hooks, "/route/platform")  # raw/customers belongs to the shop system's owner
    text = alert["json"]["text"]
    assert run.run_id[:8] in text and run.job_name in text
    assert "*Failed step*: `raw__customers`" in text and "raw/customers" in text
    assert "No landing file for raw.customers on 2026-11-01" in text
    assert "Owners: data-platform@tidewater.example" in text and "Partition: 2026-11-01" in text
    assert f"<{UI}/runs/{run.run_id}|" in text
    assert not received(hooks, "/route/finance") and not received(hooks, "/route/default")


def test_a_stale_source_fails_its_freshness_check_and_alerts_its_owner(setup):
    defs, hooks = setup
    graph = defs.resolve_asset_graph()
    [check] = [c for c in graph.asset_check_keys if c.asset_key == RAW_PAYMENTS and "freshness" in c.name]
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=set(), asset_check_selection={check})
    alert = defs.resolve_sensor_def("freshness_alert")
    with dg.instance_for_test() as instance:
        with freeze_time(datetime(2026, 12, 1, 12, 0, tzinfo=UTC)):  # the deployment starts: nothing due yet
            assert job.execute_in_process(instance=instance).get_asset_check_evaluations()[0].passed
        with freeze_time(datetime(2026, 12, 2, 9, 5, tzinfo=UTC)):  # landing day 2026-12-01 was due at 09:00
            [evaluation] = job.execute_in_process(instance=instance).get_asset_check_evaluations()
            assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
            context = dg.build_sensor_context(instance=instance, definitions=defs)
            alert(context)
            alert(dg.build_sensor_context(instance=instance, definitions=defs, cursor=context.cursor))  # no new failure

    [message] = received(hooks, "/route/finance")  # payments belong to billing's owner
    text = message["json"]["text"]
    assert "*Stale data*: `raw/payments`" in text and check.name in text and "team:finance_data" in text
    assert "Landing day 2026-12-01 was due by 2026-12-02 09:00 UTC and has not loaded (never loaded)." in text
    assert f"<{UI}/assets/raw/payments|" in text


def test_marts_are_freshness_checked_too(setup):
    defs, _ = setup
    checked = {c.asset_key for c in defs.resolve_asset_graph().asset_check_keys if "freshness" in c.name}
    assert {RAW_CUSTOMERS, RAW_PAYMENTS, dg.AssetKey("dim_customers"), dg.AssetKey("fct_orders")} <= checked
