"""The daily build: every asset of the graph, at a set time in the team's time zone.

Defined by asset selection (all materializable assets), never by model names: a model added to the dbt project is
in tomorrow's build. The run loads the previous local day's raw partition (picking up any file the arrival sensor
could not, e.g. one older than its lookback), then runs dbt and the syncs. A tick is skipped, with the reason, while
an earlier daily build is still queued or running: two builds would only queue behind each other on the one
warehouse writer slot and send the same changes twice as fast as they arrive.
"""

from datetime import timedelta
from zoneinfo import ZoneInfo

import dagster as dg

from ..core.settings import Settings

DAILY_BUILD_JOB = "daily_build"
ACTIVE_STATUSES = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def daily_build_job():  # an unresolved asset job: resolved against the whole graph by Definitions
    return dg.define_asset_job(
        DAILY_BUILD_JOB,
        selection=dg.AssetSelection.all().materializable(),
        description="Every asset: yesterday's raw partition (in PIPELINE_TIMEZONE), dbt build, syncs.",
        tags={"pipeline/trigger": "schedule"},
    )


def build_daily_schedule(settings: Settings) -> dg.ScheduleDefinition:
    zone = ZoneInfo(settings.timezone)

    @dg.schedule(
        name="daily_build_schedule",
        job_name=DAILY_BUILD_JOB,
        cron_schedule=settings.daily_build_cron,
        execution_timezone=settings.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"{DAILY_BUILD_JOB} at `{settings.daily_build_cron}` ({settings.timezone}); skipped while the"
        " previous one is still running.",
    )
    def _daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        active = context.instance.get_run_records(
            dg.RunsFilter(job_name=DAILY_BUILD_JOB, statuses=ACTIVE_STATUSES), limit=1
        )
        if active:
            run = active[0].dagster_run
            return dg.SkipReason(
                f"Skipped: {DAILY_BUILD_JOB} run {run.run_id} is still {run.status.value.lower()}; the next tick"
                " builds everything that changed meanwhile."
            )
        local_day = context.scheduled_execution_time.astimezone(zone).date() - timedelta(days=1)
        return dg.RunRequest(
            run_key=f"{DAILY_BUILD_JOB}:{local_day.isoformat()}",
            partition_key=local_day.isoformat(),
            tags={"pipeline/local_day": local_day.isoformat(), "pipeline/timezone": settings.timezone},
        )

    return _daily
