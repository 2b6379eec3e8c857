"""Freshness: stale data is flagged (and its owner told) before a stakeholder notices — and never before it was due.

- Raw tables: each landing day must have loaded by `RAW_FRESHNESS_DEADLINE_CRON` (default 09:00) in
  `PIPELINE_TIMEZONE`: at the 09:00 deadline of 2 December, landing day 1 December must be in (severity ERROR). A
  source system that did not deliver yesterday's file fails its check that morning.
- Marts (dbt group `marts`): rebuilt within `MART_FRESHNESS_HOURS` (default 26: a daily build plus slack), a
  warning when the chain stopped.

**Nothing is stale before it was first due.** On a fresh deployment nothing has been built yet, and nothing could
have been: an asset is judged only once its first expected load was due *after this deployment started watching
it* — for a raw table the first deadline after that moment, for a mart `MART_FRESHNESS_HOURS` after it. Until then
the check passes and says so ("Not due yet: … first due 2026-12-03 09:00 CET"), so the Checks tab and the alerts
(which are the failed check evaluations) tell the same story. "Started watching" is recorded per check, the first
time this Dagster instance evaluates it, in the instance's key-value store (`daemon_cursor_storage`, the table
Dagster's own daemons keep their cursors in; Postgres in production). Per check, because a table added to
`contracts.yaml` months later deserves the same grace as the first ones; in the instance, because the check runs
wherever Dagster launches it (the sensor, the daily build, a click in the UI) and must see the same moment — a
sensor cursor is private to its sensor, and a sensor's first tick is forgotten once its ticks are purged. A new
instance (`make clean`) is a new deployment and starts watching again; a restart or a code deploy is not.

Why our own checks rather than Dagster's `build_time_partition_freshness_checks` / `build_last_update_freshness_
checks`: those fail an asset at once when it was never built (14 "Stale data" alerts within a minute of a fresh
start), describe times as epoch floats, and — with our raw partitions' `end_offset=1` — expect *today's* landing day
at the deadline instead of yesterday's. Their successor, `FreshnessPolicy`, never fails an asset that was never
built, and cannot ask for a particular landing day. What is kept from Dagster: its cron arithmetic (the same code
that evaluates our schedules' crons, daylight-saving changes included), its clock (so its test clock drives both),
its freshness metadata keys (the UI shows them as times), and its `freshness_checks_sensor`, which runs a check
again only once the check could have changed its answer (`dagster/fresh_until_timestamp`) or the asset was updated.

`freshness_alert` posts each failed freshness check to the asset's owners, like run failures, in words: "Landing
day 2026-12-01 was due by 2026-12-02 09:00 CET and has not loaded (last load 2026-11-30 07:02 CET)".
"""

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import dagster as dg

# Dagster's clock and cron arithmetic (private modules, verified with 1.13; tests/unit/test_freshness.py pins both).
from dagster._time import get_current_timestamp
from dagster._utils.schedules import get_latest_completed_cron_tick, get_next_cron_tick

from ..core.settings import Settings
from .alerts import deliver, duration, local_time

FRESHNESS_CHECK = "freshness_check"
#: the instance key-value store's key holding when this instance first evaluated a check (epoch seconds)
WATCHED_SINCE_KEY = "pipeline/freshness/watched_since/{}"
# Dagster's freshness metadata keys: the UI shows the timestamps as times, its freshness sensor reads FRESH_UNTIL.
FRESH_UNTIL = "dagster/fresh_until_timestamp"
LAST_UPDATED = "dagster/last_updated_timestamp"
DEADLINE = "dagster/latest_cron_tick_timestamp"
PARAMS = "dagster/freshness_params"


@dataclass(frozen=True)
class Verdict:
    """A freshness check's answer: passed, in words, and until when it cannot change (None: not before an update)."""

    passed: bool
    description: str
    fresh_until: float | None = None
    #: epoch-seconds facts behind the answer (shown as times in the UI)
    times: Mapping[str, float] = field(default_factory=dict)
    facts: Mapping[str, str] = field(default_factory=dict)


def deadlines(cron: str, timezone: str, now: float) -> tuple[datetime, datetime]:
    """The latest tick of `cron` at or before `now` and the one after it, in `timezone`."""
    latest = get_latest_completed_cron_tick(cron, datetime.fromtimestamp(now, UTC), timezone)
    return latest, get_next_cron_tick(cron, latest + timedelta(seconds=1), timezone)


