"""P7 (issue 6): with `dagster dev` running and a 15 s arrival-sensor interval, a file landing reaches the CRM within
60 s: from the moment the file appears in the landing folder until the CRM holds its records with the new values.

The stack is the browser test's fully temporary one (`devstack.dagster_dev`: instance with devstack/dagster.yaml,
landing folder, DuckDB warehouse, local CRM and webhook receiver, `dagster dev` on a free port) with
LANDING_SENSOR_INTERVAL_SECONDS=15; both sensors (`landing_arrival_sensor`, `downstream_automation`, 15 s) run —
they default to RUNNING, and are started through GraphQL should they not.

Scenario, untimed first: the stack starts on an empty landing folder; one run materializes the dbt seeds (the part of
the README's one-off "Materialize all" that automation never does); then the demo shop's first days (every table)
land, the arrival sensor loads them and the automation sensor builds dbt and syncs every customer to the CRM.
Each repetition then delivers the *next* day's `shop/<day>/customers.csv` of the same deterministic demo
(new sign-ups and profile changes: new emails, opt-in flips, moves abroad), written beside the landing folder and
renamed into it (an atomic arrival, as an S3 PUT is). That one file has to travel the whole way: arrival sensor tick
-> raw load run -> automation tick -> `dbt build` + `crm_contacts_sync` run -> CRM. The clock stops when a batch
read of those customers from the CRM returns every one with the file's values (email, names, country, opt-in),
which is asserted. Before each repetition the stack is idle (no run active, none created for a while), untimed.

The breakdown (parts 1-7 add up to the total) comes from the Dagster GraphQL API: run creation/start/end times and
the step events of the two runs, against the landing time taken here (same machine clock).
"""

from __future__ import annotations

import csv
import io
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from devstack.dagster_dev import RUN_EVENTS_QUERY, DagsterDev, dagster_dev, launch_assets
from devstack.demo_data import generate

from ..harness import Case, Row, Setup

log = logging.getLogger("bench.p7")

GOAL_SECONDS = 60.0
SENSOR_INTERVAL_SECONDS = 15
AUTOMATION_SENSOR = "downstream_automation"
ARRIVAL_SENSOR = "landing_arrival_sensor"
CRM_TOKEN = "bench-token"
WEBHOOK_SECRET = "bench-webhook-secret"
ID_PROPERTY = "tidewater_customer_id"  # CRM_ID_PROPERTY's default
#: (demo days landed before the stack starts, customers on day 1)
FULL_SIZE = (3, 500)
QUICK_SIZE = (1, 100)
#: New days available to repetitions, ending today (a raw partition: end_offset=1) and inside the sensor's 7-day
#: lookback; one per repetition, so at most this many repetitions.
NEW_DAYS = 6
ARRIVAL_TIMEOUT = 300.0
BACKLOG_TIMEOUT = 900.0
#: Idle = no run active and none created for this long (longer than the automation sensor's 15 s interval).
QUIET_SECONDS = 25.0
POLL_SECONDS = 0.25
ACTIVE_RUN_STATUSES = {"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"}

TOTAL = "landing → CRM holds the records"
PARTS = (
    "1 landing → raw run requested (arrival sensor tick)",
    "2 raw run requested → started (queue, launch)",
    "3 raw run started → finished (load customers.csv)",
    "4 raw run finished → downstream run requested (automation tick)",
    "5 downstream run requested → started (queue, launch)",
    "6 downstream run started → dbt step done (dbt build)",
    "7 dbt step done → CRM holds the records (sync)",
)
DBT_STEP = "6a the dbt step alone (step start → success), inside part 6"
SYNC_STEP = "7a the crm_contacts_sync step alone (step start → success), inside part 7"

RUNS_QUERY = """
query ($filter: RunsFilter, $limit: Int) {
  runsOrError(filter: $filter, limit: $limit) {
    __typename
    ... on Runs { results { runId status creationTime startTime endTime tags { key value } } }
    ... on PythonError { message }
  }
}
"""
ASSET_NODES_QUERY = "{ assetNodes { assetKey { path } dependencyKeys { path } isPartitioned isMaterializable } }"


def materialize_roots(dev: DagsterDev) -> list[str]:
    """Launch one run of the unpartitioned assets with nothing materializable upstream (the dbt seeds), as the
    README's "Materialize all" does once on a new deployment: automation never builds an asset merely because it
    is missing, so without them dbt_build fails (`country_regions` does not exist)."""
    nodes = dev.gql(ASSET_NODES_QUERY)["assetNodes"]
    materializable = {tuple(n["assetKey"]["path"]) for n in nodes if n["isMaterializable"]}
    roots = [
        n["assetKey"]
        for n in nodes
        if n["isMaterializable"]
        and not n["isPartitioned"]
        and not any(tuple(d["path"]) in materializable for d in n["dependencyKeys"])
    ]
    launch_assets(dev.gql, *(key["path"] for key in roots))
    return ["/".join(key["path"]) for key in roots]


