"""Production as deploy/ describes it, proven: the image's build (deploy/image/build.sh, the Dockerfile's steps), the
production instance (deploy/dagster.production.yaml: Postgres storage, the queued coordinator, pools, run retries,
run monitoring) and the stack of deploy/compose.yaml — code server, webserver and daemon as separate processes, each
started with its service's own command and environment, interpolated from the variables an operator puts in
deploy/.env (devstack.production) — against a real PostgreSQL server (devstack.postgres; compose's `postgres`
service's database, role and password).

One stack for the module, in the order an operator meets it: files land and reach the CRM, runs only through the
queue; two runs at once queue on the warehouse pool; a run worker killed mid-send is failed, its slot freed by run
monitoring and the run retried to the end, nothing lost or doubled; a webserver restart loses nothing.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
import yaml

from devstack import webhook_receiver
from devstack.compose import services
from devstack.dagster_dev import (
    POOL_QUERY,
    GraphQL,
    launch_assets,
    pool_claims,
    run_status,
    run_worker_pid,
    step_failures,
    wait_for,
    wait_until_loaded,
)
from devstack.demo_data import default_start, generate
from devstack.postgres import postgres_server
from devstack.production import ProductionStack, build_image_tree, production_stack
from devstack.serve import ServerThread, free_port, server_process
from pipeline.activation.steps import send_pool
from pipeline.core.settings import REPO_ROOT, WAREHOUSE_POOL

pytestmark = [
    pytest.mark.integration,
    pytest.mark.once,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PostgreSQL from Debian's package layout"),
]

TOKEN = "production-crm-token"
WEBHOOK_SECRET = "production-webhook-secret"
SYNC = "crm_contacts_sync"
DAYS = 2
FIRST_DAY = default_start(DAYS)
CUSTOMERS = 150
INSTANCE = yaml.safe_load((REPO_ROOT / "deploy" / "dagster.production.yaml").read_text())
MONITORING = INSTANCE["run_monitoring"]
#: From a dead run's end until the daemon has freed its slot (the production file's values), plus a loaded machine.
FREED_AFTER_END = MONITORING["free_slots_after_run_end_seconds"] + MONITORING["poll_interval_seconds"] + 30
#: Files landed -> arrival sensor -> raw loads -> automation's dbt runs -> the sync, on a loaded 2-core machine.
PIPELINE_TIMEOUT = 600.0
FINISHED = ("SUCCESS", "FAILURE", "CANCELED")

RUNS_QUERY = """
{ runsOrError(limit: 500) { __typename ... on Runs { results { runId status tags { key value } } } } }
"""
RUN_EVENT_TYPES_QUERY = """
query ($runId: ID!) {
  logsForRun(runId: $runId, limit: 100000) { __typename ... on EventConnection { events { __typename } } }
}
"""
MATERIALIZATIONS_QUERY = """
query ($key: AssetKeyInput!) {
  assetOrError(assetKey: $key) { __typename ... on Asset { assetMaterializations(limit: 1000) { runId timestamp } } }
}
"""


@dataclass
class Production:
    stack: ProductionStack
    gql: GraphQL
    url: str
    crm: httpx.Client
    alerts_url: str
    data: Path
    manifest_built_at: int

    def runs(self) -> list[dict[str, Any]]:
        answer = self.gql(RUNS_QUERY)["runsOrError"]
        assert answer["__typename"] == "Runs", answer
        return answer["results"]

    def wait_until_loaded(self) -> None:
        webserver = self.stack.processes["webserver"]
        wait_until_loaded(self.gql, self.url, webserver, self.stack.log("webserver"), timeout=240)

    def event_types(self, run_id: str) -> set[str]:
        answer = self.gql(RUN_EVENT_TYPES_QUERY, runId=run_id)["logsForRun"]
        assert answer["__typename"] == "EventConnection", answer
        return {event["__typename"] for event in answer["events"]}

    def diagnostics(self) -> str:
        return "\n".join(f"--- {name}:\n{self.stack.tail(name, 30)}" for name in ("code-server", "daemon"))


def landed_customers(landing: Path) -> int:
    """Distinct customers in the landed files: what the CRM must hold once each."""
    files = sorted(str(path) for path in landing.rglob("customers.*"))
    assert files, f"no customers file under {landing}"
    with duckdb.connect() as conn:
        reader = "read_csv" if files[0].endswith(".csv") else "read_json_auto"
        return conn.execute(f"SELECT count(DISTINCT customer_id) FROM {reader}(?)", [files]).fetchone()[0]


def crm_stats(crm: httpx.Client) -> dict[str, Any]:
    return crm.get("/_devstack/stats").json()


@pytest.fixture(scope="module")
def production(tmp_path_factory) -> Iterator[Production]:
    root = tmp_path_factory.mktemp("production")
    data = root / "data"
    (data / "landing").mkdir(parents=True)
    password = secrets.token_urlsafe(18)
    # compose's postgres service: its database, role and password, from the same variables
    # (compose interpolates the whole file: the settings the other services require need a value too)
    required_elsewhere = dict.fromkeys(("CRM_URL", "CRM_TOKEN", "WEBHOOK_URL", "WEBHOOK_SECRET"), "-")
    postgres_env = services({**required_elsewhere, "DAGSTER_PG_PASSWORD": password})["postgres"]
    with ExitStack() as cleanup:
        pg = cleanup.enter_context(
            postgres_server(
                db=postgres_env.environment["POSTGRES_DB"],
                user=postgres_env.environment["POSTGRES_USER"],
                password=postgres_env.environment["POSTGRES_PASSWORD"],
            )
        )
        crm_url = cleanup.enter_context(
            server_process("devstack.crm", "--db", str(root / "crm.sqlite"), "--token", TOKEN)
        )
        alerts = cleanup.enter_context(ServerThread(webhook_receiver.create_app()))
        # the webhook syncs' receiver checks their batches' signatures, as a real one would
        hooks = cleanup.enter_context(ServerThread(webhook_receiver.create_app(secret=WEBHOOK_SECRET)))
        web_port = free_port()
        url = f"http://127.0.0.1:{web_port}"
        # deploy/.env as an operator writes it, with this machine's addresses for compose's service names.
        variables = {
            "DAGSTER_PG_HOST": pg.host,
            "DAGSTER_PG_PORT": str(pg.port),
            "DAGSTER_PG_PASSWORD": password,
            "DAGSTER_CODE_SERVER_HOST": "127.0.0.1",
            "DAGSTER_CODE_SERVER_PORT": str(free_port()),
            "DAGSTER_WEBSERVER_PORT": str(web_port),
            "DUCKDB_PATH": str(data / "warehouse.duckdb"),
            "LANDING_URL": str(data / "landing"),
            "DBT_ARTIFACTS_URL": str(data / "dbt_artifacts"),
            "LANDING_START_DATE": FIRST_DAY.isoformat(),
            "LANDING_SENSOR_INTERVAL_SECONDS": "5",
            "CRM_URL": crm_url,
            "CRM_TOKEN": TOKEN,
            "CRM_BATCH_SIZE": "10",
            "SYNC_CONCURRENCY": "1",
            "WEBHOOK_URL": f"{hooks.url}/hooks",
            "WEBHOOK_SECRET": WEBHOOK_SECRET,
            "ALERT_WEBHOOK_URL": f"{alerts.url}/alerts",
            "DAGSTER_UI_BASE_URL": url,
        }
        started = time.monotonic()
        build_image_tree(
            root / "app",
            root / "dagster_home",
            log=root / "build.log",
            build_args=services(variables)["code-server"].build_args,
        )
        print(f"image build steps: {time.monotonic() - started:.0f} s")  # noqa: T201 (the closing note's timings)
        built_at = (root / "app" / "dbt_project" / "target" / "manifest.json").stat().st_mtime_ns
        started = time.monotonic()
        stack = cleanup.enter_context(
            production_stack(
                root / "app", root / "dagster_home", variables, root / "logs", "code-server", "webserver", "daemon"
            )
        )
        gql = GraphQL(url)
        cleanup.callback(gql.close)
        crm = cleanup.enter_context(
            httpx.Client(base_url=crm_url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30, trust_env=False)
        )
        production = Production(stack, gql, url, crm, alerts.url, data, built_at)
        production.wait_until_loaded()
        print(f"stack healthy and loaded: {time.monotonic() - started:.0f} s")  # noqa: T201
        yield production


def test_the_code_server_loads_from_the_manifest_the_build_prepared(production):
    """No `dbt parse` at start: the manifest the image's build wrote is the one the code location read."""
    manifest = production.stack.app / "dbt_project" / "target" / "manifest.json"
    assert manifest.stat().st_mtime_ns == production.manifest_built_at