def landing_day_due(deadline: datetime) -> date:
    """The landing day a deadline asks for: the local day before it (09:00 on 2 Dec asks for 1 Dec)."""
    return deadline.date() - timedelta(days=1)


def raw_verdict(
    *,
    now: float,
    watched_since: float,
    deadline: datetime,
    next_deadline: datetime,
    first_day: date,
    day_loaded_at: float | None,
    last_loaded_at: float | None,
    timezone: str,
) -> Verdict:
    """Has the landing day due by the latest deadline loaded? Not asked before the first deadline after
    `watched_since`, nor for days before the first partition (`first_day`)."""
    day = landing_day_due(deadline)
    times = {DEADLINE: deadline.timestamp(), "watched_since": watched_since}
    if last_loaded_at is not None:
        times[LAST_UPDATED] = last_loaded_at
    facts = {"expected_landing_day": day.isoformat()}
    upcoming = (
        f"landing day {landing_day_due(next_deadline)} is due by {local_time(next_deadline.timestamp(), timezone)}"
    )
    if day_loaded_at is not None:
        return Verdict(
            True,
            f"Landing day {day} loaded {local_time(day_loaded_at, timezone)} (due by "
            f"{local_time(deadline.timestamp(), timezone)}); {upcoming}.",
            fresh_until=next_deadline.timestamp(),
            times=times,
            facts=facts,
        )
    if deadline.timestamp() < watched_since:
        return Verdict(
            True,
            f"Not due yet: no deadline has passed since this deployment started watching "
            f"({local_time(watched_since, timezone)}); the first, {upcoming}.",
            fresh_until=next_deadline.timestamp(),
            times={**times, "first_due": next_deadline.timestamp()},
            facts=facts,
        )
    if day < first_day:
        return Verdict(
            True,
            f"Not due yet: {day} is before the first landing day ({first_day}); {upcoming}.",
            fresh_until=next_deadline.timestamp(),
            times=times,
            facts=facts,
        )
    last = f"last load {local_time(last_loaded_at, timezone)}" if last_loaded_at is not None else "never loaded"
    return Verdict(
        False,
        f"Landing day {day} was due by {local_time(deadline.timestamp(), timezone)} and has not loaded ({last}).",
        times=times,
        facts=facts,
    )


def mart_verdict(
    *, now: float, watched_since: float, window_hours: float, last_updated_at: float | None, timezone: str
) -> Verdict:
    """Was the mart updated within `window_hours`? Not asked before `window_hours` after `watched_since`."""
    window = window_hours * 3600
    expected = f"expected within {duration(window)}"
    times = {"watched_since": watched_since, **({LAST_UPDATED: last_updated_at} if last_updated_at else {})}
    if last_updated_at is not None and now - last_updated_at <= window:
        return Verdict(
            True,
            f"Last updated {local_time(last_updated_at, timezone)}; {expected}.",
            fresh_until=last_updated_at + window,
            times=times,
        )
    first_due = watched_since + window
    if now < first_due:
        state = f"last updated {local_time(last_updated_at, timezone)}" if last_updated_at else "not built yet"
        return Verdict(
            True,
            f"Not due yet: {state}; first due {local_time(first_due, timezone)}, {duration(window)} after this "
            f"deployment started watching ({local_time(watched_since, timezone)}).",
            fresh_until=first_due,
            times={**times, "first_due": first_due},
        )
    if last_updated_at is None:
        return Verdict(
            False,
            f"Never built; {expected} of {local_time(watched_since, timezone)}, when this deployment started "
            "watching it.",
            times=times,
        )
    return Verdict(
        False,
        f"Last updated {local_time(last_updated_at, timezone)}; {expected} (stale since "
        f"{local_time(last_updated_at + window, timezone)}).",
        times=times,
    )


def watched_since(
    instance: dg.DagsterInstance, keys: Sequence[dg.AssetCheckKey], now: float
) -> dict[dg.AssetCheckKey, float]:
    """When this instance first evaluated each check; `now` is recorded for those it never evaluated before.

    Two evaluations racing on a check's first time both record their own `now` (seconds apart): harmless.
    """
    storage = instance.daemon_cursor_storage
    names = {key: WATCHED_SINCE_KEY.format(key.to_user_string()) for key in keys}
    stored = storage.get_cursor_values(set(names.values()))
    new = {name: repr(now) for name in names.values() if name not in stored}
    if new:
        storage.set_cursor_values(new)
    return {key: float(stored.get(name, now)) for key, name in names.items()}