def runs(dev: DagsterDev, limit: int = 50, **filter_: Any) -> list[dict[str, Any]]:
    answer = dev.gql(RUNS_QUERY, filter=filter_ or None, limit=limit)["runsOrError"]
    if answer["__typename"] != "Runs":
        raise AssertionError(f"runsOrError: {answer}")
    return answer["results"]


def run_events(dev: DagsterDev, run_id: str) -> list[dict[str, Any]]:
    answer = dev.gql(RUN_EVENTS_QUERY, runId=run_id)["logsForRun"]
    if answer["__typename"] != "EventConnection":
        raise AssertionError(f"logsForRun({run_id}): {answer}")
    return answer["events"]


def failures(dev: DagsterDev, failed: list[dict[str, Any]]) -> str:
    lines = []
    for run in failed:
        errors = []
        for event in run_events(dev, run["runId"]):
            if event["__typename"] == "ExecutionStepFailureEvent":
                chain, error = [], event["error"]
                while error:
                    chain.append(error["message"].strip()[:1500])
                    error = error.get("cause")
                errors.append(f"{event['stepKey']}: " + " <- ".join(chain))
        lines.append(f"run {run['runId']} ({run['status']}): " + ("; ".join(errors) or "-"))
    return "\n".join(lines)


def wait_until_idle(
    dev: DagsterDev, *, since: float | None, timeout: float, quiet: float = QUIET_SECONDS
) -> list[dict[str, Any]]:
    """Until no run is active and none was created for `quiet` seconds; fails on a failed run created after `since`
    (None: failures are returned, not raised)."""
    deadline = time.monotonic() + timeout
    while True:
        if dev.process.poll() is not None:
            raise AssertionError(f"dagster dev exited with {dev.process.returncode}:\n{dev.log_tail()}")
        recent = runs(dev)
        failed = [r for r in recent if r["status"] == "FAILURE" and r["creationTime"] >= (since or 0.0)]
        if failed and since is not None:
            raise AssertionError(f"runs failed; see {dev.log}\n{failures(dev, failed)}")
        active = [r for r in recent if r["status"] in ACTIVE_RUN_STATUSES]
        newest = max((r["creationTime"] for r in recent), default=0.0)
        if not active and time.time() - newest >= quiet:
            return failed
        if time.monotonic() > deadline:
            raise AssertionError(f"not idle after {timeout:.0f} s: {len(active)} run(s) active; see {dev.log}")
        time.sleep(1)


def expected_contacts(csv_bytes: bytes) -> dict[str, dict[str, str]]:
    """customer_id -> the CRM properties the file's row must end up as (dim_customers' cleaning, the sync's mapping)."""
    contacts = {}
    for row in csv.DictReader(io.StringIO(csv_bytes.decode("utf-8"))):
        contacts[row["customer_id"]] = {
            "email": row["email"].strip().lower(),
            "firstname": row["first_name"].strip(),
            "lastname": row["last_name"].strip(),
            "country": row["country_code"].strip().upper(),
            "tidewater_marketing_opt_in": "true" if row["marketing_opt_in"].strip().lower() == "true" else "false",
        }
    return contacts


def crm_mismatches(client: httpx.Client, expected: dict[str, dict[str, str]]) -> list[str]:
    """What the CRM does not (yet) hold of `expected`: one line per customer missing or with another value."""
    names = sorted({name for props in expected.values() for name in props})
    response = client.post(
        "/crm/v3/objects/contacts/batch/read",
        json={"idProperty": ID_PROPERTY, "properties": [ID_PROPERTY, *names], "inputs": [{"id": i} for i in expected]},
    )
    if response.status_code not in (200, 207):
        response.raise_for_status()
    found = {c["properties"].get(ID_PROPERTY): c["properties"] for c in response.json()["results"]}
    problems = []
    for customer_id, props in expected.items():
        held = found.get(customer_id)
        if held is None:
            problems.append(f"{customer_id}: not in the CRM")
            continue
        wrong = {name: (held.get(name), value) for name, value in props.items() if held.get(name) != value}
        if wrong:
            problems.append(f"{customer_id}: " + ", ".join(f"{n} {h!r} (want {w!r})" for n, (h, w) in wrong.items()))
    return problems


