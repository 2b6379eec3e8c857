"""A sync waiting on its destination does not hold the warehouse: while the CRM answers 429 with a long
Retry-After, a landing file arrives, and its raw load and dbt build (another run, through a real instance with
devstack/dagster.yaml's pool limits) finish before the sync's send step does.

The order is asserted on the instance's event timestamps, not on wall-clock durations.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import httpx
import pytest
from dagster._core.instance.ref import InstanceRef

from devstack import INSTANCE_YAML
from devstack import crm as crm_server
from devstack.demo_data import generate
from devstack.serve import ServerThread
from pipeline.core.settings import REPO_ROOT
from tests.marts import make_dim_customers

pytestmark = pytest.mark.integration

TOKEN = "t"
DAGSTER = str(Path(sys.executable).with_name("dagster"))
SYNC = "crm_contacts_sync"
CUSTOMERS = 300  # three batches of 100, one at a time
RETRY_AFTER = 25.0  # seconds the CRM tells the sync to wait, twice (the 2nd and the 4th request get a 429)


def step_successes(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    """step key -> timestamp of its STEP_SUCCESS event."""
    return {
        record.step_key: record.timestamp
        for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
    }


def test_a_rate_limited_sync_lets_a_load_and_dbt_build_finish_first(module_env, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(INSTANCE_YAML, home / "dagster.yaml")  # pools: default_limit 1, granularity op
    exported = tmp_path / "export"
    summary = generate(exported, seed=5, days=1, customers=30, progress=False)
    [customers_file] = [f for f in summary["files"] if f.endswith(("customers.csv", "customers.jsonl"))]
    landing = tmp_path / "landing"
    landing.mkdir()
    db = tmp_path / "warehouse.duckdb"  # the catalog name the dbt manifest's relations use
    make_dim_customers(db, CUSTOMERS)  # the mart the contacts sync reads
    faults = crm_server.FaultConfig(rate_limit_every=2, retry_after_seconds=RETRY_AFTER)
    with ServerThread(crm_server.create_app(tmp_path / "crm.sqlite", token=TOKEN, faults=faults)) as crm:
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "DUCKDB_PATH": str(db),
            "LANDING_URL": str(landing),
            "CRM_URL": crm.url,
            "CRM_TOKEN": TOKEN,
            "SYNC_CONCURRENCY": "1",
            "PYTHONPATH": str(REPO_ROOT),
        }

        def materialize(*args: str) -> subprocess.Popen:
            command = [DAGSTER, "asset", "materialize", "-m", "pipeline.definitions", *args]
            return subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

        sync = materialize("--select", SYNC)
        stats_url, auth = f"{crm.url}/_devstack/stats", {"Authorization": f"Bearer {TOKEN}"}
        deadline = time.monotonic() + 180
        # The first batch is applied; the second request, sent right after, gets the 429 and the long wait.
        while httpx.get(stats_url, headers=auth).json()["upsert_requests"] < 1:
            assert sync.poll() is None, sync.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the sync never reached the CRM"
            time.sleep(0.1)

        # A landing file arrives; its load and the staging model over it run in another run.
        (landing / customers_file).parent.mkdir(parents=True)
        shutil.copy(exported / customers_file, landing / customers_file)
        load = materialize("--select", "raw/customers,stg_shop__customers", "--partition", summary["first_day"])
        load_output = load.communicate(timeout=300)[0].decode()
        sync_output = sync.communicate(timeout=300)[0].decode()
        stats = httpx.get(stats_url, headers=auth).json()

    assert load.returncode == 0, load_output[-3000:]
    assert sync.returncode == 0, sync_output[-3000:]
    assert stats["contacts"] == CUSTOMERS and stats["upserted_inputs"] == CUSTOMERS
    with duckdb.connect(str(db), read_only=True) as conn:
        assert conn.execute("SELECT count(*) FROM activation.sync_state").fetchone()[0] == CUSTOMERS
        loaded = conn.execute("SELECT count(*) FROM raw.customers").fetchone()[0]
        assert loaded == summary["rows"]["customers"]
        assert conn.execute("SELECT count(*) FROM stg_shop__customers").fetchone()[0] > 0

    module_env.setenv("DAGSTER_HOME", str(home))  # devstack/dagster.yaml keeps Dagster's folders under DAGSTER_HOME
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
    try:
        runs = {
            "sync" if SYNC in {k.to_user_string() for k in run.asset_selection or ()} else "load": run
            for run in instance.get_runs()
        }
        synced = step_successes(instance, runs["sync"].run_id)
        loaded_steps = step_successes(instance, runs["load"].run_id)
        materialized = {
            record.dagster_event.asset_key.to_user_string()
            for record in instance.all_logs(runs["load"].run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
        }
        sync_meta = instance.get_latest_materialization_event(dg.AssetKey(SYNC)).asset_materialization.metadata
    finally:
        instance.dispose()

    assert {"raw/customers", "stg_shop__customers"} <= materialized
    assert set(synced) == {f"{SYNC}.plan", f"{SYNC}.send", f"{SYNC}.acknowledge"}
    assert sync_meta["retries"].value >= 2, "the CRM answered 429 and the sync waited out its Retry-After"
    # The order that matters: the load's steps (the raw load and the dbt build) succeeded while the sync was
    # still sending, i.e. after its plan and before its send step ended.
    assert loaded_steps, "the load run recorded its steps"
    assert synced[f"{SYNC}.plan"] < min(loaded_steps.values())
    assert max(loaded_steps.values()) < synced[f"{SYNC}.send"], (loaded_steps, synced)
