"""Sync destinations against the real local servers: records the CRM refuses, mirror deletes, signed webhooks."""

import dataclasses

import dagster as dg
import duckdb
import httpx

from devstack import crm as crm_server
from devstack import webhook_receiver
from devstack.serve import ServerThread
from pipeline.activation.assets import build_sync_asset
from pipeline.activation.destinations.crm_contacts import CrmResource
from pipeline.activation.destinations.webhook import WebhookResource
from pipeline.activation.outbox import REJECTED, pending
from pipeline.activation.signing import verify
from pipeline.activation.syncs import ResolvedSync, load_syncs
from pipeline.core.resources import WarehouseResource

TOKEN = "t"
SECRET = "whsec-test"


def spec_named(name):
    return next(s for s in load_syncs() if s.name == name)


def materialize(asset, db, instance, **resources):
    result = dg.materialize(
        [asset],
        resources={"warehouse": WarehouseResource(path=str(db)), **resources},
        instance=instance,
        raise_on_error=False,
    )
    mats = result.get_asset_materialization_events()
    return result, (mats[0].materialization.metadata if mats else {})


def make_customers(db, count: int, bad_emails=()) -> None:
    with duckdb.connect(str(db)) as conn:
        conn.execute(
            f"""CREATE OR REPLACE TABLE dim_customers AS SELECT i AS customer_id,
               CASE WHEN i IN ({", ".join(map(str, bad_emails)) or "NULL"}) THEN 'c' || i || ' at x.io'
                    ELSE 'c' || i || '@x.io' END AS email,
               'A' AS first_name, 'B' AS last_name, 'US' AS country_code, 'North America' AS region,
               true AS marketing_opt_in, 'new' AS customer_segment, i * 1.5 AS lifetime_value, 1 AS order_count,
               TIMESTAMP '2026-11-01' AS last_order_at FROM range(1, {count + 1}) t(i)"""
        )


def test_records_the_crm_refuses_are_collected_not_retried_and_the_rest_lands(tmp_path):
    db = tmp_path / "w.duckdb"
    make_customers(db, 300, bad_emails=(17, 230))
    asset = build_sync_asset(
        ResolvedSync(spec_named("crm_contacts_sync"), dg.AssetKey("dim_customers"), "dim_customers")
    )
    instance = dg.DagsterInstance.ephemeral()
    with ServerThread(crm_server.create_app(tmp_path / "crm.sqlite", token=TOKEN)) as crm:
        stats = lambda: httpx.get(f"{crm.url}/_devstack/stats", headers={"Authorization": f"Bearer {TOKEN}"}).json()  # noqa: E731
        resource = CrmResource(base_url=crm.url, token=TOKEN)
        result, meta = materialize(asset, db, instance, crm=resource)
        assert result.success, "a refused record is not a failed sync"
        assert (meta["sent"].value, meta["failed"].value, meta["batches"].value) == (298, 2, 3)
        assert [r["key"] for r in meta["rejected_sample"].value] == ["17", "230"]
        assert "INVALID_EMAIL" in meta["rejected_sample"].value[0]["error"]
        assert stats()["contacts"] == 298
        with duckdb.connect(str(db), read_only=True) as conn:
            assert conn.execute(f"SELECT count(*) FROM {REJECTED}").fetchone()[0] == 2

        requests = stats()["upsert_requests"]
        result, meta = materialize(asset, db, instance, crm=resource)
        assert (meta["sent"].value, meta["skipped"].value, meta["failed"].value) == (0, 2, 0)
        assert stats()["upsert_requests"] == requests, "unchanged refused records are not sent again"

        with duckdb.connect(str(db)) as conn:
            conn.execute("UPDATE dim_customers SET email = 'fixed17@x.io' WHERE customer_id = 17")
        result, meta = materialize(asset, db, instance, crm=resource)
        assert (meta["sent"].value, meta["adds"].value, meta["skipped"].value) == (1, 1, 1)
        assert stats()["contacts"] == 299


