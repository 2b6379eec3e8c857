"""One warehouse writer: a run whose step needs the warehouse while another holds it queues for the `warehouse`
pool slot (real instance, devstack/dagster.yaml) instead of failing on DuckDB's file lock.

(A sync no longer holds the slot while it sends: tests/integration/test_sync_off_the_warehouse.py.)"""

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import duckdb
from dagster._core.instance.ref import InstanceRef

from devstack import INSTANCE_YAML
from devstack.demo_data import generate
from pipeline.core.settings import REPO_ROOT, WAREHOUSE_POOL

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
    # Each op that opens the warehouse; a sync is three ops, and only its send (HTTP, no warehouse) is elsewhere.
    ops = {
        op.name: op
        for a in writers
        for op in (
            [n.definition for n in a.node_def.nodes] if isinstance(a.node_def, dg.GraphDefinition) else [a.node_def]
        )
    }
    opening = {name: op.pool for name, op in ops.items() if op.required_resource_keys & {"warehouse", "dbt"}}
    assert len(opening) >= 10 and set(opening.values()) == {WAREHOUSE_POOL}
    senders = {name: op.pool for name, op in ops.items() if name.endswith("__send")}
    assert senders == {"crm_contacts_sync__send": "sync_crm_contacts_sync"} | {
        "segment_summary_webhook__send": "sync_segment_summary_webhook"
    }
    assert "default_limit: 1" in INSTANCE_YAML.read_text()


def test_a_run_queues_for_the_held_warehouse_slot_instead_of_failing(module_env, tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(INSTANCE_YAML, home / "dagster.yaml")  # pools: default_limit 1
    module_env.setenv("DAGSTER_HOME", str(home))  # devstack/dagster.yaml keeps Dagster's folders under DAGSTER_HOME
    summary = generate(tmp_path / "landing", seed=3, days=1, customers=30, progress=False)
    db = tmp_path / "warehouse.duckdb"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DUCKDB_PATH": str(db),
        "LANDING_URL": str(tmp_path / "landing"),
        "PYTHONPATH": str(REPO_ROOT),
    }
    command = [DAGSTER, "asset", "materialize", "-m", "pipeline.definitions", "--select", "raw/customers"]
    command += ["--partition", summary["first_day"]]
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
    storage = instance.event_log_storage
    try:
        # Another writer holds the slot, and DuckDB's file lock with it (as a step of another run would).
        storage.initialize_concurrency_limit_to_default(WAREHOUSE_POOL)
        holder = str(uuid.uuid4())
        assert storage.claim_concurrency_slot(WAREHOUSE_POOL, holder, "writer").is_claimed
        with duckdb.connect(str(db)) as writer:
            writer.execute("CREATE TABLE held AS SELECT 1 AS one")
            load = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

            def blocked() -> list[str]:
                return [
                    record.user_message
                    for run in instance.get_runs()
                    for record in instance.all_logs(run.run_id)
                    if "blocked by limit for pool warehouse" in record.user_message
                ]

            deadline = time.monotonic() + 180
            while not blocked():
                assert load.poll() is None, load.stdout.read().decode()[-3000:]
                assert time.monotonic() < deadline, "the load never queued for the warehouse slot"
                time.sleep(0.2)
            assert load.poll() is None, "the load waits while the slot is held"
        storage.free_concurrency_slot_for_step(holder, "writer")
        output = load.communicate(timeout=300)[0].decode()
    finally:
        instance.dispose()

    assert load.returncode == 0, output[-3000:]
    assert "Could not set lock" not in output
    with duckdb.connect(str(db), read_only=True) as conn:
        assert conn.execute("select count(*) from raw.customers").fetchone()[0] == summary["rows"]["customers"]