def breakdown(dev: DagsterDev, key: str, landed: float, held: float) -> dict[str, float]:
    """Parts 1-7 of landing → CRM from the two runs' times and step events (Unix seconds throughout)."""
    raw_runs = runs(dev, tags=[{"key": "pipeline/landing_key", "value": key}])
    raw = min((r for r in raw_runs if r["creationTime"] >= landed - 1), key=lambda r: r["creationTime"])
    downstream = None
    deadline = time.monotonic() + 120
    while downstream is None:  # the sync's materialization is recorded just after the CRM acknowledged
        for run in runs(dev, createdAfter=raw["creationTime"]):
            if run["runId"] == raw["runId"]:
                continue
            events = run_events(dev, run["runId"])
            materialized = {
                "/".join(e["assetKey"]["path"]): e for e in events if e["__typename"] == "MaterializationEvent"
            }
            synced = materialized.get("crm_contacts_sync")
            if synced and any(
                e["__typename"] == "ExecutionStepSuccessEvent" and e["stepKey"] == synced["stepKey"] for e in events
            ):
                downstream = (run, events, materialized)
        if downstream is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"no run materialized crm_contacts_sync after {key} landed; see {dev.log}")
            time.sleep(1)
    run, events, materialized = downstream
    if raw["endTime"] is None:
        raise AssertionError(f"raw run {raw['runId']} ({raw['status']}) has not ended, yet its data reached the CRM")

    def step_time(kind: str, step: str) -> float:
        return next(int(e["timestamp"]) / 1000 for e in events if e["__typename"] == kind and e["stepKey"] == step)

    dbt_step = materialized["dim_customers"]["stepKey"]
    sync_step = materialized["crm_contacts_sync"]["stepKey"]
    dbt_done = step_time("ExecutionStepSuccessEvent", dbt_step)
    sync_done = step_time("ExecutionStepSuccessEvent", sync_step)
    times = [
        landed,
        raw["creationTime"],
        raw["startTime"],
        raw["endTime"],
        run["creationTime"],
        run["startTime"],
        dbt_done,
        held,
    ]
    parts = {name: end - start for name, start, end in zip(PARTS, times, times[1:], strict=False)}
    parts[DBT_STEP] = dbt_done - step_time("ExecutionStepStartEvent", dbt_step)
    parts[SYNC_STEP] = sync_done - step_time("ExecutionStepStartEvent", sync_step)
    return parts


