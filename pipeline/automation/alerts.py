"""Alerts: a failed run or a stale asset reaches its owner's channel within one sensor tick.

Both sensors post a Slack-style message (`{"text": ...}`, Slack incoming-webhook compatible) with what an on-call
person needs to act: the run, the job, the failed step and the assets it left unbuilt, the first lines of the error
and a link to the run in the UI (`DAGSTER_UI_BASE_URL`). Times are local times in `PIPELINE_TIMEZONE`
("2026-12-01 06:12 CET"), never epoch seconds. An expected data error (a `dg.Failure`: a quarantined file, a sync
gate's refusal) is quoted by its message alone; a crash keeps its stack trace. Messages are routed by asset owner:

    ALERT_ROUTES='{"team:finance_data": "https://hooks.slack.com/...", "analytics@tidewater.example": "https://..."}'
    ALERT_WEBHOOK_URL=https://hooks.slack.com/...      everything no route claims

Owners come from dbt `meta.owner`, the `owner` of a landing system (contracts.yaml) and of a sync (syncs.yaml).
An alert about assets with several owners goes to each of their routes once. Both variables are secrets (webhook
URLs) and are read when a sensor evaluates, never stored in config. With neither set, alerts are logged only.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import dagster as dg
import httpx

from ..core.settings import Settings, alert_routes
from ..core.transport import RetryingSender, RetryPolicy

if TYPE_CHECKING:
    from dagster._core.execution.plan.objects import StepFailureData  # DagsterEvent.step_failure_data

ERROR_LINES = 8
MAX_ASSETS_LISTED = 10


@dataclass(frozen=True)
class AlertRoutes:
    routes: Mapping[str, str]
    default: str | None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AlertRoutes:
        env = os.environ if environ is None else environ
        return cls(routes=alert_routes(env), default=env.get("ALERT_WEBHOOK_URL") or None)

    def targets(self, owners: Iterable[str]) -> list[str]:
        """The webhooks for these owners (each once); the default when no owner has a route."""
        urls = list(dict.fromkeys(self.routes[o] for o in owners if o in self.routes))
        if not urls and self.default:
            urls = [self.default]
        return urls


def post(urls: Sequence[str], text: str, log: dg.DagsterLogManager | None = None) -> int:
    """POST `{"text": text}` to each URL (retrying 429 / 5xx / connection errors briefly); returns how many took it.

    One unreachable channel must not silence the others, so failures are logged, not raised.
    """
    sender = RetryingSender(policy=RetryPolicy(max_attempts=3, base_delay_seconds=0.5, max_delay_seconds=5))
    delivered = 0
    with httpx.Client(timeout=10) as client:
        for url in urls:
            try:
                response = sender.send(lambda url=url: client.post(url, json={"text": text}))
                response.raise_for_status()
                delivered += 1
            except httpx.HTTPError as exc:
                if log:
                    log.error(f"Alert not delivered to one route: {type(exc).__name__}: {str(exc)[:200]}")
    return delivered


def deliver(owners: Iterable[str], text: str, log: dg.DagsterLogManager) -> int:
    """Post `text` to the routes of `owners` (or the default route); with no route set, log it instead."""
    urls = AlertRoutes.from_env().targets(owners)
    if not urls:
        log.warning(f"No ALERT_ROUTES / ALERT_WEBHOOK_URL set; the alert was:\n{text}")
        return 0
    return post(urls, text, log)


def local_time(timestamp: float, timezone: str) -> str:
    """`2026-12-01 06:12 CET`: a time as the people the alert goes to read it (PIPELINE_TIMEZONE)."""
    return datetime.fromtimestamp(timestamp, ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M %Z")


def duration(seconds: float) -> str:
    """`26 h`, `3 h 10 min`, `45 min`: how long, to the minute."""
    hours, minutes = divmod(round(seconds / 60), 60)
    parts = [f"{hours} h"] if hours else []
    if minutes or not parts:
        parts.append(f"{minutes} min")
    return " ".join(parts)


def first_lines(text: str, count: int = ERROR_LINES) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[:count]) + ("\n…" if len(lines) > count else "")


def _names(keys: Iterable[dg.AssetKey]) -> str:
    names = sorted(k.to_user_string() for k in keys)
    more = f" (+{len(names) - MAX_ASSETS_LISTED} more)" if len(names) > MAX_ASSETS_LISTED else ""
    return ", ".join(names[:MAX_ASSETS_LISTED]) + more


@dataclass(frozen=True)
class StepFailure:
    step: str
    error: str
    assets: frozenset[dg.AssetKey]


#: Events that end a step's attempt; a step whose last STEP_START has none after it was still running when the run
#: ended (its worker was killed: no STEP_FAILURE is ever written for it). A retry request is not an end.
STEP_ENDS = (dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.STEP_SKIPPED)


def failed_steps(instance: dg.DagsterInstance, run_id: str) -> list[StepFailure]:
    """Each failed step of the run, its error, and the assets it was to build but did not (failed or skipped).

    A step the run died in (its worker killed, out of memory) counts as failed, with what was logged about the run
    after the step's last event as its error (the code server's "terminated by signal 9 (SIGKILL)", run monitoring's
    "run worker ... no longer exists")."""
    planned: dict[str, set[dg.AssetKey]] = defaultdict(set)
    materialized: set[dg.AssetKey] = set()
    failures: dict[str, str] = {}
    running: set[str] = set()
    after_last_step_event: list[str] = []
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None:
            continue
        if event.step_key:
            after_last_step_event = []
        elif event.event_type in (dg.DagsterEventType.ENGINE_EVENT, dg.DagsterEventType.RUN_FAILURE):
            after_last_step_event.append(event.message or record.user_message)
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED and event.asset_key:
            planned[event.step_key or ""].add(event.asset_key)
        elif event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION and event.asset_key:
            materialized.add(event.asset_key)
        elif event.event_type == dg.DagsterEventType.STEP_START and event.step_key:
            running.add(event.step_key)
        elif event.event_type in STEP_ENDS and event.step_key:
            running.discard(event.step_key)
        if event.event_type == dg.DagsterEventType.STEP_FAILURE and event.step_key:
            failures[event.step_key] = failure_text(event.step_failure_data) or record.user_message
    died = "\n".join(["The run ended while this step was running.", *filter(None, after_last_step_event)])
    failures.update({step: died for step in sorted(running)})
    return [
        StepFailure(step, error, frozenset(planned.get(step, set()) - materialized)) for step, error in failures.items()
    ]


def failure_text(data: StepFailureData | None) -> str:
    """What a step failure says to a person: a `dg.Failure`'s own message, without a stack trace, or a crash's error
    with the stack of the code that raised it.

    Dagster stores a `dg.Failure` as any exception — its message, the stack (user code and framework frames) and the
    cause — plus the Failure's description and metadata as `user_failure_data`. The description is the message the
    code wrote for a person (which file, what was wrong, where it went, what to do); the frames say nothing an
    analytics engineer can act on. Anything else is a crash, and its stack is what a developer needs:
    `error_display_string` is Dagster's rendering of it that leaves out the framework's own frames.
    """
    if data is None:
        return ""
    user = data.user_failure_data
    if user is not None and user.description:
        return user.description
    return data.error_display_string if data.error else ""


def failure_message(
    run: dg.DagsterRun, failures: Sequence[StepFailure], owners: Mapping[dg.AssetKey, Sequence[str]], ui_base_url: str
) -> str:
    lines = [f":red_circle: *Run failed*: `{run.job_name}` run `{run.run_id[:8]}`"]
    if partition := run.tags.get("dagster/partition") or run.tags.get("dagster/asset_partition_range_start"):
        lines.append(f"Partition: {partition}")
    for failure in failures or [StepFailure("(run)", "The run failed before any step ran.", frozenset())]:
        lines.append(f"*Failed step*: `{failure.step}`")
        if failure.assets:
            lines.append(f"Assets not built: {_names(failure.assets)}")
            who = sorted({o for k in failure.assets for o in owners.get(k, ())})
            if who:
                lines.append(f"Owners: {', '.join(who)}")
        lines.append(f"```{first_lines(failure.error)}```")
    lines.append(f"<{ui_base_url}/runs/{run.run_id}|Open the run in Dagster>")
    return "\n".join(lines)


def build_run_failure_alert(owners: Mapping[dg.AssetKey, Sequence[str]]) -> dg.SensorDefinition:
    """`owners`: asset key -> owners, from the code location's asset specs."""

    @dg.run_failure_sensor(
        name="run_failure_alert",
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=10,
        description="Posts every failed run to the failed assets' owners (ALERT_ROUTES) or ALERT_WEBHOOK_URL.",
    )
    def _alert(context: dg.RunFailureSensorContext) -> dg.SkipReason | None:
        run = context.dagster_run
        failures = failed_steps(context.instance, run.run_id)
        text = failure_message(run, failures, owners, Settings.from_env().ui_base_url)
        assets = {k for f in failures for k in f.assets}
        if not deliver((o for k in assets for o in owners.get(k, ())), text, context.log):
            return dg.SkipReason("the alert reached no route (see the log)")
        return None

    return _alert
