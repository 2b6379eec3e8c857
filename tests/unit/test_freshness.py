"""Freshness verdicts (pipeline/automation/freshness.py): nothing is stale before it was first due, and the words
say when, in PIPELINE_TIMEZONE. Pure functions of explicit times; the instance-backed checks are in
tests/integration/test_quiet_start.py."""

import re
from datetime import UTC, date, datetime

import dagster as dg
import pytest

from pipeline.automation.alerts import duration, local_time
from pipeline.automation.freshness import (
    FRESH_UNTIL,
    Verdict,
    check_result,
    deadlines,
    landing_day_due,
    mart_verdict,
    raw_verdict,
    stale_message,
)

BERLIN = "Europe/Berlin"
EPOCH_FLOAT = re.compile(r"\b1\d{9}(\.\d+)?\b")


def ts(text: str, zone: str = BERLIN) -> float:
    """A wall-clock time in `zone` as epoch seconds."""
    from zoneinfo import ZoneInfo

    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp()


def raw(now: str, since: str, *, day_loaded_at=None, last_loaded_at=None, first_day=date(2026, 1, 1)) -> Verdict:
    deadline, upcoming = deadlines("0 9 * * *", BERLIN, ts(now))
    return raw_verdict(
        now=ts(now),
        watched_since=ts(since),
        deadline=deadline,
        next_deadline=upcoming,
        first_day=first_day,
        day_loaded_at=day_loaded_at,
        last_loaded_at=last_loaded_at,
        timezone=BERLIN,
    )


def mart(now: str, since: str, last: float | None, hours: float = 26) -> Verdict:
    return mart_verdict(now=ts(now), watched_since=ts(since), window_hours=hours, last_updated_at=last, timezone=BERLIN)


def test_local_times_and_durations_read_like_people_write_them():
    assert local_time(ts("2026-12-01 06:12"), BERLIN) == "2026-12-01 06:12 CET"
    assert local_time(ts("2026-07-01 06:12"), BERLIN) == "2026-07-01 06:12 CEST"
    assert local_time(datetime(2026, 12, 1, 5, 12, tzinfo=UTC).timestamp(), "UTC") == "2026-12-01 05:12 UTC"
    assert duration(26 * 3600) == "26 h"
    assert duration(3 * 3600 + 600) == "3 h 10 min"
    assert duration(45 * 60) == "45 min"


@pytest.mark.parametrize(
    ("now", "zone", "deadline", "day"),
    [
        # Before the day's deadline the previous one counts: at 08:59 on 2 Dec, 1 Dec 09:00 asked for 30 Nov.
        ("2026-12-02 08:59", BERLIN, "2026-12-01 09:00+01:00", date(2026, 11, 30)),
        ("2026-12-02 09:00", BERLIN, "2026-12-02 09:00+01:00", date(2026, 12, 1)),
        # The landing day is the local day before the deadline, wherever the team is.
        ("2026-12-02 10:00", "Pacific/Auckland", "2026-12-02 09:00+13:00", date(2026, 12, 1)),
        # Daylight saving time: the deadline stays at 09:00 local time across the change (Dagster's cron).
        ("2026-03-29 09:30", BERLIN, "2026-03-29 09:00+02:00", date(2026, 3, 28)),
        ("2026-03-29 08:30", BERLIN, "2026-03-28 09:00+01:00", date(2026, 3, 27)),
    ],
)
def test_the_deadline_and_the_landing_day_it_asks_for(now, zone, deadline, day):
    """Also pins the Dagster cron arithmetic freshness.py borrows (a private module): fails if it changes."""
    latest, upcoming = deadlines("0 9 * * *", zone, ts(now, zone))
    assert latest == datetime.fromisoformat(deadline)
    assert landing_day_due(latest) == day
    assert upcoming > datetime.fromtimestamp(ts(now, zone), UTC) >= latest


def test_a_raw_table_is_not_due_before_the_first_deadline_after_the_start():
    verdict = raw("2026-12-02 08:59", since="2026-12-02 03:10")
    assert verdict.passed
    assert verdict.description == (
        "Not due yet: no deadline has passed since this deployment started watching (2026-12-02 03:10 CET); the"
        " first, landing day 2026-12-01 is due by 2026-12-02 09:00 CET."
    )
    assert verdict.fresh_until == ts("2026-12-02 09:00")  # the sensor runs it again then, not before


def test_a_raw_table_is_stale_once_its_first_landing_day_was_due():
    verdict = raw("2026-12-02 09:01", since="2026-12-02 03:10", last_loaded_at=ts("2026-11-30 07:02"))
    assert not verdict.passed
    assert verdict.description == (
        "Landing day 2026-12-01 was due by 2026-12-02 09:00 CET and has not loaded (last load 2026-11-30 07:02 CET)."
    )
    assert verdict.facts == {"expected_landing_day": "2026-12-01"}
    never = raw("2026-12-02 09:01", since="2026-12-02 03:10")
    assert not never.passed and never.description.endswith("has not loaded (never loaded).")