@contextmanager
def prepare(quick: bool, workdir: Path) -> Iterator[Setup]:
    demo_days, customers = QUICK_SIZE if quick else FULL_SIZE
    today = datetime.now(UTC).date()
    first_day = today - timedelta(days=demo_days + NEW_DAYS - 1)
    source, landing, staging = workdir / "demo", workdir / "stack" / "landing", workdir / "staging"
    generate(source, days=demo_days + NEW_DAYS, customers=customers, start=first_day, progress=False)
    backlog = [first_day + timedelta(days=i) for i in range(demo_days)]
    new_days = [first_day + timedelta(days=demo_days + i) for i in range(NEW_DAYS)]
    staging.mkdir()

    def deliver(key: str) -> float:
        """Put the demo's `key` into the landing folder at once (renamed from beside it); returns the Unix time."""
        pending = staging / Path(key).name
        pending.write_bytes((source / key).read_bytes())  # the sensor never sees a half-written file
        (landing / key).parent.mkdir(parents=True, exist_ok=True)
        landed_at = time.time()
        os.replace(pending, landing / key)
        return landed_at

    # Outside `workdir` (removed afterwards), so a failure or a miss can be looked into; overwritten by the next run.
    log_path = Path(tempfile.gettempdir()) / "bench-p7-dagster-dev.log"

    started = time.monotonic()
    with dagster_dev(
        workdir / "stack",
        log=log_path,
        first_day=first_day,
        crm_token=CRM_TOKEN,
        webhook_secret=WEBHOOK_SECRET,
        env={"LANDING_SENSOR_INTERVAL_SECONDS": str(SENSOR_INTERVAL_SECONDS)},
    ) as dev:
        loaded = time.monotonic() - started
        for sensor in (ARRIVAL_SENSOR, AUTOMATION_SENSOR):
            dev.ensure_sensor_running(sensor)
        # The README's one-off "Materialize all" on a new deployment, reduced to what automation cannot do: the
        # seeds (nothing upstream ever changes). Done before any file lands, so no automation run meets a missing
        # `country_regions`.
        roots = materialize_roots(dev)
        wait_until_idle(dev, since=0.0, timeout=BACKLOG_TIMEOUT)
        crm = httpx.Client(base_url=dev.crm_url, headers={"Authorization": f"Bearer {CRM_TOKEN}"}, trust_env=False)
        # The backlog: every demo file of the first days lands, is loaded, dbt builds, every customer is synced.
        log.info("p7: stack up in %.0f s, seeds built; landing the demo backlog", loaded)
        for day in backlog:
            for path in sorted((source / "shop" / day.isoformat()).iterdir()):
                deliver(f"shop/{day.isoformat()}/{path.name}")
            deliver(f"billing/{day.isoformat()}/payments.parquet")
        deadline = time.monotonic() + BACKLOG_TIMEOUT
        while crm.get("/_devstack/stats").json()["contacts"] < customers:
            if time.monotonic() > deadline:
                raise AssertionError(f"the demo backlog did not reach the CRM in {BACKLOG_TIMEOUT:.0f} s; {log_path}")
            time.sleep(2)
        # Runs of the backlog may fail (see the notes); what counts is that the CRM converged and that nothing fails
        # from here on.
        backlog_failures = wait_until_idle(dev, since=None, timeout=BACKLOG_TIMEOUT)
        if backlog_failures:
            log.warning("p7: %d backlog run(s) failed:\n%s", len(backlog_failures), failures(dev, backlog_failures))
        checked_since = time.time()
        backlog_seconds = time.monotonic() - started - loaded
        contacts_before = crm.get("/_devstack/stats").json()["contacts"]
        log.info("p7: backlog done (%d contacts) after %.0f s more", contacts_before, backlog_seconds)
        unused = iter(new_days)
        notes = [
            "Stack: `devstack.dagster_dev` (what the browser test starts): `dagster dev` on a temporary"
            " instance with devstack/dagster.yaml (queued runs, `warehouse` pool limit 1), the local"
            " CRM and webhook receiver; LANDING_SENSOR_INTERVAL_SECONDS=15, `downstream_automation` every"
            " 15 s (both sensors RUNNING by default, checked through GraphQL)",
            f"Before timing: demo data ({customers} customers on day 1) for {backlog[0]}..{backlog[-1]}, all"
            f" five tables, landed once one run had materialized {', '.join(roots)} (the part of the README's"
            ' one-off "Materialize all" that automation cannot do: it never builds an asset merely because it is'
            " missing); the arrival sensor loaded the files, automation built dbt and synced, and"
            f" {contacts_before} contacts reached the CRM ({loaded:.0f} s to load the code location,"
            f" {backlog_seconds:.0f} s more for the seeds and the backlog)"
            + (
                f"; {len(backlog_failures)} automation run(s) of the backlog failed (see the log) and a later one"
                " caught up"
                if backlog_failures
                else ""
            ),
            f"`dagster dev` log: {log_path}",
            "Each repetition: the next demo day's `shop/<day>/customers.csv` (sign-ups and profile changes)"
            " renamed into the landing folder; the clock stops when one CRM batch read (polled every"
            f" {POLL_SECONDS:g} s) returns each of its customers with the file's email, names, country and"
            " opt-in (asserted). The stack is idle before each repetition (untimed)",
            "Parts 1-7 add up to the total; from the runs' creation/start/end times and step events in"
            " Dagster's GraphQL API. Part 1 includes up to one sensor interval of waiting (the file lands at"
            " a random point of the interval); part 4 up to one automation interval",
        ]

        def arrival() -> dict[str, float]:
            day = next(unused, None)
            if day is None:
                raise AssertionError(f"p7 has {NEW_DAYS} new days, one per repetition: use --repeat {NEW_DAYS} or less")
            wait_until_idle(dev, since=checked_since, timeout=ARRIVAL_TIMEOUT)
            key = f"shop/{day.isoformat()}/customers.csv"
            expected = expected_contacts((source / key).read_bytes())
            assert crm_mismatches(crm, expected), f"the CRM already holds {key}'s values: nothing to measure"
            landed, landed_at = time.perf_counter(), deliver(key)
            deadline = landed + ARRIVAL_TIMEOUT
            while problems := crm_mismatches(crm, expected):
                if time.perf_counter() > deadline:
                    raise AssertionError(
                        f"{key} not in the CRM after {ARRIVAL_TIMEOUT:.0f} s; see {log_path}:\n" + "\n".join(problems)
                    )
                time.sleep(POLL_SECONDS)
            total = time.perf_counter() - landed
            held_at = landed_at + total
            parts = breakdown(dev, key, landed_at, held_at)
            notes.append(
                f"Repetition {sum(note.startswith('Repetition') for note in notes) + 1}: {key}"
                f" ({len(expected)} customers) in {total:.1f} s = " + " + ".join(f"{parts[name]:.1f}" for name in PARTS)
            )
            log.info("p7 %s: %.1f s; %s", key, total, "; ".join(f"{k.strip()}: {v:.1f} s" for k, v in parts.items()))
            return {TOTAL: total, **parts}

        try:
            yield Setup(
                measures={TOTAL: arrival},
                rows=[
                    Row("file landing → CRM holds its records (`dagster dev`, 15 s sensors)", TOTAL, goal=GOAL_SECONDS),
                    *(Row(f"part {name}", name) for name in (*PARTS, DBT_STEP, SYNC_STEP)),
                ],
                notes=notes,
            )
        finally:
            crm.close()


CASE = Case("p7", "file landing → CRM with `dagster dev` running and 15 s sensors (absolute goal ≤ 60 s)", prepare)
