"""A fresh deployment is quiet: no freshness check fails and no "Stale data" alert goes out before anything was due;
once a first load was due and did not happen, both say so — in local times.

Dagster's `freshness_checks_sensor` decides which checks to run, our checks run on a real (SQLite) instance and
`freshness_alert` posts the failures to a real local webhook receiver; Dagster's test clock stands in for the hours
that pass between the ticks.
"""

import re
import subprocess
import sys
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg
import httpx
import pytest
from dagster._core.test_utils import freeze_time

from devstack import webhook_receiver
from devstack.serve import ServerThread
from pipeline.core.settings import REPO_ROOT

BERLIN = ZoneInfo("Europe/Berlin")
#: the deployment starts at 03:10 local time; the raw deadline is 09:00, the marts' window 26 h
START = datetime(2026, 12, 2, 3, 10, tzinfo=BERLIN)
RAW_CUSTOMERS = dg.AssetKey(["raw", "customers"])
EPOCH_FLOAT = re.compile(r"\b1\d{9}(\.\d+)?\b")


@pytest.fixture(scope="module")
def deployment(module_env, demo_manifest, tmp_path_factory):
    root = tmp_path_factory.mktemp("quiet_start")
    (root / "landing").mkdir()
    with ServerThread(webhook_receiver.create_app()) as hooks:
        module_env.setenv("LANDING_URL", str(root / "landing"))
        module_env.setenv("DUCKDB_PATH", str(root / "w.duckdb"))
        module_env.setenv("PIPELINE_TIMEZONE", "Europe/Berlin")
        module_env.setenv("ALERT_WEBHOOK_URL", f"{hooks.url}/alerts")
        from pipeline.definitions import defs

        with dg.instance_for_test() as instance:
            yield Deployment(defs(), instance, hooks.url)