def test_mirror_mode_archives_contacts_that_left_the_model(tmp_path):
    db = tmp_path / "w.duckdb"
    make_customers(db, 250)
    spec = dataclasses.replace(spec_named("crm_contacts_sync"), mode="mirror")
    asset = build_sync_asset(ResolvedSync(spec, dg.AssetKey("dim_customers"), "dim_customers"))
    instance = dg.DagsterInstance.ephemeral()
    with ServerThread(crm_server.create_app(tmp_path / "crm.sqlite", token=TOKEN)) as crm:
        resource = CrmResource(base_url=crm.url, token=TOKEN)
        assert materialize(asset, db, instance, crm=resource)[0].success
        make_customers(db, 240)
        result, meta = materialize(asset, db, instance, crm=resource)
        assert result.success and (meta["deletes"].value, meta["deleted"].value) == (10, 10)
        stats = httpx.get(f"{crm.url}/_devstack/stats", headers={"Authorization": f"Bearer {TOKEN}"}).json()
        assert (stats["contacts"], stats["archived"]) == (240, 10)
        gone = httpx.get(
            f"{crm.url}/crm/v3/objects/contacts/245",
            params={"idProperty": "tidewater_customer_id"},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert gone.status_code == 404
        assert materialize(asset, db, instance, crm=resource)[1]["planned"].value == 0


def make_segments(db, segments) -> None:
    with duckdb.connect(str(db)) as conn:
        conn.execute(
            "CREATE OR REPLACE TABLE mart_customer_segments (customer_segment VARCHAR, sort_order INT,"
            " customer_count BIGINT, customer_share DECIMAL(6, 4), opted_in_count BIGINT, order_count BIGINT,"
            " lifetime_value DECIMAL(18, 2))"
        )
        conn.executemany(
            "INSERT INTO mart_customer_segments VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(name, i, 10 * i, 0.1 * i, i, 3 * i, 100.25 * i) for i, name in enumerate(segments, 1)],
        )


def test_webhook_batches_are_signed_mirrored_and_a_rejected_signature_leaves_the_batch_pending(tmp_path):
    db = tmp_path / "w.duckdb"
    make_segments(db, ["prospect", "new", "active", "loyal", "vip", "lapsed"])
    spec = spec_named("segment_summary_webhook")
    asset = build_sync_asset(ResolvedSync(spec, dg.AssetKey("mart_customer_segments"), "mart_customer_segments"))
    instance = dg.DagsterInstance.ephemeral()
    with ServerThread(webhook_receiver.create_app(secret=SECRET)) as hooks:
        received = lambda: httpx.get(f"{hooks.url}/_devstack/received").json()  # noqa: E731
        webhook = WebhookResource(base_url=f"{hooks.url}/hooks", secret=SECRET)
        result, meta = materialize(asset, db, instance, webhook=webhook)
        assert result.success and meta["sent"].value == 6
        [request] = received()
        assert request["path"] == "/hooks/segments" and "rejected" not in request
        verify(SECRET, request["body"].encode(), request["headers"])  # what a receiver runs, on the exact bytes
        body = request["json"]
        assert (body["sync"], body["op"], len(body["records"])) == ("segment_summary_webhook", "upsert", 6)
        assert body["records"][0] == {
            "customer_segment": "active",
            "sort_order": 3,
            "customers": 30,
            "share": "0.3000",
            "opted_in": 3,
            "orders": 9,
            "lifetime_value": "300.75",
        }
        assert request["headers"]["idempotency-key"] == body["batch"]

        # A segment disappears: mirror mode sends its delete, nothing else.
        make_segments(db, ["prospect", "new", "active", "loyal", "vip"])
        result, meta = materialize(asset, db, instance, webhook=webhook)
        assert meta["deletes"].value == 1 and received()[-1]["json"]["keys"] == ["lapsed"]

        # A wrong secret: the receiver answers 401, the sync fails and the batch stays pending ...
        make_segments(db, ["prospect", "new", "active", "loyal", "vip", "dormant"])
        result, _ = materialize(asset, db, instance, webhook=WebhookResource(base_url=webhook.base_url, secret="old"))
        assert not result.success and "answered 401" in str(result.failure_data_for_node(spec.name).error)
        assert received()[-1]["rejected"].startswith("signature does not match")
        with duckdb.connect(str(db)) as conn:
            [left] = pending(conn, spec.name)
        # ... until a run with the rotated secrets (old and new, both signatures sent) delivers it.
        rotated = WebhookResource(base_url=webhook.base_url, secret=f"old,{SECRET}")
        result, meta = materialize(asset, db, instance, webhook=rotated)
        assert result.success and meta["resent_batches"].value == 1 and meta["planned"].value == 0
        last = received()[-1]
        assert last["headers"]["idempotency-key"] == left.idempotency_key and "rejected" not in last
        assert [r["customer_segment"] for r in last["json"]["records"]] == ["dormant"]
