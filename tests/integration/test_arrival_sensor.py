"""The landing arrival sensor against the real S3 API (moto's server over HTTP): run requests, cursor round
trips across ticks, re-uploads, and the cost of a tick on a bucket holding 100,000 old objects."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

import dagster as dg
import pytest

from pipeline.core.objectstore import LandedObject
from pipeline.core.resources import LandingResource
from pipeline.core.s3 import S3LandingStore
from pipeline.ingestion.arrivals import ArrivalCursor, plan_tick
from pipeline.ingestion.contracts import SourceTable
from pipeline.ingestion.sensor import (
    LANDING_ETAG_TAG,
    LANDING_KEY_TAG,
    LANDING_KEYS_TAG,
    SENSOR_NAME,
    build_arrival_sensor,
)

if TYPE_CHECKING:
    from dagster._core.definitions.sensor_definition import SensorExecutionData

    from tests.s3_fixtures import S3Bucket

pytest_plugins = ["tests.s3_fixtures"]
pytestmark = pytest.mark.integration

LOOKBACK_DAYS = 3
OVERLAP_SECONDS = 300
PARTITIONS = dg.DailyPartitionsDefinition(start_date="2020-01-01", end_offset=1, timezone="UTC")


def contract(system: str, name: str) -> SourceTable:
    return SourceTable(system, name, name, "", ("id",), {"id": "BIGINT"})


TABLES = [contract("shop", "orders"), contract("shop", "customers"), contract("billing", "payments")]


def stub_asset(table: SourceTable) -> dg.AssetsDefinition:
    @dg.asset(key=table.asset_key, partitions_def=PARTITIONS)
    def _stub() -> None: ...

    return _stub


class Landing:
    """The bucket seen three ways: a raw client to drop files, the store, and the resource the sensor uses."""

    def __init__(self, s3: S3Bucket):
        self.s3 = s3
        self.client = s3.client()
        self.resource = LandingResource(url=f"s3://{s3.bucket}/landing", endpoint_url=s3.endpoint_url)
        self.sensor = build_arrival_sensor(
            TABLES, minimum_interval_seconds=30, overlap_seconds=OVERLAP_SECONDS, lookback_days=LOOKBACK_DAYS
        )
        self.defs = dg.Definitions(
            assets=[stub_asset(t) for t in TABLES], sensors=[self.sensor], resources={"landing": self.resource}
        )

    def drop(self, key: str, body: bytes = b"id\n1\n") -> str:
        """Write an object the way a source system does; returns its ETag as the store reports it."""
        response = self.client.put_object(Bucket=self.s3.bucket, Key=f"landing/{key}", Body=body)
        return response["ETag"].strip('"')

    def tick(self, cursor: str | None) -> SensorExecutionData:
        context = dg.build_sensor_context(cursor=cursor, definitions=self.defs, resources={"landing": self.resource})
        return self.sensor.evaluate_tick(context)


@pytest.fixture
def landing(s3_bucket: S3Bucket) -> Landing:
    return Landing(s3_bucket)


def today() -> date:
    return datetime.now(UTC).date()


def requested(result: SensorExecutionData) -> dict[str, tuple[str, list[dg.AssetKey]]]:
    return {r.run_key: (r.partition_key, list(r.asset_selection or [])) for r in result.run_requests or []}


def test_new_files_become_one_run_each_for_their_raw_partition(landing: Landing, caplog: pytest.LogCaptureFixture):
    day, yesterday = today(), today() - timedelta(days=1)
    orders = f"shop/{day}/orders.csv"
    payments = f"billing/{yesterday}/payments.jsonl.gz"
    orders_etag, payments_etag = landing.drop(orders), landing.drop(payments, b"\x1f\x8b...")
    landing.drop(f"shop/{day}/orders.xlsx")  # not a landing format: reported, not loaded
    landing.drop(f"processed/shop/{yesterday}/orders.csv")  # the loader's folders are never arrivals
    landing.drop(f"quarantine/{yesterday}/shop/orders.csv")

    with caplog.at_level(logging.WARNING):
        first = landing.tick(None)

    assert requested(first) == {
        f"{orders}@{orders_etag}": (day.isoformat(), [dg.AssetKey(["raw", "orders"])]),
        f"{payments}@{payments_etag}": (yesterday.isoformat(), [dg.AssetKey(["raw", "payments"])]),
    }
    by_key = {r.tags[LANDING_KEY_TAG]: r for r in first.run_requests}
    assert by_key[orders].tags[LANDING_ETAG_TAG] == orders_etag
    assert by_key[orders].tags["dagster/sensor_name"] == SENSOR_NAME
    assert f"shop/{day}/orders.xlsx" in caplog.text

    cursor = ArrivalCursor.from_json(first.cursor)
    assert cursor.high_water is not None and cursor.resume_from is None
    assert set(cursor.seen) == {orders, payments, f"shop/{day}/orders.xlsx"}  # uploaded within the overlap
    assert cursor.seen[orders] == orders_etag

    second = landing.tick(first.cursor)
    assert second.run_requests == []
    assert "No new landing files" in second.skip_message
    assert second.cursor == first.cursor

    customers = f"shop/{day}/customers.csv"
    customers_etag = landing.drop(customers)
    third = landing.tick(second.cursor)
    assert requested(third) == {f"{customers}@{customers_etag}": (day.isoformat(), [dg.AssetKey(["raw", "customers"])])}


def test_a_reupload_with_new_content_is_requested_again_and_the_same_content_is_not(landing: Landing):
    key = f"shop/{today()}/orders.csv"
    first_etag = landing.drop(key, b"id\n1\n")
    first = landing.tick(None)
    assert list(requested(first)) == [f"{key}@{first_etag}"]

    second_etag = landing.drop(key, b"id\n1\n2\n")
    assert second_etag != first_etag
    second = landing.tick(first.cursor)
    assert list(requested(second)) == [f"{key}@{second_etag}"]

    assert landing.drop(key, b"id\n1\n2\n") == second_etag  # the same bytes again: same object, same ETag
    third = landing.tick(second.cursor)
    assert third.run_requests == [] and third.skip_message


def warnings_of(capfd: pytest.CaptureFixture[str]) -> str:
    """What the sensor's log said since the last call (Dagster's log handler writes to stderr)."""
    return capfd.readouterr().err


def test_files_for_days_outside_the_partitions_do_not_fail_the_tick(landing: Landing, capfd):
    good = f"shop/{today()}/orders.csv"
    good_etag = landing.drop(good)
    landing.drop("shop/2019-12-31/orders.csv")  # before the partitions' start date
    landing.drop(f"shop/{today() + timedelta(days=30)}/orders.csv")  # a partition that has not begun
    warnings_of(capfd)

    first = landing.tick(None)

    assert list(requested(first)) == [f"{good}@{good_etag}"]
    said = warnings_of(capfd)
    assert "2 new file(s)" in said and "set aside" in said and "shop/2019-12-31/orders.csv" in said
    second = landing.tick(first.cursor)
    assert second.run_requests == [] and "2019-12-31" not in warnings_of(capfd)  # set aside: reported once

    # LANDING_START_DATE moves back a year and the code location reloads: the next sweep loads the early file,
    # once; the day that has not begun stays aside, unreported.
    earlier = dg.DailyPartitionsDefinition(start_date="2019-01-01", end_offset=1, timezone="UTC")
    landing.defs = dg.Definitions(
        assets=[dg.asset(key=t.asset_key, partitions_def=earlier)(lambda: None) for t in TABLES],
        sensors=[landing.sensor],
        resources={"landing": landing.resource},
    )
    third = landing.tick(second.cursor)
    assert [(key.split("@")[0], day) for key, (day, _) in requested(third).items()] == [
        ("shop/2019-12-31/orders.csv", "2019-12-31")
    ]
    assert "set aside" not in warnings_of(capfd)
    assert landing.tick(third.cursor).run_requests == []


def test_a_folder_of_no_system_and_a_file_at_the_root_are_reported(landing: Landing, capfd):
    landing.drop("shpo/2026-11-01/orders.csv")  # a typo in the system's folder: no system's listing returns it
    landing.drop("customers.csv")
    warnings_of(capfd)
    first = landing.tick(None)
    assert first.run_requests == []
    said = warnings_of(capfd)
    assert "2 name(s) at the top of" in said and "customers.csv, shpo/" in said
    landing.tick(first.cursor)
    assert "shpo" not in warnings_of(capfd)  # once


def test_a_backlog_is_drained_over_ticks_through_the_cursor(s3_bucket: S3Bucket):
    landing = Landing(s3_bucket)
    landing.sensor = build_arrival_sensor(
        TABLES, minimum_interval_seconds=30, overlap_seconds=OVERLAP_SECONDS, lookback_days=1, max_arrivals=4
    )
    landing.defs = dg.Definitions(
        assets=[stub_asset(t) for t in TABLES], sensors=[landing.sensor], resources={"landing": landing.resource}
    )
    keys = [f"{t.system}/2024-0{m}-01/{t.file}.csv" for m in range(1, 4) for t in TABLES]  # months-old days
    etags = {key: landing.drop(key) for key in keys}

    cursor, requested_keys, requests = None, [], []
    for _ in range(4):
        result = landing.tick(cursor)
        requests += result.run_requests or []
        cursor = result.cursor
    for request in requests:
        requested_keys += json.loads(request.tags.get(LANDING_KEYS_TAG, "[]"))
        requested_keys += [request.tags[LANDING_KEY_TAG]] if LANDING_KEY_TAG in request.tags else []

    assert sorted(requested_keys) == sorted(etags)  # all 9, each once
    assert len({r.run_key for r in requests}) == len(requests)


class CountingStore:
    """Wraps a store and counts what its listings return: the cost of a tick, independent of the clock."""

    def __init__(self, store: S3LandingStore):
        self.store = store
        self.url = store.url
        self.calls: list[tuple[str, str | None]] = []
        self.listed: list[str] = []

    def list(self, prefix: str = "", start_after: str | None = None) -> Iterator[LandedObject]:
        self.calls.append((prefix, start_after))
        for obj in self.store.list(prefix, start_after):
            self.listed.append(obj.key)
            yield obj


def test_a_tick_lists_the_recent_days_only_however_large_the_bucket(landing: Landing):
    # 100,002 objects across 33,334 old days (1900 to 1991), all uploaded "now" by a bulk copy long since loaded.
    first_day = date(1900, 1, 1)
    landing.s3.put_many(
        (
            f"landing/{t.system}/{first_day + timedelta(days=i // len(TABLES))}/{t.file}.csv"
            for i in range(100_002)
            for t in [TABLES[i % len(TABLES)]]
        ),
        b"id\n1\n",
    )
    new = [f"{t.system}/{today() - timedelta(days=i // 3)}/{t.file}.csv" for i, t in enumerate(TABLES * 4)][:10]
    etags = {key: landing.drop(key) for key in new}
    # The sensor has been running: its last tick saw the bulk copy's days fall out of the lookback long ago, and
    # its last sweep of every day (costly on this bucket, so once per sweep interval) was a minute ago.
    cursor = ArrivalCursor(
        high_water=datetime.now(UTC) - timedelta(minutes=10),
        sweep_floor=datetime.now(UTC) - timedelta(minutes=10),
        swept_at=datetime.now(UTC) - timedelta(minutes=1),
    )

    store = CountingStore(landing.resource.store())
    plan = plan_tick(
        store, TABLES, cursor, overlap=timedelta(seconds=OVERLAP_SECONDS), lookback_days=LOOKBACK_DAYS, today=today()
    )

    assert sorted(a.obj.key for a in plan.arrivals) == sorted(new)
    assert sorted(store.listed) == sorted(new)  # not one of the 100,002 old objects
    # The window starts LOOKBACK_DAYS before the high-water mark's day (which is yesterday just after midnight).
    start = (min(cursor.high_water.date(), today()) - timedelta(days=LOOKBACK_DAYS)).isoformat()
    assert sorted(store.calls) == [("billing/", f"billing/{start}"), ("shop/", f"shop/{start}")]

    result = landing.tick(cursor.to_json())
    # Consecutive days of one table come as one ranged run; every new key is requested exactly once.
    keys = [k for r in result.run_requests for k in json.loads(r.tags.get(LANDING_KEYS_TAG, "[]"))]
    keys += [r.tags[LANDING_KEY_TAG] for r in result.run_requests if LANDING_KEY_TAG in r.tags]
    assert sorted(keys) == sorted(etags)
    assert len(result.run_requests) < len(etags)
    assert len(result.cursor) < 2_000


def test_a_file_for_a_day_older_than_the_lookback_is_requested_not_skipped(landing: Landing, capfd):
    """Issue 13's newcomer: the demo's days lie weeks back; a file dropped later for the day after them is loaded
    (the sweep lists every day while the days before the window hold few files), and told about in the log."""
    old = today() - timedelta(days=30)
    for i in range(3):
        landing.drop(f"shop/{old + timedelta(days=i)}/orders.csv")
    first = landing.tick(None)
    assert len(first.run_requests) == 1  # the three days of one table: one ranged run
    for i in range(3):  # loaded and moved to processed/ by that run
        key = f"landing/shop/{old + timedelta(days=i)}/orders.csv"
        landing.client.copy_object(
            Bucket=landing.s3.bucket, Key=key.replace("landing/", "landing/processed/", 1),
            CopySource={"Bucket": landing.s3.bucket, "Key": key},
        )  # fmt: skip
        landing.client.delete_object(Bucket=landing.s3.bucket, Key=key)
    landing.drop(f"shop/{today()}/customers.csv")  # today's files move the high-water mark on
    second = landing.tick(first.cursor)
    assert [r.tags.get(LANDING_KEY_TAG) for r in second.run_requests] == [f"shop/{today()}/customers.csv"]

    late = f"shop/{old + timedelta(days=3)}/orders.csv"
    etag = landing.drop(late)
    capfd.readouterr()
    third = landing.tick(second.cursor)

    assert requested(third) == {
        f"{late}@{etag}": ((old + timedelta(days=3)).isoformat(), [dg.AssetKey(["raw", "orders"])])
    }
    told = capfd.readouterr().err  # the tick's log
    assert "The sweep found 1 file(s)" in told and late in told
    assert landing.tick(third.cursor).run_requests == []