def test_a_loaded_landing_day_is_fresh_until_the_next_deadline():
    verdict = raw("2026-12-02 09:01", since="2026-11-01 00:00", day_loaded_at=ts("2026-12-02 06:12"))
    assert verdict.passed
    assert verdict.description == (
        "Landing day 2026-12-01 loaded 2026-12-02 06:12 CET (due by 2026-12-02 09:00 CET); landing day 2026-12-02 is"
        " due by 2026-12-03 09:00 CET."
    )
    assert verdict.fresh_until == ts("2026-12-03 09:00")


def test_no_landing_day_is_due_before_the_first_partition():
    verdict = raw("2026-12-02 09:01", since="2026-11-01 00:00", first_day=date(2026, 12, 2))
    assert verdict.passed and verdict.description.startswith("Not due yet: 2026-12-01 is before the first landing day")


def test_a_mart_never_built_is_not_due_before_its_window_after_the_start():
    verdict = mart("2026-12-03 05:09", since="2026-12-02 03:10", last=None)
    assert verdict.passed
    assert verdict.description == (
        "Not due yet: not built yet; first due 2026-12-03 05:10 CET, 26 h after this deployment started watching"
        " (2026-12-02 03:10 CET)."
    )
    assert verdict.fresh_until == ts("2026-12-03 05:10")


def test_a_mart_never_built_is_stale_after_its_window():
    verdict = mart("2026-12-03 05:11", since="2026-12-02 03:10", last=None)
    assert not verdict.passed
    assert verdict.description == (
        "Never built; expected within 26 h of 2026-12-02 03:10 CET, when this deployment started watching it."
    )


def test_a_mart_is_judged_by_its_last_update():
    fresh = mart("2026-12-02 08:00", since="2026-11-01 00:00", last=ts("2026-12-01 06:12"))
    assert fresh.passed and fresh.description == "Last updated 2026-12-01 06:12 CET; expected within 26 h."
    assert fresh.fresh_until == ts("2026-12-02 08:12")
    stale = mart("2026-12-02 11:00", since="2026-11-01 00:00", last=ts("2026-12-01 06:12"))
    assert not stale.passed
    assert stale.description == (
        "Last updated 2026-12-01 06:12 CET; expected within 26 h (stale since 2026-12-02 08:12 CET)."
    )


def test_check_results_carry_times_dagster_shows_and_its_sensor_reads():
    key = dg.AssetCheckKey(dg.AssetKey(["raw", "orders"]), "freshness_check")
    fresh = check_result(key, raw("2026-12-02 08:59", since="2026-12-02 03:10"), dg.AssetCheckSeverity.ERROR, {})
    assert isinstance(fresh.metadata[FRESH_UNTIL], dg.TimestampMetadataValue)
    assert fresh.metadata[FRESH_UNTIL].value == ts("2026-12-02 09:00")
    stale = check_result(key, raw("2026-12-02 09:01", since="2026-12-02 03:10"), dg.AssetCheckSeverity.ERROR, {})
    assert not stale.passed and FRESH_UNTIL not in stale.metadata


def test_the_alert_says_why_in_local_times_and_no_epoch_floats():
    verdict = mart("2026-12-02 11:00", since="2026-11-01 00:00", last=ts("2026-12-01 06:12"))
    evaluation = dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey("dim_customers"),
        check_name="freshness_check",
        passed=False,
        severity=dg.AssetCheckSeverity.WARN,
        description=verdict.description,
        metadata=check_result(
            dg.AssetCheckKey(dg.AssetKey("dim_customers"), "freshness_check"), verdict, dg.AssetCheckSeverity.WARN, {}
        ).metadata,
    )
    text = stale_message(evaluation, ["analytics@tidewater.example"], "https://dagster.example.com", BERLIN)
    assert text.splitlines() == [
        ":warning: *Stale data*: `dim_customers` failed `freshness_check` (warn)",
        "Last updated 2026-12-01 06:12 CET; expected within 26 h (stale since 2026-12-02 08:12 CET).",
        "Owners: analytics@tidewater.example",
        "<https://dagster.example.com/assets/dim_customers|Open the asset in Dagster>",
    ]
    assert not EPOCH_FLOAT.search(text)


def test_a_foreign_check_without_description_is_described_in_local_times():
    evaluation = dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey("x"),
        check_name="other",
        passed=False,
        metadata={"dagster/last_updated_timestamp": dg.MetadataValue.timestamp(ts("2026-12-01 06:12")), "rows": 3},
    )
    text = stale_message(evaluation, [], "https://d", BERLIN)
    assert "last_updated_timestamp: 2026-12-01 06:12 CET, rows: 3" in text and not EPOCH_FLOAT.search(text)