def test_landing_files_reach_the_crm_and_every_run_goes_through_the_queue(production):
    incoming = production.data / "incoming"
    generate(incoming, seed=5, days=DAYS, customers=CUSTOMERS, start=FIRST_DAY, progress=False)
    expected = landed_customers(incoming)
    for system in incoming.iterdir():  # the files land (a rename: each appears whole)
        system.rename(production.data / "landing" / system.name)

    def synced() -> bool:
        failed = [run["runId"] for run in production.runs() if run["status"] == "FAILURE"]
        assert not failed, "\n".join(f"run {r} failed: {step_failures(production.gql, r)}" for r in failed)
        return crm_stats(production.crm)["contacts"] == expected

    wait_for(f"the CRM holds the {expected} landed customers", synced, PIPELINE_TIMEOUT, interval=3)
    runs = production.runs()
    assert len(runs) >= 3, runs  # the arrival sensor's load, automation's dbt and sync runs
    for run in runs:
        assert "RunEnqueuedEvent" in production.event_types(run["runId"]), run


def test_two_runs_at_once_queue_on_the_warehouse_pool(production):
    first = launch_assets(production.gql, ["dim_customers"])
    second = launch_assets(production.gql, ["mart_customer_segments"])
    both = {first, second}

    def one_waits_on_the_other() -> bool:
        """One run holds the slot while the other waits: kept in the queue by the coordinator (the pool is full) or
        its step pending on the pool; never both holding it."""
        pool = production.gql(POOL_QUERY, pool=WAREHOUSE_POOL)["instance"]["concurrencyLimit"]
        holders = {slot["runId"] for slot in pool["claimedSlots"]} & both
        pending = {step["runId"] for step in pool["pendingSteps"]}
        assert len(holders) <= 1, f"two runs hold the warehouse: {holders}"
        if not holders:
            return False
        [other] = both - holders
        return other in pending or run_status(production.gql, other) == "QUEUED"

    wait_for("one run holding the warehouse slot while the other waits for it", one_waits_on_the_other, 240, 0.2)
    for run_id in both:
        wait_for(f"run {run_id} finished", lambda r=run_id: run_status(production.gql, r) in FINISHED, 300)
        assert run_status(production.gql, run_id) == "SUCCESS", production.diagnostics()