class Deployment:
    """The two freshness sensors ticking against one instance, their cursors kept as the daemon keeps them."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance, hooks: str) -> None:
        self.defs, self.instance, self.hooks = defs, instance, hooks
        self.cursors: dict[str, str | None] = {}
        graph = defs.resolve_asset_graph()
        self.checks = {k for k in graph.asset_check_keys if k.name == "freshness_check"}
        self.raw = {k for k in self.checks if k.asset_key.path[0] == "raw"}

    def sensor(self, name: str):
        context = dg.build_sensor_context(instance=self.instance, definitions=self.defs, cursor=self.cursors.get(name))
        result = self.defs.resolve_sensor_def(name)(context)
        self.cursors[name] = context.cursor
        return result

    def tick(self, at: datetime) -> tuple[set[dg.AssetCheckKey], list[str]]:
        """One tick of the check sensor (running what it asks for) and of the alert sensor: (checks run, alerts)."""
        httpx.delete(f"{self.hooks}/_devstack/received")
        with freeze_time(at):
            request = self.sensor("freshness_checks_sensor")
            ran = set(request.asset_check_keys) if isinstance(request, dg.RunRequest) else set()
            if ran:
                job = self.defs.resolve_implicit_global_asset_job_def().get_subset(
                    asset_selection=set(), asset_check_selection=ran
                )
                assert job.execute_in_process(instance=self.instance).success
            self.sensor("freshness_alert")
        return ran, [r["json"]["text"] for r in httpx.get(f"{self.hooks}/_devstack/received").json()]

    def states(self) -> dict[dg.AssetCheckKey, tuple[str, str]]:
        """What the Checks tab shows for each freshness check: status and description of its latest execution."""
        latest = self.instance.event_log_storage.get_latest_asset_check_execution_by_key(sorted(self.checks))
        states = {}
        for key, record in latest.items():
            evaluation = record.event.dagster_event.event_specific_data if record.event else None
            states[key] = (record.status.value, evaluation.description if evaluation else "")
        return states


def test_a_fresh_deployment_is_quiet_until_its_first_loads_were_due(deployment):
    # Start: the sensor runs every check once (none has run before); nothing was due, so nothing fails or alerts.
    ran, alerts = deployment.tick(START)
    assert ran == deployment.checks and len(ran) >= 10  # 5 raw tables and the marts
    assert alerts == []
    states = deployment.states()
    assert {status for status, _ in states.values()} == {"SUCCEEDED"}
    assert states[dg.AssetCheckKey(RAW_CUSTOMERS, "freshness_check")][1] == (
        "Not due yet: no deadline has passed since this deployment started watching (2026-12-02 03:10 CET); the"
        " first, landing day 2026-12-01 is due by 2026-12-02 09:00 CET."
    )
    mart = next(k for k in deployment.checks if k.asset_key == dg.AssetKey("dim_customers"))
    assert states[mart][1].startswith("Not due yet: not built yet; first due 2026-12-03 05:10 CET")

    # An hour on, no check could have changed its answer: the sensor runs none.
    assert deployment.tick(START + timedelta(hours=1)) == (set(), [])

    # 09:01: landing day 2026-12-01 was due and never came. The raw checks fail, each owner is told, in words.
    ran, alerts = deployment.tick(datetime(2026, 12, 2, 9, 1, tzinfo=BERLIN))
    assert ran == deployment.raw
    assert len(alerts) == len(deployment.raw)
    [customers] = [a for a in alerts if "`raw/customers`" in a]
    assert customers.splitlines()[:3] == [
        ":warning: *Stale data*: `raw/customers` failed `freshness_check` (error)",
        "Landing day 2026-12-01 was due by 2026-12-02 09:00 CET and has not loaded (never loaded).",
        "Owners: data-platform@tidewater.example",
    ]
    assert {deployment.states()[k][0] for k in deployment.raw} == {"FAILED"}  # the Checks tab agrees

    # The day's customers file loads: that check runs again and passes; the still-missing tables stay failed
    # without a second alert (a failed check runs again only once its asset was updated).
    with freeze_time(datetime(2026, 12, 2, 9, 30, tzinfo=BERLIN)):
        deployment.instance.report_runless_asset_event(
            dg.AssetMaterialization(asset_key=RAW_CUSTOMERS, partition="2026-12-01")
        )
    ran, alerts = deployment.tick(datetime(2026, 12, 2, 9, 35, tzinfo=BERLIN))
    assert ran == {dg.AssetCheckKey(RAW_CUSTOMERS, "freshness_check")} and alerts == []
    assert deployment.states()[dg.AssetCheckKey(RAW_CUSTOMERS, "freshness_check")] == (
        "SUCCEEDED",
        "Landing day 2026-12-01 loaded 2026-12-02 09:30 CET (due by 2026-12-02 09:00 CET); landing day 2026-12-02 is"
        " due by 2026-12-03 09:00 CET.",
    )

    # 26 h after the start the marts were due; none was ever built: each is stale now, a warning to its owners.
    ran, alerts = deployment.tick(START + timedelta(hours=26, minutes=1))
    assert ran == deployment.checks - deployment.raw
    assert len(alerts) == len(ran)
    [dim] = [a for a in alerts if "`dim_customers`" in a]
    assert dim.splitlines()[:2] == [
        ":warning: *Stale data*: `dim_customers` failed `freshness_check` (warn)",
        "Never built; expected within 26 h of 2026-12-02 03:10 CET, when this deployment started watching it.",
    ]
    assert not any(EPOCH_FLOAT.search(a) for a in alerts)
    assert {deployment.states()[k][0] for k in ran} == {"FAILED"}


def test_loading_the_code_location_prints_no_beta_or_supersession_warnings(deployment):
    """What every process that loads the definitions (code servers, each run worker) would print, warnings on."""
    load = subprocess.run(
        [sys.executable, "-W", "always", "-c", "from pipeline.definitions import defs; defs()"],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
    )
    noisy = [line for line in load.stderr.splitlines() if re.search(r"(Beta|Supersession|Preview)Warning", line)]
    assert noisy == []
