"""Gates a sync passes before it sends anything: data that failed its tests, stale input, a blast radius.

The facts come from the Dagster instance (latest check executions, latest materializations and failures of
every asset upstream of the model); the decisions are pure functions of those facts, tested on their own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import dagster as dg

from .outbox import DiffCounts


@dataclass(frozen=True)
class UpstreamFacts:
    failed_checks: list[str]  # error-severity (blocking) checks whose latest execution failed
    model_materialized_at: float | None
    #: upstream asset -> (latest successful materialization, latest failed materialization), epoch seconds
    upstream: dict[str, tuple[float | None, float | None]]


def gather(
    instance: dg.DagsterInstance,
    model: dg.AssetKey,
    upstream: Iterable[dg.AssetKey],
    checks: Iterable[dg.AssetCheckKey],
) -> UpstreamFacts:
    """Latest check executions, materializations and failures, read from the instance's event log."""
    check_keys = list(checks)
    latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(check_keys) if check_keys else {}
    failed = []
    for key, record in latest.items():
        event = record.event.dagster_event if record.event else None
        severity = getattr(event.event_specific_data if event else None, "severity", dg.AssetCheckSeverity.ERROR)
        if record.status.value == "FAILED" and severity == dg.AssetCheckSeverity.ERROR:
            failed.append(key.to_user_string())

    def latest_success(key: dg.AssetKey) -> float | None:
        event = instance.get_latest_materialization_event(key)
        return event.timestamp if event else None

    def latest_failure(key: dg.AssetKey) -> float | None:
        """When the latest run planned to materialize `key` failed without doing so: its end time."""
        planned = instance.get_latest_planned_materialization_info(key)
        if planned is None:
            return None
        done = instance.get_latest_materialization_event(key)
        if done is not None and done.run_id == planned.run_id:
            return None
        record = instance.get_run_record_by_id(planned.run_id)
        if record is None or record.dagster_run.status != dg.DagsterRunStatus.FAILURE:
            return None
        return record.end_time or record.update_timestamp.timestamp()

    return UpstreamFacts(
        failed_checks=sorted(failed),
        model_materialized_at=latest_success(model),
        upstream={k.to_user_string(): (latest_success(k), latest_failure(k)) for k in upstream},
    )


def input_refusals(facts: UpstreamFacts, model: str) -> list[str]:
    """Why the sync must not send, judged before the diff: failed blocking checks, stale or failed input."""
    reasons = []
    if facts.failed_checks:
        reasons.append(f"blocking check(s) failed on {model} or upstream: {', '.join(facts.failed_checks)}")
    built = facts.model_materialized_at
    # A model built outside Dagster (no materialization recorded) cannot be compared with its input's age.
    newer = [k for k, (ok, _) in facts.upstream.items() if ok is not None and built is not None and ok > built]
    if newer:
        reasons.append(f"{model} is older than its input: {', '.join(sorted(newer))} changed since it was built")
    broken = [k for k, (ok, failed) in facts.upstream.items() if failed is not None and (ok is None or failed > ok)]
    if broken:
        reasons.append(
            f"the latest load of {', '.join(sorted(broken))} failed, so {model} was built without the newest data"
        )
    return reasons


def blast_radius_refusal(counts: DiffCounts, state_rows: int, max_share: float) -> str | None:
    """Too much would change at once (a broken join, a truncated table). A first sync (empty state) is exempt."""
    total = max(state_rows, counts.adds + counts.changes + counts.unchanged + counts.in_flight)
    if state_rows == 0 or total == 0:
        return None
    share = counts.planned / total
    if share > max_share:
        return (
            f"{counts.planned} of {total} records would change ({share:.0%}), above the sync's limit of"
            f" {max_share:.0%} (max_change_share); run with force: true if this is intended"
        )
    return None


#: what the owner can do about a refusal for the input's sake (a blast-radius refusal says its own)
INPUT_ACTION = (
    "Nothing was sent: the sync sends once the input is fixed and the model rebuilt, or now with `force: true` in"
    " its run config."
)


def describe(reasons: Iterable[str], action: str = "") -> str:
    """The refusal as the step failure and the alert quote it: an expected outcome, said in words (no stack)."""
    return "Sync refused: " + "; ".join(reasons) + (f". {action}" if action else "")
