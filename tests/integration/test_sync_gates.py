"""The sync refuses to send — failing with the reason — on failed upstream checks, stale or failed input, and
too large a change; `force` overrides, `dry_run` reports without sending. Facts come from a real instance."""

import dagster as dg
import duckdb
import httpx
import pytest

from devstack import crm as crm_server
from devstack.serve import ServerThread
from pipeline.activation.assets import build_sync_asset
from pipeline.activation.destinations.crm_contacts import CrmResource
from pipeline.activation.syncs import ResolvedSync, load_syncs
from pipeline.core.resources import WarehouseResource
from tests.integration.test_sync_faults import TOKEN
from tests.marts import make_dim_customers

RAW, DIM, SYNC = dg.AssetKey(["raw", "customers"]), dg.AssetKey("dim_customers"), dg.AssetKey("crm_contacts_sync")


class RawConfig(dg.Config):
    fail: bool = False


class DimConfig(dg.Config):
    fail_check: bool = False
    changed_share: float = 0.0


@pytest.fixture
def world(tmp_path):
    db = str(tmp_path / "w.duckdb")

    @dg.asset(key=RAW)
    def raw(config: RawConfig) -> None:
        if config.fail:
            raise RuntimeError("landing file rejected")

    @dg.asset(key=DIM, deps=[RAW], check_specs=[dg.AssetCheckSpec("emails_present", asset=DIM, blocking=True)])
    def dim(config: DimConfig):
        if not (tmp_path / "w.duckdb").exists():
            make_dim_customers(tmp_path / "w.duckdb", 1000)
        with duckdb.connect(db) as conn:
            conn.execute(
                "UPDATE dim_customers SET email = 'v' || random() || '@x.io' WHERE customer_id <= ?",
                [int(1000 * config.changed_share)],
            )
        yield dg.MaterializeResult()
        yield dg.AssetCheckResult(check_name="emails_present", passed=not config.fail_check)

    spec = next(s for s in load_syncs() if s.name == "crm_contacts_sync")
    scope = {"upstream": frozenset({RAW}), "checks": frozenset({dg.AssetCheckKey(DIM, "emails_present")})}
    sync = build_sync_asset(ResolvedSync(spec, DIM, "dim_customers", **scope))
    instance = dg.DagsterInstance.ephemeral()
    with ServerThread(crm_server.create_app(tmp_path / "crm.sqlite", token=TOKEN)) as crm:
        resources = {"warehouse": WarehouseResource(path=db), "crm": CrmResource(base_url=crm.url, token=TOKEN)}

        def run(*keys, **config):
            run_config = {"ops": {k: {"config": v} for k, v in config.items()}}
            return dg.materialize(
                [raw, dim, sync],
                selection=list(keys),
                resources=resources,
                instance=instance,
                run_config=run_config,
                raise_on_error=False,
            )

        def sent() -> int:
            return httpx.get(f"{crm.url}/_devstack/stats", headers={"Authorization": f"Bearer {TOKEN}"}).json()[
                "upserted_inputs"
            ]

        run(RAW, DIM)
        assert run(SYNC).success and sent() == 1000  # the first sync is exempt from the blast radius
        yield run, sent


def refusal(result) -> str:
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    return failure.step_failure_data.user_failure_data.description


def test_failed_blocking_check_upstream(world):
    run, sent = world
    run(DIM, dim_customers={"fail_check": True})
    refused = refusal(run(SYNC))
    assert "blocking check(s) failed on dim_customers or upstream: dim_customers:emails_present" in refused
    assert refused.endswith(
        "Nothing was sent: the sync sends once the input is fixed and the model rebuilt, or now"
        " with `force: true` in its run config."
    )
    assert sent() == 1000


def test_stale_mart_and_force(world):
    run, sent = world
    run(RAW)  # new data landed after the mart was built
    assert "dim_customers is older than its input: raw/customers" in refusal(run(SYNC))
    assert run(SYNC, crm_contacts_sync={"force": True}).success


def test_ingestion_failed_then_dbt_ran_green(world):
    run, sent = world
    run(RAW, raw__customers={"fail": True})  # ingestion failed at 7 ...
    run(DIM)  # ... dbt ran green at 8, on yesterday's data
    assert "the latest load of raw/customers failed" in refusal(run(SYNC))
    assert sent() == 1000


def test_blast_radius_and_dry_run(world):
    run, sent = world
    run(DIM, dim_customers={"changed_share": 0.6})
    dry = run(SYNC, crm_contacts_sync={"dry_run": True, "force": True})
    meta = dry.get_asset_materialization_events()[0].materialization.metadata
    assert (meta["planned"].value, meta["sent"].value) == (600, 0) and len(meta["sample"].value) == 20
    assert "600 of 1000 records would change (60%)" in refusal(run(SYNC))
    assert sent() == 1000
    assert run(SYNC, crm_contacts_sync={"force": True}).success and sent() == 1600
