"""Alerts: a failed run or a stale asset reaches its owner's channel within one sensor tick.

Both sensors post a Slack-style message (`{"text": ...}`, Slack incoming-webhook compatible) with what an on-call
person needs to act: the run, the job, the failed step and the assets it left unbuilt, the first lines of the error
and a link to the run in the UI (`DAGSTER_UI_BASE_URL`). Messages are routed by asset owner:

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

import dagster as dg
import httpx

from ..activation.transport import RetryingSender, RetryPolicy
from ..settings import Settings, alert_routes

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


def failed_steps(instance: dg.DagsterInstance, run_id: str) -> list[StepFailure]:
    """Each failed step of the run, its error, and the assets it was to build but did not (failed or skipped)."""
    planned: dict[str, set[dg.AssetKey]] = defaultdict(set)
    materialized: set[dg.AssetKey] = set()
    failures: dict[str, str] = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED and event.asset_key:
            planned[event.step_key or ""].add(event.asset_key)
        elif event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION and event.asset_key:
            materialized.add(event.asset_key)
        elif event.event_type == dg.DagsterEventType.STEP_FAILURE and event.step_key:
            error = event.step_failure_data.error if event.step_failure_data else None
            failures[event.step_key] = error.to_string() if error else record.user_message
    return [
        StepFailure(step, error, frozenset(planned.get(step, set()) - materialized)) for step, error in failures.items()
    ]


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
