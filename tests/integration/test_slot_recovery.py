"""A run whose worker dies mid-step (SIGKILL, out of memory) frees its pool slot within a bounded time and ends
FAILURE; the next run that needs the slot then goes on and succeeds, and the CRM holds every record once.

Both tests kill a `crm_contacts_sync` run in its send step — which holds the sync's own pool slot
(`sync_crm_contacts_sync`, one slot like `warehouse`; the send holds no warehouse slot) — while it waits on a slow
CRM (the local CRM's fault injection), after its first batch was acknowledged:
- under `dagster dev` (devstack/dagster.yaml, as `make dev` runs it): the code server that started the worker marks
  the run failed, the daemon frees the slot, the next run's send goes on; the failure alert names the step it died in;
- in a plain instance, no webserver and no code server: a `dagster asset materialize` in a terminal is killed, and
  nothing notices until a daemon runs on the instance: its run monitoring finds the worker gone
  (pipeline/run_launcher.py), fails the run and frees the slot.
The bounds come from devstack/dagster.yaml's run monitoring settings; the waits allow for a loaded machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import httpx
import pytest
import yaml

from devstack import INSTANCE_YAML, webhook_receiver
from devstack import crm as crm_server
from devstack.dagster_dev import dagster_dev, launch_assets, pool_claims, run_status, run_worker_pid, wait_for
from devstack.serve import ServerThread, stop_group
from pipeline.activation.steps import send_pool
from pipeline.automation.alerts import failed_steps
from pipeline.core.settings import REPO_ROOT
from pipeline.run_launcher import run_worker_pid as recorded_worker_pid
from tests.marts import make_dim_customers

pytestmark = pytest.mark.integration

TOKEN = "slot-recovery-token"
SYNC = "crm_contacts_sync"
SEND = f"{SYNC}.send"  # the step killed
POOL = send_pool(SYNC)  # the pool slot it holds
CUSTOMERS = 600  # six batches of 100, one at a time (SYNC_CONCURRENCY=1)
SLOW_CRM = {"slow_seconds": 3.0}  # each batch waits 3 s at the CRM: the send holds its slot for ~18 s
MONITORING = yaml.safe_load(INSTANCE_YAML.read_text())["run_monitoring"]
#: From a run's end (FAILURE) until the daemon has freed its slot: `free_slots_after_run_end_seconds`, then the
#: daemon's next poll. Noticing the dead worker takes one more poll when run monitoring has to (no code server).
FREED_AFTER_END = MONITORING["free_slots_after_run_end_seconds"] + MONITORING["poll_interval_seconds"]
NOTICED_AFTER_DEATH = MONITORING["poll_interval_seconds"]
#: What a loaded 2-core machine adds to each bound (GraphQL and daemon iterations queue behind other work).
SLACK = 20.0
#: Starting a run worker (process start, code location load): not part of any bound.
RUN_START_TIMEOUT = 180.0
DAGSTER_DAEMON = str(Path(sys.executable).with_name("dagster-daemon"))
DAGSTER = str(Path(sys.executable).with_name("dagster"))


def crm_client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30, trust_env=False)


def upserts_acknowledged(crm: httpx.Client) -> int:
    return crm.get("/_devstack/stats").json()["upsert_requests"]


def claims(instance: dg.DagsterInstance) -> list[str]:
    """The ids of the runs holding a slot of the sync's send pool."""
    return [slot.run_id for slot in instance.event_log_storage.get_concurrency_info(POOL).claimed_slots]