def test_a_killed_run_worker_is_failed_its_slot_freed_and_the_run_retried_to_the_end(production):
    contacts = crm_stats(production.crm)["contacts"]
    before = crm_stats(production.crm)["upsert_requests"]
    production.crm.put("/_devstack/faults", json={"slow_seconds": 2.0}).raise_for_status()
    killed = launch_assets(production.gql, [SYNC], run_config={"ops": {SYNC: {"config": {"full_resync": True}}}})
    wait_for(
        "the resync's first batch acknowledged", lambda: crm_stats(production.crm)["upsert_requests"] > before, 300
    )
    assert pool_claims(production.gql, send_pool(SYNC)) == [killed]
    pid = run_worker_pid(production.gql, killed)
    assert pid and os.getpgid(pid) == production.stack.processes["code-server"].pid, "a child of the code server"
    os.kill(pid, signal.SIGKILL)
    production.crm.put("/_devstack/faults", json={}).raise_for_status()

    wait_for("the killed run marked failed", lambda: run_status(production.gql, killed) == "FAILURE", 60)
    wait_for(
        "run monitoring freed the dead run's slot",
        lambda: killed not in pool_claims(production.gql, send_pool(SYNC)),
        FREED_AFTER_END,
    )

    def retry() -> dict[str, Any] | None:
        return next(
            (
                run
                for run in production.runs()
                if {"key": "dagster/parent_run_id", "value": killed} in run["tags"] and run["status"] in FINISHED
            ),
            None,
        )

    retried = wait_for("the run retried (run_retries) and finished", retry, 300, interval=2)
    assert retried["status"] == "SUCCESS", production.diagnostics()
    assert crm_stats(production.crm)["contacts"] == contacts, "nothing lost, nothing doubled"

    def run_failure_alert() -> list[str]:
        received = httpx.get(f"{production.alerts_url}/_devstack/received", trust_env=False).json()
        return [
            r["json"]["text"]
            for r in received
            if "*Run failed*" in r["json"]["text"] and killed[:8] in r["json"]["text"]
        ]

    [text] = wait_for("the failure alert", run_failure_alert, 120)
    assert f"*Failed step*: `{SYNC}.send`" in text, text


def test_a_webserver_restart_loses_nothing(production):
    runs = {run["runId"]: run["status"] for run in production.runs()}
    key = {"path": [SYNC]}
    materializations = production.gql(MATERIALIZATIONS_QUERY, key=key)["assetOrError"]["assetMaterializations"]
    production.stack.stop("webserver")
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{production.url}/server_info", timeout=2, trust_env=False)
    production.stack.start("webserver")
    production.wait_until_loaded()
    # The daemon goes on meanwhile (sensors, automation may start runs): nothing that was there is gone or changed,
    # a run then in progress may have moved on.
    after_runs = {run["runId"]: run["status"] for run in production.runs()}
    assert runs.keys() <= after_runs.keys(), set(runs) - set(after_runs)
    finished = {run_id: status for run_id, status in runs.items() if status in FINISHED}
    assert {run_id: after_runs[run_id] for run_id in finished} == finished
    after = production.gql(MATERIALIZATIONS_QUERY, key=key)["assetOrError"]["assetMaterializations"]
    assert materializations and all(m in after for m in materializations)