def check_result(
    key: dg.AssetCheckKey, verdict: Verdict, severity: dg.AssetCheckSeverity, params: dict
) -> dg.AssetCheckResult:
    """The verdict as Dagster records it: the words as the description, the times as timestamps the UI shows."""
    times = dict(verdict.times)
    if verdict.passed and verdict.fresh_until is not None:
        times[FRESH_UNTIL] = verdict.fresh_until
    return dg.AssetCheckResult(
        asset_key=key.asset_key,
        check_name=key.name,
        passed=verdict.passed,
        severity=severity,
        description=verdict.description,
        metadata={
            PARAMS: dg.MetadataValue.json(params),
            **{name: dg.MetadataValue.timestamp(value) for name, value in times.items()},
            **verdict.facts,
        },
    )


def latest_update(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None = None) -> float | None:
    """When `key` (or one partition of it) was last materialized, epoch seconds."""
    if partition is None:
        event = instance.get_latest_materialization_event(key)
        return event.timestamp if event else None
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    ).records
    return records[0].timestamp if records else None


def freshness_check_def(
    name: str,
    keys: Sequence[dg.AssetKey],
    description: str,
    severity: dg.AssetCheckSeverity,
    params: dict,
    judge: Callable[[dg.DagsterInstance, dg.AssetKey, float, float], Verdict],
) -> dg.AssetChecksDefinition:
    """One `freshness_check` per asset of `keys`, each answered by `judge(instance, asset, now, watched_since)`."""

    @dg.multi_asset_check(
        name=name,
        specs=[
            dg.AssetCheckSpec(FRESHNESS_CHECK, asset=key, description=description)
            for key in sorted(keys, key=lambda k: k.to_user_string())
        ],
        can_subset=True,
    )
    def _check(context: dg.AssetCheckExecutionContext) -> Iterator[dg.AssetCheckResult]:
        now = get_current_timestamp()
        selected = sorted(context.selected_asset_check_keys, key=lambda k: k.to_user_string())
        since = watched_since(context.instance, selected, now)
        for check_key in selected:
            verdict = judge(context.instance, check_key.asset_key, now, since[check_key])
            yield check_result(check_key, verdict, severity, params)

    return _check


def raw_freshness_checks(
    raw_assets: Sequence[dg.AssetsDefinition], deadline_cron: str, timezone: str
) -> dg.AssetChecksDefinition:
    first_days: dict[dg.AssetKey, date] = {}
    for asset in raw_assets:
        partitions = asset.partitions_def
        if not isinstance(partitions, dg.TimeWindowPartitionsDefinition):
            raise TypeError(f"{asset.key.to_user_string()}: raw freshness needs daily partitions, got {partitions}")
        first_days.update({key: partitions.start.date() for key in asset.keys})

    def judge(instance: dg.DagsterInstance, key: dg.AssetKey, now: float, since: float) -> Verdict:
        deadline, next_deadline = deadlines(deadline_cron, timezone, now)
        return raw_verdict(
            now=now,
            watched_since=since,
            deadline=deadline,
            next_deadline=next_deadline,
            first_day=first_days[key],
            day_loaded_at=latest_update(instance, key, landing_day_due(deadline).isoformat()),
            last_loaded_at=latest_update(instance, key),
            timezone=timezone,
        )

    return freshness_check_def(
        "raw_freshness_checks",
        list(first_days),
        f"Each landing day has loaded by `{deadline_cron}` ({timezone}) the day after; not judged before the first "
        "such deadline after this deployment started watching.",
        dg.AssetCheckSeverity.ERROR,
        {"deadline_cron": deadline_cron, "timezone": timezone},
        judge,
    )


def mart_freshness_checks(marts: Sequence[dg.AssetKey], window_hours: float, timezone: str) -> dg.AssetChecksDefinition:
    def judge(instance: dg.DagsterInstance, key: dg.AssetKey, now: float, since: float) -> Verdict:
        return mart_verdict(
            now=now,
            watched_since=since,
            window_hours=window_hours,
            last_updated_at=latest_update(instance, key),
            timezone=timezone,
        )

    return freshness_check_def(
        "mart_freshness_checks",
        marts,
        f"Rebuilt within {duration(window_hours * 3600)}; not judged before that long after this deployment started "
        "watching.",
        dg.AssetCheckSeverity.WARN,
        {"lower_bound_delta_seconds": window_hours * 3600, "timezone": timezone},
        judge,
    )


