"""The landing arrival sensor: one run per new landing file, for the raw partition of the file's landing day
(a backlog of consecutive days of one table becomes one run over that partition range).

The sensor only decides *what* to load; `arrivals.plan_tick` holds every rule (cursor, overlap, lookback,
limit), and the loader moves a file to `processed/` or `quarantine/` after its run. The run key is the file's key
plus its ETag, so Dagster itself drops a second request for the same content, even after a cursor reset.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import dagster as dg

from ..resources import LandingResource
from .arrivals import DEFAULT_MAX_ARRIVALS, Arrival, ArrivalCursor, plan_tick
from .contracts import SourceTable

SENSOR_NAME = "landing_arrival_sensor"

#: Tags on every requested run: the loader reads them to load exactly this object (and check it is unchanged).
LANDING_KEY_TAG = "pipeline/landing_key"
LANDING_ETAG_TAG = "pipeline/landing_etag"
#: On a batch run (a backlog of consecutive days): the JSON list of keys it loads.
LANDING_KEYS_TAG = "pipeline/landing_keys"

#: How many keys one warning lists; the count is always exact.
MAX_LOGGED_KEYS = 20


def run_requests_for(arrivals: Sequence[Arrival]) -> list[dg.RunRequest]:
    """One run per new file — or, for a backlog (several new files of one table on consecutive days, e.g. the
    first tick over a populated bucket), one run over that range of partitions that loads exactly those files.

    A backlog of N days x T tables would otherwise start N x T run processes; one per table and range is what a
    single-run backfill does too. The run key of a batch names every key@ETag in it (hashed), so the same batch is
    never requested twice, and each file is still loaded exactly once (the cursor never lists it again).
    """
    by_table: dict[str, list[Arrival]] = defaultdict(list)
    for arrival in arrivals:
        by_table[arrival.table.table].append(arrival)
    requests: list[dg.RunRequest] = []
    for group in by_table.values():
        for run in _consecutive_days(sorted(group, key=lambda a: (a.landing_key.day, a.obj.key))):
            requests.append(run_request_for(run[0]) if len(run) == 1 else _batch_request(run))
    return requests


def _consecutive_days(arrivals: list[Arrival]) -> list[list[Arrival]]:
    runs: list[list[Arrival]] = []
    for arrival in arrivals:
        if runs and (arrival.landing_key.day - runs[-1][-1].landing_key.day).days <= 1:
            runs[-1].append(arrival)
        else:
            runs.append([arrival])
    return runs


def _batch_request(run: list[Arrival]) -> dg.RunRequest:
    first, last = run[0].landing_key.day.isoformat(), run[-1].landing_key.day.isoformat()
    digest = hashlib.sha256("\n".join(a.run_key for a in run).encode()).hexdigest()[:16]
    return dg.RunRequest(
        run_key=f"{run[0].table.table}:{first}..{last}:{digest}",
        asset_selection=[dg.AssetKey(run[0].table.asset_key)],
        tags={
            "dagster/asset_partition_range_start": first,
            "dagster/asset_partition_range_end": last,
            LANDING_KEYS_TAG: json.dumps([a.obj.key for a in run]),
        },
    )


def run_request_for(arrival: Arrival) -> dg.RunRequest:
    key, etag = arrival.obj.key, arrival.obj.etag
    return dg.RunRequest(
        run_key=arrival.run_key,
        partition_key=arrival.landing_key.day.isoformat(),
        asset_selection=[dg.AssetKey(arrival.table.asset_key)],
        tags={LANDING_KEY_TAG: key, LANDING_ETAG_TAG: etag},
    )


def build_arrival_sensor(
    tables: Sequence[SourceTable],
    *,
    minimum_interval_seconds: int,
    overlap_seconds: int,
    lookback_days: int,
    max_arrivals: int = DEFAULT_MAX_ARRIVALS,
) -> dg.SensorDefinition:
    """The sensor over every system in `tables`, targeting their raw assets (daily-partitioned by landing day)."""
    tables = list(tables)
    asset_keys = [dg.AssetKey(t.asset_key) for t in tables]
    overlap = timedelta(seconds=overlap_seconds)
    prefixes = ", ".join(sorted({t.landing_prefix for t in tables}))

    @dg.sensor(
        name=SENSOR_NAME,
        description=(
            f"Requests one run per new landing file under {prefixes}, for the raw table's partition of the file's"
            f" landing day. Lists the last {lookback_days} landing days only; at most {max_arrivals} runs per tick."
        ),
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        target=asset_keys,
    )
    def landing_arrival_sensor(context: dg.SensorEvaluationContext, landing: LandingResource) -> dg.SensorResult:
        store = landing.store()
        cursor = ArrivalCursor.from_json(context.cursor)
        plan = plan_tick(
            store,
            tables,
            cursor,
            overlap=overlap,
            lookback_days=lookback_days,
            today=datetime.now(UTC).date(),
            max_arrivals=max_arrivals,
        )
        if plan.ignored:
            context.log.warning(
                f"{len(plan.ignored)} new object(s) in {store.url} are not loaded: they do not follow"
                f" <system>/<YYYY-MM-DD>/<file>.<csv|jsonl|ndjson|parquet>[.gz] or match no contract table:"
                f" {_bounded(plan.ignored)}"
            )
        requestable, outside = _split_by_partition(context, plan.arrivals)
        if outside:
            context.log.warning(
                f"{len(outside)} new file(s) land on a day that is not a raw partition (before the partitions'"
                " start date, or not yet begun); they are not requested. Move them to the right day folder, or"
                f" materialize the partition by hand once it exists: {_bounded([a.obj.key for a in outside])}"
            )
        if plan.remaining:
            context.log.info(f"{plan.remaining} more new file(s) wait for the next tick (limit {max_arrivals})")
        new_cursor = plan.cursor.to_json()
        if not requestable:
            since = cursor.high_water.isoformat() if cursor.high_water else "the start"
            return dg.SensorResult(
                skip_reason=(
                    f"No new landing files under {prefixes} since {since}"
                    f" ({plan.listed} object(s) listed, {len(plan.ignored)} ignored, {len(outside)} outside"
                    " the partitions)"
                ),
                cursor=new_cursor,
            )
        context.log.info(f"Requesting {len(requestable)} run(s) for new landing files ({plan.listed} listed)")
        return dg.SensorResult(run_requests=run_requests_for(requestable), cursor=new_cursor)

    return landing_arrival_sensor


def _split_by_partition(
    context: dg.SensorEvaluationContext, arrivals: list[Arrival]
) -> tuple[list[Arrival], list[Arrival]]:
    """Arrivals whose landing day is a partition of their raw asset, and the rest.

    A request for a partition that does not exist fails the whole tick, and a failed tick does not move the
    cursor: one file in a mistyped day folder would stall every later arrival. So such files are set aside with
    a warning instead. Without a repository (a sensor called directly in a test) every arrival is requestable.
    """
    repository = context.repository_def
    if repository is None:
        return arrivals, []
    graph = repository.asset_graph
    requestable: list[Arrival] = []
    outside: list[Arrival] = []
    for arrival in arrivals:
        key = dg.AssetKey(arrival.table.asset_key)
        partitions = graph.get(key).partitions_def if graph.has(key) else None
        if partitions is None or partitions.has_partition_key(arrival.landing_key.day.isoformat()):
            requestable.append(arrival)
        else:
            outside.append(arrival)
    return requestable, outside


def _bounded(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_LOGGED_KEYS])
    return shown + (f" ... and {len(keys) - MAX_LOGGED_KEYS} more" if len(keys) > MAX_LOGGED_KEYS else "")
