"""The arrival cursor and tick plan against a local folder with controlled modification times."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.core.objectstore import LandedObject, LocalLandingStore
from pipeline.ingestion.arrivals import ArrivalCursor, TickPlan, listing_start_day, plan_tick
from pipeline.ingestion.contracts import SourceTable

TODAY = date(2026, 11, 10)
T0 = datetime(2026, 11, 10, 8, 0, tzinfo=UTC)
OVERLAP = timedelta(seconds=60)
LOOKBACK = 3
NOW = T0 + timedelta(hours=1)


def table(system: str, name: str) -> SourceTable:
    return SourceTable(system, name, name, "", ("id",), {"id": "BIGINT"})


TABLES = [table("shop", "orders"), table("shop", "customers"), table("billing", "payments")]


class RecordingStore(LocalLandingStore):
    """A local store that records every listing call and every object it returned."""

    def __init__(self, root: Path):
        super().__init__(root, arrival_from_ctime=False)  # the tests set arrival times with os.utime
        self.calls: list[tuple[str, str | None]] = []
        self.returned: list[str] = []

    def list(self, prefix: str = "", start_after: str | None = None) -> Iterator[LandedObject]:
        self.calls.append((prefix, start_after))
        for obj in super().list(prefix, start_after):
            self.returned.append(obj.key)
            yield obj

    def reset(self) -> None:
        self.calls.clear()
        self.returned.clear()


@pytest.fixture
def store(tmp_path: Path) -> RecordingStore:
    return RecordingStore(tmp_path)


def put(store: LocalLandingStore, key: str, at: datetime, text: str = "id\n1\n") -> str:
    path = store.root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    ns = int(at.timestamp() * 1e9)
    os.utime(path, ns=(ns, ns))
    return key


def tick(store: LocalLandingStore, cursor: ArrivalCursor | None = None, **kwargs) -> TickPlan:
    options = {"overlap": OVERLAP, "lookback_days": LOOKBACK, "today": TODAY, "now": NOW, **kwargs}
    return plan_tick(store, TABLES, cursor or ArrivalCursor(), **options)


def keys(plan: TickPlan) -> list[str]:
    return [a.obj.key for a in plan.arrivals]


def roundtrip(cursor: ArrivalCursor) -> ArrivalCursor:
    return ArrivalCursor.from_json(cursor.to_json())


def test_first_tick_sees_everything_oldest_first_with_its_table_and_day(store):
    put(store, "shop/2026-11-09/orders.csv", T0 + timedelta(seconds=2))
    put(store, "billing/2026-11-09/payments.jsonl.gz", T0 + timedelta(seconds=1))
    put(store, "shop/2026-01-01/customers.parquet", T0 + timedelta(seconds=3))  # old day, first tick lists all

    plan = tick(store)

    assert keys(plan) == [
        "billing/2026-11-09/payments.jsonl.gz",
        "shop/2026-11-09/orders.csv",
        "shop/2026-01-01/customers.parquet",
    ]
    assert [a.table.table for a in plan.arrivals] == ["payments", "orders", "customers"]
    assert [a.landing_key.day for a in plan.arrivals] == [date(2026, 11, 9), date(2026, 11, 9), date(2026, 1, 1)]
    assert plan.arrivals[0].run_key == f"billing/2026-11-09/payments.jsonl.gz@{plan.arrivals[0].obj.etag}"
    assert plan.cursor.high_water == T0 + timedelta(seconds=3)
    assert plan.ignored == [] and plan.remaining == 0
    assert sorted(call[0] for call in store.calls) == ["billing/", "shop/"]
    assert all(start_after is None for _, start_after in store.calls)


def test_first_tick_on_an_empty_landing_keeps_an_empty_cursor(store):
    plan = tick(store)
    assert plan.arrivals == [] and plan.cursor == ArrivalCursor()
    assert plan.cursor.to_json() == '{"v":1}'


def test_second_tick_with_nothing_new_sees_nothing(store):
    put(store, "shop/2026-11-10/orders.csv", T0)
    first = tick(store)
    second = tick(store, roundtrip(first.cursor))
    assert keys(first) == ["shop/2026-11-10/orders.csv"]
    assert second.arrivals == [] and second.ignored == []
    assert second.cursor == first.cursor


def test_a_new_object_in_the_same_second_as_a_seen_one_is_found(store):
    put(store, "shop/2026-11-10/orders.csv", T0)
    first = tick(store)
    put(store, "shop/2026-11-10/customers.csv", T0)  # same instant, listed only now
    second = tick(store, roundtrip(first.cursor))
    assert keys(second) == ["shop/2026-11-10/customers.csv"]
    assert second.cursor.seen.keys() == {"shop/2026-11-10/orders.csv", "shop/2026-11-10/customers.csv"}
    assert tick(store, roundtrip(second.cursor)).arrivals == []


def test_an_object_that_lists_late_inside_the_overlap_is_found(store):
    put(store, "shop/2026-11-10/orders.csv", T0)
    first = tick(store)
    # A large upload started 40 s before the high-water mark and only completed (became listable) now.
    put(store, "billing/2026-11-10/payments.csv", T0 - timedelta(seconds=40))
    second = tick(store, roundtrip(first.cursor))
    assert keys(second) == ["billing/2026-11-10/payments.csv"]
    assert second.cursor.high_water == T0  # never moves back


def test_an_object_older_than_the_overlap_is_not_new(store):
    put(store, "shop/2026-11-10/orders.csv", T0)
    first = tick(store)
    put(store, "billing/2026-11-10/payments.csv", T0 - OVERLAP - timedelta(seconds=1))
    assert tick(store, roundtrip(first.cursor)).arrivals == []


def test_a_reupload_with_new_content_is_new_and_the_same_object_twice_is_not(store):
    key = put(store, "shop/2026-11-10/orders.csv", T0)
    first = tick(store)
    put(store, key, T0 + timedelta(seconds=5), text="id\n1\n2\n")
    second = tick(store, roundtrip(first.cursor))
    assert keys(second) == [key]
    assert second.arrivals[0].run_key != first.arrivals[0].run_key
    assert second.cursor.seen == {key: second.arrivals[0].obj.etag}  # the old version is forgotten
    assert tick(store, roundtrip(second.cursor)).arrivals == []


def test_a_reupload_in_the_same_second_is_new_because_its_etag_changed(store):
    key = put(store, "shop/2026-11-10/orders.csv", T0)
    first = tick(store)
    put(store, key, T0, text="id\n1\n2\n")
    assert keys(tick(store, roundtrip(first.cursor))) == [key]


def test_seen_keeps_only_objects_inside_the_overlap_window(store):
    put(store, "shop/2026-11-10/orders.csv", T0)
    put(store, "shop/2026-11-10/customers.csv", T0 + timedelta(seconds=30))
    first = tick(store)
    assert first.cursor.seen.keys() == {"shop/2026-11-10/orders.csv", "shop/2026-11-10/customers.csv"}
    put(store, "billing/2026-11-10/payments.csv", T0 + timedelta(seconds=90))
    second = tick(store, roundtrip(first.cursor))
    assert keys(second) == ["billing/2026-11-10/payments.csv"]
    assert second.cursor.seen.keys() == {"shop/2026-11-10/customers.csv", "billing/2026-11-10/payments.csv"}


def test_a_key_moved_away_is_forgotten_and_never_reported(store):
    put(store, "shop/2026-11-10/orders.csv", T0)
    first = tick(store)
    (store.root / "processed/shop/2026-11-10").mkdir(parents=True)
    (store.root / "shop/2026-11-10/orders.csv").rename(store.root / "processed/shop/2026-11-10/orders.csv")
    put(store, "quarantine/2026-11-10/shop/customers.csv", T0 + timedelta(seconds=1))
    second = tick(store, roundtrip(first.cursor))
    assert second.arrivals == [] and second.ignored == []
    assert second.cursor.seen == {}
    assert all(not key.startswith(("processed/", "quarantine/")) for key in store.returned)


@pytest.mark.parametrize("overlap", [timedelta(0), OVERLAP])
def test_truncation_drains_a_backlog_in_order_without_loss_or_duplicates(store, overlap):
    backlog = []
    for i in range(23):
        # Pairs share a second, so the cut regularly falls between two objects with the same timestamp.
        t, day, at = TABLES[i % 3], date(2026, 11, 1) + timedelta(days=i // 3), T0 + timedelta(seconds=i // 2)
        backlog.append((at, put(store, f"{t.system}/{day}/{t.file}.csv", at)))
    expected = [key for _, key in sorted(backlog)]

    cursor, drained, ticks = ArrivalCursor(), [], 0
    while True:
        plan = tick(store, roundtrip(cursor), max_arrivals=5, overlap=overlap)
        ticks += 1
        if not plan.arrivals:
            break
        assert plan.cursor.high_water == plan.arrivals[-1].obj.last_modified  # never past the last returned
        drained += keys(plan)
        cursor = plan.cursor
    assert ticks == 6  # five ticks of at most 5, then one empty
    assert drained == expected  # each once, oldest first
    assert cursor.resume_from is None


def test_truncation_reaches_back_to_backlog_days_older_than_the_lookback(store):
    """A bulk copy of old days, all uploaded today: the backlog is drained although its days are months old."""
    expected = [put(store, f"shop/2026-0{m}-01/orders.csv", T0 + timedelta(seconds=m)) for m in range(1, 10)]
    cursor, drained = ArrivalCursor(), []
    for _ in range(5):
        plan = tick(store, roundtrip(cursor), max_arrivals=2)
        drained += keys(plan)
        cursor = plan.cursor
    assert drained == expected


def test_the_cursor_stays_small_for_5000_objects(store):
    # 5,000 distinct objects, one a second across ten days' folders, as a steady trickle would leave them.
    tables = [table("shop", f"t{n}") for n in range(500)]
    for i in range(5000):
        day = date(2026, 11, 1) + timedelta(days=i // 500)
        put(store, f"shop/{day}/t{i % 500}.csv", T0 + timedelta(seconds=i))

    plan = plan_tick(
        store, tables, ArrivalCursor(), overlap=OVERLAP, lookback_days=LOOKBACK, today=TODAY, max_arrivals=10_000
    )

    assert len(plan.arrivals) == 5000
    assert len(plan.cursor.seen) == 61  # the objects within 60 s of the newest, inclusive
    assert len(plan.cursor.to_json()) < 5000
    assert roundtrip(plan.cursor) == plan.cursor


def old_history(store: LocalLandingStore) -> None:
    """A month of files loaded long ago and left in place (LANDING_PROCESSED_ACTION=leave or tag)."""
    for day in range(1, 31):
        for t in TABLES:
            put(store, f"{t.system}/2026-10-{day:02d}/{t.file}.csv", T0 - timedelta(days=40))


def test_between_sweeps_files_older_than_the_lookback_are_never_listed(store):
    old_history(store)
    put(store, "shop/2026-11-10/orders.csv", T0)
    # The last sweep, a minute ago, listed more than one page of old objects: the next one is due in 10 minutes.
    cursor = ArrivalCursor(
        high_water=T0 - timedelta(hours=1),
        sweep_floor=T0 - timedelta(hours=1),
        swept_at=NOW - timedelta(minutes=1),
    )
    store.reset()

    plan = tick(store, cursor)

    assert keys(plan) == ["shop/2026-11-10/orders.csv"]
    assert store.returned == ["shop/2026-11-10/orders.csv"]  # nothing from October, where 90 old files lie
    assert sorted(store.calls) == [("billing/", "billing/2026-11-07"), ("shop/", "shop/2026-11-07")]
    assert not plan.swept and plan.cursor.swept_at == cursor.swept_at


def test_a_file_for_a_day_older_than_the_lookback_is_found_by_the_next_sweep(store):
    """The newcomer's story: the demo covers two weeks long past; a file dropped for the day after it is loaded,
    not skipped in silence."""
    for day in range(1, 15):  # generated and dropped in one go, today
        put(store, f"shop/2026-10-{day:02d}/orders.csv", T0 + timedelta(seconds=day))
    first = tick(store)
    assert len(first.arrivals) == 14 and first.swept
    # The demo's files were loaded and moved to processed/: the days before the window are empty again.
    for day in range(1, 15):
        os.remove(store.root / f"shop/2026-10-{day:02d}/orders.csv")
    later = NOW + timedelta(days=20)
    put(store, "shop/2026-10-15/orders.csv", later - timedelta(minutes=5))

    plan = tick(store, roundtrip(first.cursor), now=later, today=later.date())

    assert keys(plan) == ["shop/2026-10-15/orders.csv"]
    assert [a.obj.key for a in plan.late] == ["shop/2026-10-15/orders.csv"]
    assert plan.swept  # the old days hold nothing, so every tick sweeps: one listing page
    assert tick(store, roundtrip(plan.cursor), now=later + timedelta(seconds=30), today=later.date()).arrivals == []


def test_a_costly_sweep_runs_once_per_interval_and_finds_what_landed_since_the_last(store):
    old_history(store)
    put(store, "shop/2026-11-10/customers.csv", T0)
    first = tick(store, max_arrivals=1000)
    assert len(first.arrivals) == 91 and first.cursor.swept_at is None  # the first tick lists everything anyway
    # The next sweep, one interval on, finds the history costly to list (90 objects before the window: more than
    # this test's page of 50).
    costly = {"sweep_every": timedelta(minutes=10), "cheap_sweep": 50, "max_arrivals": 1000}
    after = NOW + timedelta(minutes=10)
    second = tick(store, roundtrip(first.cursor), now=after, **costly)
    assert second.swept and second.arrivals == [] and second.cursor.swept_at == after
    late = put(store, "billing/2026-10-02/payments.csv", after + timedelta(minutes=1), text="id\n2\n")
    put(store, "shop/2026-11-10/orders.csv", after + timedelta(minutes=2))

    # Before the interval is up only the window is listed: today's file comes, the re-delivered October one waits.
    third = tick(store, roundtrip(second.cursor), now=after + timedelta(minutes=3), **costly)
    assert keys(third) == ["shop/2026-11-10/orders.csv"] and not third.swept
    fourth = tick(store, roundtrip(third.cursor), now=after + timedelta(minutes=11), **costly)
    assert fourth.swept and keys(fourth) == [late]  # today's file is not taken a second time
    assert [a.obj.key for a in fourth.late] == [late]


def test_a_sweep_never_takes_again_what_a_tick_handled_before_its_day_left_the_window(store):
    old_history(store)
    put(store, "shop/2026-11-10/customers.csv", T0)
    first = tick(store, max_arrivals=1000)
    costly = {"sweep_every": timedelta(hours=1), "cheap_sweep": 50, "max_arrivals": 1000}
    second = tick(store, roundtrip(first.cursor), now=NOW + timedelta(hours=1), **costly)  # costly sweep, 90 objects
    key = put(store, "shop/2026-11-08/orders.csv", NOW + timedelta(hours=1, minutes=5))
    third = tick(store, roundtrip(second.cursor), now=NOW + timedelta(hours=1, minutes=6), **costly)
    assert keys(third) == [key]
    # Days pass: 2026-11-08 leaves the window, today's files move the high-water mark far past the overlap.
    put(store, "shop/2026-11-12/orders.csv", NOW + timedelta(days=2))
    fourth = tick(store, roundtrip(third.cursor), now=NOW + timedelta(days=2), today=date(2026, 11, 12), **costly)
    assert keys(fourth) == ["shop/2026-11-12/orders.csv"] and fourth.swept
    assert key not in keys(fourth)


def test_late_files_for_a_day_inside_the_lookback_are_found(store):
    put(store, "shop/2026-11-10/orders.csv", T0)
    first = tick(store)
    put(store, "shop/2026-11-08/customers.csv", T0 + timedelta(seconds=10))  # two days late
    assert keys(tick(store, roundtrip(first.cursor))) == ["shop/2026-11-08/customers.csv"]


def test_the_listing_starts_at_the_lookback_before_high_water_or_today_whichever_is_earlier():
    hw = datetime(2026, 11, 10, 23, 59, tzinfo=UTC)
    assert listing_start_day(ArrivalCursor(hw), lookback_days=2, today=date(2026, 11, 10)) == date(2026, 11, 8)
    assert listing_start_day(ArrivalCursor(hw), lookback_days=2, today=date(2026, 11, 5)) == date(2026, 11, 3)
    assert listing_start_day(ArrivalCursor(hw, resume_from=date(2026, 1, 1)), lookback_days=2, today=TODAY) == date(
        2026, 1, 1
    )
    assert listing_start_day(ArrivalCursor(), lookback_days=2, today=TODAY) is None


def test_unparseable_and_unknown_keys_are_reported_once_and_never_loaded(store):
    put(store, "shop/2026-11-10/orders.csv", T0)
    put(store, "shop/2026-11-10/orders.xlsx", T0 + timedelta(seconds=1))
    put(store, "shop/2026-11-10/nested/orders.csv", T0 + timedelta(seconds=2))
    put(store, "shop/2026-11-10/refunds.csv", T0 + timedelta(seconds=3))  # no such table
    put(store, "shop/README.txt", T0 + timedelta(seconds=4))
    put(store, "crm/2026-11-10/contacts.csv", T0)  # a system with no contract: its folder is a stray

    first = tick(store)

    assert keys(first) == ["shop/2026-11-10/orders.csv"]
    assert first.ignored == [
        "shop/2026-11-10/orders.xlsx",
        "shop/2026-11-10/nested/orders.csv",
        "shop/2026-11-10/refunds.csv",
        "shop/README.txt",
    ]
    assert first.strays == ["crm/"]
    second = tick(store, roundtrip(first.cursor))
    assert second.arrivals == [] and second.ignored == [] and second.strays == []


def test_cursor_json_is_compact_and_stable():
    cursor = ArrivalCursor(
        high_water=datetime(2026, 11, 10, 8, 0, 1, 250000, tzinfo=UTC),
        seen={"shop/2026-11-10/orders.csv": "1f-18a", "billing/2026-11-10/payments.csv": "9c-18b"},
        resume_from=date(2026, 11, 1),
        sweep_floor=datetime(2026, 11, 10, 7, 59, tzinfo=UTC),
        swept_at=datetime(2026, 11, 10, 8, 0, 5, tzinfo=UTC),
        aside={"shop/2025-12-31/orders.csv": "7-18c"},
        strays=["shpo/"],
    )
    text = cursor.to_json()
    assert text == (
        '{"aside":{"shop/2025-12-31/orders.csv":"7-18c"},"hw":"2026-11-10T08:00:01.250000+00:00",'
        '"resume":"2026-11-01","sa":"2026-11-10T08:00:05+00:00",'
        '"seen":{"billing/2026-11-10/payments.csv":"9c-18b","shop/2026-11-10/orders.csv":"1f-18a"},'
        '"sf":"2026-11-10T07:59:00+00:00","strays":["shpo/"],"v":1}'
    )
    assert ArrivalCursor.from_json(text) == cursor
    assert ArrivalCursor.from_json(None) == ArrivalCursor() == ArrivalCursor.from_json("")


@pytest.mark.parametrize("text", ["not json", "[]", '{"v": 2}', '{"v": 1, "hw": "yesterday"}'])
def test_an_unreadable_cursor_says_how_to_reset_it(text):
    with pytest.raises(ValueError, match="reset it"):
        ArrivalCursor.from_json(text)


def test_systems_named_like_the_loaders_folders_are_refused(store):
    with pytest.raises(ValueError, match="processed"):
        plan_tick(store, [table("processed", "orders")], ArrivalCursor(), overlap=OVERLAP, lookback_days=1, today=TODAY)


def from_day(first: date):
    """The sensor's partition filter for raw tables whose partitions start on `first`."""
    return lambda arrival: arrival.landing_key.day >= first