def assert_every_contact_once(crm: httpx.Client, db: Path) -> None:
    """Nothing lost, nothing doubled: the CRM holds each customer once and the sync's state knows all of them."""
    assert crm.get("/_devstack/stats").json()["contacts"] == CUSTOMERS
    with duckdb.connect(str(db), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM activation.sync_state").fetchone()[0] == CUSTOMERS


def test_a_killed_run_worker_frees_the_warehouse_under_dagster_dev(tmp_path):
    make_dim_customers(tmp_path / "warehouse.duckdb", CUSTOMERS)
    with ServerThread(webhook_receiver.create_app()) as alerts:
        env = {"SYNC_CONCURRENCY": "1", "ALERT_WEBHOOK_URL": f"{alerts.url}/alerts"}
        log = tmp_path / "dagster_dev.log"
        stack = dagster_dev(
            tmp_path, log=log, first_day=date(2026, 11, 1), crm_token=TOKEN, webhook_secret="unused", env=env
        )
        with stack as dev, crm_client(dev.crm_url) as crm:
            crm.put("/_devstack/faults", json=SLOW_CRM).raise_for_status()
            killed = launch_assets(dev.gql, [SYNC])
            wait_for("the sync's first batch acknowledged", lambda: upserts_acknowledged(crm) >= 1, RUN_START_TIMEOUT)
            assert pool_claims(dev.gql, POOL) == [killed]
            pid = run_worker_pid(dev.gql, killed)
            assert pid and os.getpgid(pid) == dev.process.pid, "the run worker is a process of this dagster dev"

            os.kill(pid, signal.SIGKILL)  # mid-step: the second batch is waiting at the CRM
            crm.put("/_devstack/faults", json={}).raise_for_status()
            following = launch_assets(dev.gql, [SYNC])
            wait_for("the killed run marked failed", lambda: run_status(dev.gql, killed) == "FAILURE", SLACK)
            # Failed, yet still holding the slot: what used to block the sync for good. The next run waits (queued,
            # or with its plan done, its send blocked by the pool).
            assert pool_claims(dev.gql, POOL) == [killed]
            assert run_status(dev.gql, following) in ("QUEUED", "STARTING", "STARTED")

            wait_for(
                "the daemon freed the killed run's slot",
                lambda: killed not in pool_claims(dev.gql, POOL),
                FREED_AFTER_END + SLACK,
            )
            wait_for(
                "the following run finished",
                lambda: run_status(dev.gql, following) in ("SUCCESS", "FAILURE"),
                RUN_START_TIMEOUT,
            )
            assert run_status(dev.gql, following) == "SUCCESS", dev.log_tail()
            assert run_status(dev.gql, killed) == "FAILURE"

            def run_failure_alerts() -> list[str]:
                received = httpx.get(f"{alerts.url}/_devstack/received", trust_env=False).json()
                return [r["json"]["text"] for r in received if "*Run failed*" in r["json"]["text"]]

            [text] = wait_for("the failure alert", run_failure_alerts, 60)
            assert killed[:8] in text and f"*Failed step*: `{SEND}`" in text, text
            # Whichever notices first names the death: the code server that started the worker ("terminated by
            # signal 9 (SIGKILL)") or run monitoring through the launcher's health check ("no longer exists").
            assert "SIGKILL" in text or "no longer exists: it was killed" in text, text
            assert_every_contact_once(crm, tmp_path / "warehouse.duckdb")
    assert "Found a dagster instance configuration value" not in log.read_text(), "dagster dev starts quietly"


def test_a_killed_terminal_run_is_failed_by_run_monitoring_in_a_plain_instance(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # devstack/dagster.yaml keeps Dagster's folders under DAGSTER_HOME
    shutil.copy(INSTANCE_YAML, home / "dagster.yaml")
    db = tmp_path / "warehouse.duckdb"  # the catalog name the dbt manifest's relations use
    make_dim_customers(db, CUSTOMERS)
    (tmp_path / "landing").mkdir()
    faults = crm_server.FaultConfig(**SLOW_CRM)
    with (
        ServerThread(crm_server.create_app(tmp_path / "crm.sqlite", token=TOKEN, faults=faults)) as server,
        crm_client(server.url) as crm,
    ):
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "DUCKDB_PATH": str(db),
            "LANDING_URL": str(tmp_path / "landing"),
            "DBT_ARTIFACTS_URL": str(tmp_path / "dbt_artifacts"),
            "CRM_URL": server.url,
            "CRM_TOKEN": TOKEN,
            "SYNC_CONCURRENCY": "1",
            "PYTHONPATH": str(REPO_ROOT),
        }
        materialize = [DAGSTER, "asset", "materialize", "-m", "pipeline.definitions", "--select", SYNC]
        output = tmp_path / "materialize.log"
        with output.open("w") as out:
            first = subprocess.Popen(materialize, env=env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
        wait_for("the sync's first batch acknowledged", lambda: upserts_acknowledged(crm) >= 1, RUN_START_TIMEOUT)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            [run] = instance.get_runs()
            assert recorded_worker_pid(instance, run.run_id)[0] == first.pid, "the terminal's process runs the steps"
            first.send_signal(signal.SIGKILL)
            first.wait()
            time.sleep(NOTICED_AFTER_DEATH)
            # Nothing in a plain instance notices: the run looks alive and keeps the slot.
            assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
            assert claims(instance) == [run.run_id]

            crm.put("/_devstack/faults", json={}).raise_for_status()
            with (tmp_path / "daemon.log").open("w") as out:  # a daemon, no code location: run monitoring only
                daemon = subprocess.Popen(
                    [DAGSTER_DAEMON, "run", "--empty-workspace"],
                    env=env,
                    cwd=tmp_path,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                wait_for(
                    "run monitoring failed the run",
                    lambda: instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.FAILURE,
                    RUN_START_TIMEOUT,  # the daemon's own start, then one poll
                )
                wait_for(
                    "the daemon freed the run's slot",
                    lambda: not claims(instance),
                    FREED_AFTER_END + SLACK,
                )
                [failure] = failed_steps(instance, run.run_id)
                assert failure.step == SEND and f"its run worker (pid {first.pid}) no longer exists" in failure.error
                second = subprocess.run(materialize, env=env, cwd=REPO_ROOT, capture_output=True, text=True)
                assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
            finally:
                stop_group(daemon)
        assert_every_contact_once(crm, db)
