"""Freshness: stale data is flagged (and its owner told) before a stakeholder notices.

- Raw tables: each day's partition must have loaded by `RAW_FRESHNESS_DEADLINE_CRON` (default 09:00) in
  `PIPELINE_TIMEZONE` — a source system that did not deliver yesterday's file fails its check that morning
  (severity ERROR).
- Marts (dbt group `marts`): rebuilt within `MART_FRESHNESS_HOURS` (default 26: a daily build plus slack), a
  warning when the chain stopped.

`freshness_checks_sensor` evaluates the checks (every 5 minutes; a check only runs again once it could have changed
its answer), and `freshness_alert` posts each failed freshness check to the asset's owners, like run failures.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import timedelta

import dagster as dg

from ..settings import Settings
from .alerts import deliver


def freshness_checks(
    settings: Settings, raw_assets: Sequence[dg.AssetsDefinition], marts: Sequence[dg.AssetKey]
) -> list[dg.AssetChecksDefinition]:
    checks = list(
        dg.build_time_partition_freshness_checks(
            assets=list(raw_assets),
            deadline_cron=settings.raw_freshness_deadline_cron,
            timezone=settings.timezone,
            severity=dg.AssetCheckSeverity.ERROR,
        )
    )
    if marts:
        checks += dg.build_last_update_freshness_checks(
            assets=list(marts),
            lower_bound_delta=timedelta(hours=settings.mart_freshness_hours),
            timezone=settings.timezone,
            severity=dg.AssetCheckSeverity.WARN,
        )
    return checks


def stale_message(evaluation: dg.AssetCheckEvaluation, owners: Sequence[str], ui_base_url: str) -> str:
    key = evaluation.asset_key.to_user_string()
    meta = {k: getattr(v, "value", v) for k, v in evaluation.metadata.items()}
    details = ", ".join(f"{k}: {v}" for k, v in sorted(meta.items()) if k.startswith("dagster/"))
    lines = [
        f":warning: *Stale data*: `{key}` failed `{evaluation.check_name}` ({evaluation.severity.value.lower()})",
        *([f"Owners: {', '.join(owners)}"] if owners else []),
        *([details] if details else []),
        f"<{ui_base_url}/assets/{'/'.join(evaluation.asset_key.path)}|Open the asset in Dagster>",
    ]
    return "\n".join(lines)


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
            sent += deliver(asset_owners, stale_message(evaluation, asset_owners, settings.ui_base_url), context.log)
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
            dg.build_sensor_for_freshness_checks(
                freshness_checks=checks, default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=300
            ),
            build_freshness_alert(checks, owners),
        ],
    )