def test_a_file_before_the_first_partition_is_set_aside_and_loaded_once_the_partitions_reach_it(store):
    """The newcomer's story: a file for a day before LANDING_START_DATE is reported, then loaded by the first
    sweep after LANDING_START_DATE moved back (the code location reloaded), though it landed long before."""
    early = put(store, "shop/2026-10-01/orders.csv", T0)
    put(store, "shop/2026-11-10/orders.csv", T0 + timedelta(seconds=1))
    first = tick(store, loadable=from_day(date(2026, 11, 1)))
    assert keys(first) == ["shop/2026-11-10/orders.csv"]
    assert [a.obj.key for a in first.outside] == [early] and first.cursor.aside == {early: first.outside[0].obj.etag}

    # Later sweeps offer it again without reporting it again, while the partitions still start on Nov 1 ...
    later = NOW + timedelta(hours=5)
    second = tick(store, roundtrip(first.cursor), now=later, loadable=from_day(date(2026, 11, 1)))
    assert second.swept and second.arrivals == [] and second.outside == [] and early in second.cursor.aside
    # ... and a tick that does not list its day (a costly bucket between sweeps) keeps it aside.
    between = ArrivalCursor(**{**vars(second.cursor), "swept_at": later})
    third = tick(store, between, now=later + timedelta(minutes=1), loadable=from_day(date(2026, 11, 1)))
    assert not third.swept and early in third.cursor.aside

    # LANDING_START_DATE moved back to Oct 1: the next sweep loads it, once.
    moved_back = from_day(date(2026, 10, 1))
    fourth = tick(store, roundtrip(second.cursor), now=later + timedelta(minutes=2), loadable=moved_back)
    assert keys(fourth) == [early] and fourth.cursor.aside == {}
    assert tick(store, roundtrip(fourth.cursor), now=later + timedelta(minutes=3)).arrivals == []


