"""One warehouse writer: two runs started at once through a real instance queue for the `warehouse` pool slot
instead of failing on DuckDB's file lock."""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import httpx
from dagster._core.instance.ref import InstanceRef

from devstack import INSTANCE_YAML
from devstack import crm as crm_server
from devstack.demo_data import generate
from devstack.serve import ServerThread
from pipeline.core.settings import REPO_ROOT, WAREHOUSE_POOL
from tests.marts import make_dim_customers

TOKEN = "t"
DAGSTER = str(Path(sys.executable).with_name("dagster"))


def test_every_asset_that_opens_the_warehouse_is_in_the_warehouse_pool(module_env, demo_manifest, tmp_path):
    module_env.setenv("DUCKDB_PATH", str(tmp_path / "w.duckdb"))
    from pipeline.definitions import defs

    writers = [
        a
        for a in defs().resolve_asset_graph().assets_defs
        if a.is_executable and a.required_resource_keys & {"warehouse", "dbt"}
    ]
    assert len(writers) >= 8  # five raw tables, dbt, two syncs
    assert {a.op.name: a.op.pool for a in writers} == {a.op.name: WAREHOUSE_POOL for a in writers}
    assert "default_limit: 1" in INSTANCE_YAML.read_text()


def test_two_runs_at_once_queue_for_the_warehouse_instead_of_failing(module_env, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(INSTANCE_YAML, home / "dagster.yaml")  # pools: default_limit 1
    summary = generate(tmp_path / "landing", seed=3, days=1, customers=30, progress=False)
    db = tmp_path / "warehouse.duckdb"  # the catalog name the dbt manifest's relations use
    make_dim_customers(db, 600)  # the mart the contacts sync reads
    # Six batches, one at a time, 4 s each at the CRM: the sync holds the warehouse for ~24 s while it sends,
    # longer than the second process needs to start.
    faults = crm_server.FaultConfig(slow_seconds=4.0)
    with ServerThread(crm_server.create_app(tmp_path / "crm.sqlite", token=TOKEN, faults=faults)) as crm:
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "DUCKDB_PATH": str(db),
            "LANDING_URL": str(tmp_path / "landing"),
            "CRM_URL": crm.url,
            "CRM_TOKEN": TOKEN,
            "SYNC_CONCURRENCY": "1",
            "PYTHONPATH": str(REPO_ROOT),
        }

        def materialize(*args: str) -> subprocess.Popen:
            command = [DAGSTER, "asset", "materialize", "-m", "pipeline.definitions", *args]
            return subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

        sync = materialize("--select", "crm_contacts_sync")
        stats_url = f"{crm.url}/_devstack/stats"
        deadline = time.monotonic() + 180
        while httpx.get(stats_url, headers={"Authorization": f"Bearer {TOKEN}"}).json()["upsert_requests"] < 1:
            assert sync.poll() is None, sync.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the sync never reached the CRM"
            time.sleep(0.1)
        # The sync is mid-send and holds the warehouse: now a load of raw/customers starts.
        load = materialize("--select", "raw/customers", "--partition", summary["first_day"])
        load_output = load.communicate(timeout=300)[0].decode()
        sync_output = sync.communicate(timeout=300)[0].decode()

    assert sync.returncode == 0, sync_output[-3000:]
    assert load.returncode == 0, load_output[-3000:]
    assert "Could not set lock" not in load_output + sync_output
    with duckdb.connect(str(db), read_only=True) as conn:
        assert conn.execute("select count(*) from raw.customers").fetchone()[0] == summary["rows"]["customers"]
        assert conn.execute("select count(*) from activation.sync_state").fetchone()[0] == 600

    module_env.setenv("DAGSTER_HOME", str(home))  # devstack/dagster.yaml keeps Dagster's folders under DAGSTER_HOME
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
    runs = {r.asset_selection and next(iter(r.asset_selection)).to_user_string(): r for r in instance.get_runs()}
    blocked = [
        record.user_message
        for record in instance.all_logs(runs["raw/customers"].run_id)
        if "blocked by limit for pool warehouse" in record.user_message
    ]
    assert blocked, "the load waited for the sync's warehouse slot"
    instance.dispose()