def freshness_checks(
    settings: Settings, raw_assets: Sequence[dg.AssetsDefinition], marts: Sequence[dg.AssetKey]
) -> list[dg.AssetChecksDefinition]:
    checks = []
    if raw_assets:
        checks.append(raw_freshness_checks(raw_assets, settings.raw_freshness_deadline_cron, settings.timezone))
    if marts:
        checks.append(mart_freshness_checks(marts, settings.mart_freshness_hours, settings.timezone))
    return checks


def stale_message(evaluation: dg.AssetCheckEvaluation, owners: Sequence[str], ui_base_url: str, timezone: str) -> str:
    """The alert: which asset, which check, why in words (the check's own description: what the Checks tab shows)."""
    key = evaluation.asset_key.to_user_string()
    lines = [
        f":warning: *Stale data*: `{key}` failed `{evaluation.check_name}` ({evaluation.severity.value.lower()})",
        evaluation.description or described(evaluation.metadata, timezone),
        *([f"Owners: {', '.join(owners)}"] if owners else []),
        f"<{ui_base_url}/assets/{'/'.join(evaluation.asset_key.path)}|Open the asset in Dagster>",
    ]
    return "\n".join(line for line in lines if line)


def described(metadata: Mapping[str, object], timezone: str) -> str:
    """A check result without a description (not one of ours): its metadata, times as local times."""
    parts = []
    for name, value in sorted(metadata.items()):
        if isinstance(value, dg.TimestampMetadataValue):
            parts.append(f"{name.removeprefix('dagster/')}: {local_time(value.value, timezone)}")
        elif not isinstance(value, dg.JsonMetadataValue):
            parts.append(f"{name.removeprefix('dagster/')}: {getattr(value, 'value', value)}")
    return ", ".join(parts)


def build_freshness_alert(
    checks: Sequence[dg.AssetChecksDefinition], owners: Mapping[dg.AssetKey, Sequence[str]]
) -> dg.SensorDefinition:
    watched = {key for c in checks for key in c.check_keys}

    @dg.sensor(
        name="freshness_alert",
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=30,
        description="Posts each failed freshness check to the asset's owners (ALERT_ROUTES) or ALERT_WEBHOOK_URL.",
    )
    def _alert(context: dg.SensorEvaluationContext) -> dg.SkipReason | None:
        settings = Settings.from_env()
        # Cursor: the id of the last execution seen per check (works on every event log storage, sharded or not).
        seen: dict[str, int] = json.loads(context.cursor) if context.cursor else {}
        latest = context.instance.event_log_storage.get_latest_asset_check_execution_by_key(sorted(watched))
        sent = 0
        for check_key, execution in latest.items():
            name = check_key.to_user_string()
            if execution.id <= seen.get(name, 0):
                continue
            seen[name] = execution.id
            event = execution.event.dagster_event if execution.event else None
            evaluation = event.event_specific_data if event else None
            if not isinstance(evaluation, dg.AssetCheckEvaluation) or evaluation.passed:
                continue
            asset_owners = list(owners.get(evaluation.asset_key, ()))
            text = stale_message(evaluation, asset_owners, settings.ui_base_url, settings.timezone)
            sent += deliver(asset_owners, text, context.log)
        context.update_cursor(json.dumps(seen, sort_keys=True))
        return None if sent else dg.SkipReason("no new failed freshness check since the last tick")

    return _alert


def freshness_defs(
    settings: Settings,
    raw_assets: Sequence[dg.AssetsDefinition],
    marts: Sequence[dg.AssetKey],
    owners: Mapping[dg.AssetKey, Sequence[str]],
) -> dg.Definitions:
    checks = freshness_checks(settings, raw_assets, marts)
    return dg.Definitions(
        asset_checks=checks,
        sensors=[
            # Superseded by FreshnessPolicy (which does not fit, see above): its SupersessionWarning is filtered
            # where the definitions load (pipeline/definitions.py).
            dg.build_sensor_for_freshness_checks(
                freshness_checks=checks, default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=300
            ),
            build_freshness_alert(checks, owners),
        ],
    )