def test_a_file_set_aside_and_then_removed_is_forgotten_by_the_next_sweep(store):
    early = put(store, "shop/2026-10-01/orders.csv", T0)
    first = tick(store, loadable=from_day(date(2026, 11, 1)))
    assert early in first.cursor.aside
    os.remove(store.root / early)
    assert tick(store, roundtrip(first.cursor), loadable=from_day(date(2026, 11, 1))).cursor.aside == {}


def test_names_at_the_root_of_no_system_are_reported_once_per_appearance(store):
    put(store, "shop/2026-11-10/orders.csv", T0)
    put(store, "customers.csv", T0)  # outside any system's folder
    put(store, "shpo/2026-11-10/orders.csv", T0)  # a typo in the system's name
    put(store, "processed/2026-11-09/shop/orders.csv", T0)  # the loader's own folders are no strays
    put(store, "quarantine/2026-11-09/shop/orders.csv", T0)
    put(store, ".tags/shop/2026-11-10/orders.csv.json", T0)  # hidden

    first = tick(store)
    assert keys(first) == ["shop/2026-11-10/orders.csv"] and first.strays == ["customers.csv", "shpo/"]
    later = NOW + timedelta(minutes=1)
    assert tick(store, roundtrip(first.cursor), now=later).strays == []  # swept again: nothing new to report
    put(store, "crm/2026-11-10/contacts.csv", T0)
    os.remove(store.root / "customers.csv")
    third = tick(store, roundtrip(first.cursor), now=later)
    assert third.strays == ["crm/"] and third.cursor.strays == ["crm/", "shpo/"]
    # Once gone and back, a name is reported again.
    put(store, "customers.csv", T0)
    assert tick(store, roundtrip(third.cursor), now=later).strays == ["customers.csv"]
