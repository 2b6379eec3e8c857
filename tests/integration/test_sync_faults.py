"""The contacts sync against the local CRM with faults on: 429s, 5xx, dropped connections and batches applied
but answered with 500. Retries with the same Idempotency-Key must leave exactly one copy of each record."""

import dagster as dg
import httpx

from devstack import crm as crm_server
from devstack.serve import ServerThread
from pipeline.activation.assets import build_sync_asset
from pipeline.activation.destinations.crm_contacts import CrmResource
from pipeline.activation.syncs import ResolvedSync, load_syncs
from pipeline.core.resources import WarehouseResource
from tests.marts import make_dim_customers

TOKEN = "t"


def test_sync_heals_transient_faults_and_applies_each_record_once(tmp_path):
    db = tmp_path / "w.duckdb"
    make_dim_customers(db, 1000)
    spec = next(s for s in load_syncs() if s.name == "crm_contacts_sync")
    asset = build_sync_asset(ResolvedSync(spec, dg.AssetKey("dim_customers"), "dim_customers"))
    faults = crm_server.FaultConfig(
        rate_limit_every=3, retry_after_seconds=0.01, error_rate=0.2, drop_rate=0.15, fail_after_apply_rate=0.2, seed=7
    )
    with ServerThread(crm_server.create_app(tmp_path / "crm.sqlite", token=TOKEN, faults=faults)) as crm:
        resources = {
            "warehouse": WarehouseResource(path=str(db)),
            "crm": CrmResource(base_url=crm.url, token=TOKEN, max_attempts=12, backoff_base_seconds=0.01),
        }
        result = dg.materialize([asset], resources=resources, instance=dg.DagsterInstance.ephemeral())
        assert result.success
        meta = result.get_asset_materialization_events()[0].materialization.metadata
        assert meta["sent"].value == 1000 and meta["batches"].value == 10 and meta["retries"].value > 0
        stats = httpx.get(f"{crm.url}/_devstack/stats", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    assert stats["contacts"] == 1000
    assert stats["upserted_inputs"] == 1000, "no batch was applied twice"


SYNC_IN_CHILD = """
import sys, dagster as dg
from pipeline.activation.assets import build_sync_asset
from pipeline.activation.syncs import ResolvedSync, load_syncs
from pipeline.activation.destinations.crm_contacts import CrmResource
from pipeline.core.resources import WarehouseResource
db, url = sys.argv[1:]
spec = next(s for s in load_syncs() if s.name == "crm_contacts_sync")
asset = build_sync_asset(ResolvedSync(spec, dg.AssetKey("dim_customers"), "dim_customers"))
resources = {"warehouse": WarehouseResource(path=db), "crm": CrmResource(base_url=url, token="t")}
dg.materialize([asset], resources=resources)
"""


def test_sigkill_mid_sync_then_rerun_leaves_exactly_one_copy(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    db = tmp_path / "w.duckdb"
    make_dim_customers(db, 1000)
    # Each batch takes 0.4 s at the CRM, and half of them are applied but answered 500 (then replayed).
    faults = crm_server.FaultConfig(slow_seconds=0.4, fail_after_apply_rate=0.5, seed=3)
    with ServerThread(crm_server.create_app(tmp_path / "crm.sqlite", token=TOKEN, faults=faults)) as crm:
        stats_url, auth = f"{crm.url}/_devstack/stats", {"Authorization": f"Bearer {TOKEN}"}
        child = subprocess.Popen(
            [sys.executable, "-c", SYNC_IN_CHILD, str(db), crm.url],
            env={**os.environ, "PYTHONPATH": os.getcwd()},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while httpx.get(stats_url, headers=auth).json()["contacts"] < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        assert child.returncode == -signal.SIGKILL
        partial = httpx.get(stats_url, headers=auth).json()["contacts"]
        assert 300 <= partial < 1000, "killed mid-sync"

        # The next run finishes the batches the killed one planned, then finds nothing new to send.
        resources = {
            "warehouse": WarehouseResource(path=str(db)),
            "crm": CrmResource(base_url=crm.url, token=TOKEN, backoff_base_seconds=0.01),
        }
        spec = next(s for s in load_syncs() if s.name == "crm_contacts_sync")
        asset = build_sync_asset(ResolvedSync(spec, dg.AssetKey("dim_customers"), "dim_customers"))
        result = dg.materialize([asset], resources=resources, instance=dg.DagsterInstance.ephemeral())
        meta = result.get_asset_materialization_events()[0].materialization.metadata
        assert meta["resent_batches"].value > 0 and meta["planned"].value == 0
        stats = httpx.get(stats_url, headers=auth).json()
    assert stats["contacts"] == 1000
    assert stats["upserted_inputs"] == 1000, "the batch in flight at the kill was not applied twice"
