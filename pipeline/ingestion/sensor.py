"""The landing arrival sensor: one run per stretch of landing days that brought new files, for the raw partitions of
those days (the demo's two-week backlog of five tables is one run; a day's burst of files is one run).

The sensor only decides *what* to load; `arrivals.plan_tick` holds every rule (cursor, overlap, lookback, sweep,
limit), and the loader moves a file to `processed/` or `quarantine/` after its run. A single file's run key is its
key plus its ETag, so Dagster itself drops a second request for the same content, even after a cursor reset.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, timedelta

import dagster as dg

from ..automation.alerts import AlertRoutes, post
from ..core.resources import LandingResource
from .arrivals import DEFAULT_MAX_ARRIVALS, Arrival, ArrivalCursor, plan_tick
from .contracts import CONTRACT_CHECK, SourceTable

SENSOR_NAME = "landing_arrival_sensor"

#: Tags on every requested run: the loader reads them to load exactly this object (and check it is unchanged).
LANDING_KEY_TAG = "pipeline/landing_key"
LANDING_ETAG_TAG = "pipeline/landing_etag"
#: On a run of several files: the JSON list of keys it loads (each raw table loads those of its own).
LANDING_KEYS_TAG = "pipeline/landing_keys"

#: How many keys one warning lists; the count is always exact.
MAX_LOGGED_KEYS = 20


def run_requests_for(arrivals: Sequence[Arrival]) -> list[dg.RunRequest]:
    """One run per stretch of consecutive landing days on which the same tables received files.

    Every raw table shares one daily partitioning, so a run can load several tables over one partition range (as a
    single-run backfill does). A backlog of N days x T tables would otherwise start N x T run processes (~4 s each
    before any work) and give automation as many updates to react to; a burst of five files of one day would be
    five runs. A table is only put in a run whose every day holds a file of it, so no partition is marked loaded
    without one. A lone file keeps `<key>@<ETag>` as its run key; a run of several files names every key@ETag in
    it (hashed), so the same set is never requested twice, and each file is loaded once (the cursor never lists
    it again).
    """
    by_day: dict[date, list[Arrival]] = defaultdict(list)
    for arrival in arrivals:
        by_day[arrival.landing_key.day].append(arrival)
    stretches: list[list[date]] = []
    for day in sorted(by_day):
        tables = _tables(by_day[day])
        if stretches and (day - stretches[-1][-1]).days == 1 and _tables(by_day[stretches[-1][-1]]) == tables:
            stretches[-1].append(day)
        else:
            stretches.append([day])
    requests = []
    for days in stretches:
        files = sorted((a for day in days for a in by_day[day]), key=lambda a: (a.landing_key.day, a.obj.key))
        requests.append(run_request_for(files[0]) if len(files) == 1 else _batch_request(files))
    return requests


def _tables(arrivals: list[Arrival]) -> tuple[str, ...]:
    return tuple(sorted({a.table.table for a in arrivals}))


def _batch_request(run: list[Arrival]) -> dg.RunRequest:
    first, last = run[0].landing_key.day.isoformat(), run[-1].landing_key.day.isoformat()
    digest = hashlib.sha256("\n".join(a.run_key for a in run).encode()).hexdigest()[:16]
    tables = {a.table.table: a.table for a in run}
    ranged = (
        {}
        if first == last
        else {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
    )
    keys = [dg.AssetKey(tables[name].asset_key) for name in sorted(tables)]
    return dg.RunRequest(
        run_key=f"{'+'.join(sorted(tables))}:{first}..{last}:{digest}",
        asset_selection=keys,
        asset_check_keys=contract_checks(keys),
        partition_key=first if first == last else None,
        tags={**ranged, LANDING_KEYS_TAG: json.dumps([a.obj.key for a in run])},
    )


def contract_checks(keys: list[dg.AssetKey]) -> list[dg.AssetCheckKey]:
    """A load runs its tables' contract checks only: their freshness checks judge landing days against a deadline
    (the freshness sensor runs them), and in a load that fails they would show "execution failed"."""
    return [dg.AssetCheckKey(key, CONTRACT_CHECK) for key in keys]


def run_request_for(arrival: Arrival) -> dg.RunRequest:
    etag = arrival.obj.etag
    key = dg.AssetKey(arrival.table.asset_key)
    return dg.RunRequest(
        run_key=arrival.run_key,
        partition_key=arrival.landing_key.day.isoformat(),
        asset_selection=[key],
        asset_check_keys=contract_checks([key]),
        tags={LANDING_KEY_TAG: arrival.obj.key, LANDING_ETAG_TAG: etag},
    )


def build_arrival_sensor(
    tables: Sequence[SourceTable],
    *,
    minimum_interval_seconds: int,
    overlap_seconds: int,
    lookback_days: int,
    sweep_minutes: float = 10,
    max_arrivals: int = DEFAULT_MAX_ARRIVALS,
) -> dg.SensorDefinition:
    """The sensor over every system in `tables`, targeting their raw assets (daily-partitioned by landing day)."""
    tables = list(tables)
    asset_keys = [dg.AssetKey(t.asset_key) for t in tables]
    overlap = timedelta(seconds=overlap_seconds)
    sweep_every = timedelta(minutes=sweep_minutes)
    prefixes = ", ".join(sorted({t.landing_prefix for t in tables}))
    owners_of = {t.system: [t.owner] if t.owner else [] for t in tables}

    @dg.sensor(
        name=SENSOR_NAME,
        description=(
            f"Requests a run for the new landing files under {prefixes}, for the raw tables' partitions of their"
            f" landing days. Each tick lists the last {lookback_days} landing days; older days are swept at every"
            f" tick where they hold few files, else every {sweep_minutes:g} minutes (late files are loaded, never"
            f" skipped); at most {max_arrivals} files per tick."
        ),
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        target=asset_keys,
    )
    def landing_arrival_sensor(context: dg.SensorEvaluationContext, landing: LandingResource) -> dg.SensorResult:
        store = landing.store()
        cursor = ArrivalCursor.from_json(context.cursor)
        now = datetime.now(UTC)
        plan = plan_tick(
            store,
            tables,
            cursor,
            overlap=overlap,
            lookback_days=lookback_days,
            today=now.date(),
            now=now,
            sweep_every=sweep_every,
            max_arrivals=max_arrivals,
            loadable=_partition_filter(context),
        )
        outside = plan.outside
        unloadable: list[str] = []
        if plan.ignored:
            unloadable.append(
                f"{len(plan.ignored)} new object(s) in {store.url} are not loaded: they do not follow"
                f" <system>/<YYYY-MM-DD>/<file>.<csv|jsonl|ndjson|parquet>[.gz] or match no contract table"
                f" (pipeline/ingestion/contracts.yaml): {_bounded(plan.ignored)}"
            )
        if outside:
            unloadable.append(
                f"{len(outside)} new file(s) in {store.url} land on a day that is not a raw partition (before"
                " LANDING_START_DATE, or not yet begun); they are set aside, not loaded. Move them to the right day"
                " folder, or set LANDING_START_DATE to an earlier day (the sensor's next sweep then loads them):"
                f" {_bounded([a.obj.key for a in outside])}"
            )
        if plan.strays:
            unloadable.append(
                f"{len(plan.strays)} name(s) at the top of {store.url} belong to no source system in"
                f" pipeline/ingestion/contracts.yaml (systems: {', '.join(sorted(owners_of))}), so nothing in them"
                " is loaded. Put files under <system>/<YYYY-MM-DD>/, or add the system to contracts.yaml:"
                f" {_bounded(plan.strays)}"
            )
        for text in unloadable:
            context.log.warning(text)
        if unloadable:  # and to the systems' owners, once: the cursor never reports the same object again
            systems = {key.split("/", 1)[0] for key in [*plan.ignored, *(a.obj.key for a in outside), *plan.strays]}
            routes = AlertRoutes.from_env().targets({o for system in systems for o in owners_of.get(system, [])})
            post(routes, ":warning: *Landing files not loaded*\n" + "\n".join(unloadable), context.log)
        if plan.late:
            context.log.info(
                f"The sweep found {len(plan.late)} file(s) that no regular tick lists (a landing day older than"
                f" {lookback_days} days, or a file that listed late): {_bounded([a.obj.key for a in plan.late])}"
            )
        if plan.remaining:
            context.log.info(f"{plan.remaining} more new file(s) wait for the next tick (limit {max_arrivals})")
        new_cursor = plan.cursor.to_json()
        listing = f"{plan.listed} object(s) listed{', every day swept' if plan.swept else ''}"
        requestable = plan.arrivals
        if not requestable:
            since = cursor.high_water.isoformat() if cursor.high_water else "the start"
            return dg.SensorResult(
                skip_reason=(
                    f"No new landing files under {prefixes} since {since} ({listing},"
                    f" {len(plan.ignored) + len(plan.strays)} ignored, {len(plan.cursor.aside)} set aside outside"
                    " the partitions)"
                ),
                cursor=new_cursor,
            )
        requests = run_requests_for(requestable)
        context.log.info(f"Requesting {len(requests)} run(s) for {len(requestable)} new landing file(s) ({listing})")
        return dg.SensorResult(run_requests=requests, cursor=new_cursor)

    return landing_arrival_sensor


def _partition_filter(context: dg.SensorEvaluationContext) -> Callable[[Arrival], bool] | None:
    """Whether an arrival's landing day is a partition of its raw asset, as the code location now defines them.

    A request for a partition that does not exist fails the whole tick, and a failed tick does not move the
    cursor: one file in a mistyped day folder would stall every later arrival. So such files are set aside (see
    `arrivals`) instead. Without a repository (a sensor called directly in a test) every arrival is loadable.
    """
    repository = context.repository_def
    if repository is None:
        return None
    graph = repository.asset_graph

    def loadable(arrival: Arrival) -> bool:
        key = dg.AssetKey(arrival.table.asset_key)
        partitions = graph.get(key).partitions_def if graph.has(key) else None
        return partitions is None or partitions.has_partition_key(arrival.landing_key.day.isoformat())

    return loadable


def _bounded(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_LOGGED_KEYS])
    return shown + (f" ... and {len(keys) - MAX_LOGGED_KEYS} more" if len(keys) > MAX_LOGGED_KEYS else "")
