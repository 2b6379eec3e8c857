"""dbt Cloud jobs' schedules, moved here: import them once as data, then run them from Dagster.

    python -m pipeline.transformation.cloud_jobs [--output FILE]     (make dbt-cloud-import)

lists the dbt Cloud jobs of DBT_CLOUD_PROJECT_ID / DBT_CLOUD_ENVIRONMENT_ID (dagster-dbt's client), and writes, for
each job with a cron schedule, a schedule of the same cron over the same dbt selection to DBT_CLOUD_SCHEDULES_PATH
(default pipeline/automation/dbt_cloud_schedules.yaml, in the repository, reviewed like code):

    timezone: UTC                      # dbt Cloud runs cron schedules in UTC; the schedules here say so explicitly
    schedules:
      dbt_cloud_daily_marts:           # a Dagster schedule (and its job), named after the dbt Cloud job
        dbt_cloud_job_id: 12
        dbt_cloud_job_name: Daily marts
        cron: 0 6 * * *
        timezone: UTC
        select: marts+                 # from the job's commands: `dbt build --select marts+`
        exclude: ''
        commands: [dbt build --select marts+]

The code location loads the file (`load_schedules`): each entry is an asset job over the dbt assets that selection
names (dagster-dbt's `DbtManifestAssetSelection`, dbt's own selector) and a schedule, stopped until someone starts
it, which is the moment to turn the job's schedule off in dbt Cloud (the import says which ones are on), so the
same build does not run twice. Commands that build nothing (`dbt source freshness`, `dbt docs generate`, `dbt
run-operation`) are listed under `not_imported` with the reason; a job made only of them gets no schedule.
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import yaml
from dagster_dbt import DagsterDbtTranslator
from dagster_dbt.cloud_v2.resources import get_dagster_adhoc_job_name
from dagster_dbt.dbt_manifest_asset_selection import DbtManifestAssetSelection

from ..core.config_files import Problems, load_marked, shown_path
from ..core.settings import ConfigurationError, Settings, cron_expression, time_zone

#: dbt commands that build (or test) nodes: a job step running one of them becomes part of the schedule's selection
BUILDING_COMMANDS = ("build", "run", "test", "seed", "snapshot")
#: what a command builds, as a dbt selector to intersect with its --select (`dbt build` builds every resource type;
#: `dbt test` builds nothing: here a build always runs the tests of what it builds, so a test step adds nothing)
RESOURCE_TYPE_OF = {"run": "model", "seed": "seed", "snapshot": "snapshot"}
SELECT_FLAGS = ("-s", "--select", "-m", "--models", "--model")
EXCLUDE_FLAGS = ("--exclude",)
DBT_CLOUD_TIMEZONE = "UTC"
SCHEDULE_KEYS = (
    "dbt_cloud_job_id",
    "dbt_cloud_job_name",
    "cron",
    "timezone",
    "select",
    "exclude",
    "commands",
    "not_imported",
)
NAME_RULE = (re.compile(r"[A-Za-z_][A-Za-z0-9_]*"), "letters, digits and underscores, not starting with a digit")


@dataclass
class ImportedJob:
    """One dbt Cloud job as a schedule (`schedule_name` None: not imported, `reasons` say why)."""

    job_id: int
    job_name: str
    cron: str | None
    schedule_on: bool
    commands: list[str]
    select: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    #: commands of the job that build nothing (`dbt source freshness`, `dbt docs generate`): not part of the schedule
    not_imported: list[str] = field(default_factory=list)
    schedule_name: str | None = None


def selection_of(command: str) -> tuple[str, list[str], list[str]] | None:
    """(dbt subcommand, --select values, --exclude values) of a `dbt ...` step; None when it builds nothing."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    if words[:1] == ["dbt"]:
        words = words[1:]
    subcommand = next((w for w in words if not w.startswith("-")), None)
    if subcommand not in BUILDING_COMMANDS:
        return None
    select: list[str] = []
    exclude: list[str] = []
    target: list[str] | None = None
    for word in words[words.index(subcommand) + 1 :]:
        if word.startswith("-"):
            flag, _, value = word.partition("=")
            target = select if flag in SELECT_FLAGS else exclude if flag in EXCLUDE_FLAGS else None
            if value and target is not None:
                target.append(value)
                target = target if flag in SELECT_FLAGS + EXCLUDE_FLAGS else None
        elif target is not None:
            target.append(word)
    return subcommand, select, exclude


def node_selection(subcommand: str, select: Sequence[str]) -> str:
    """The dbt selection of the nodes a command builds: `dbt seed` builds the seeds of its selection only, `dbt run`
    the models, `dbt snapshot` the snapshots; `dbt build` everything selected (all of the project without --select).
    dbt's comma intersects: `marts+,resource_type:model`."""
    kind = RESOURCE_TYPE_OF.get(subcommand)
    if kind is None:
        return " ".join(select) or "fqn:*"
    return " ".join(f"{term},resource_type:{kind}" for term in select) or f"resource_type:{kind}"


def schedule_name(job_name: str, job_id: int, taken: set[str]) -> str:
    base = "dbt_cloud_" + (re.sub(r"[^a-z0-9]+", "_", job_name.lower()).strip("_") or f"job_{job_id}")
    name = base if base not in taken else f"{base}_{job_id}"
    taken.add(name)
    return name


def import_jobs(jobs: Sequence[Mapping[str, Any]], skip_job_ids: set[int] = frozenset()) -> list[ImportedJob]:
    """dbt Cloud's job objects (as the API lists them) as schedules to write, or with the reasons they are not."""
    imported: list[ImportedJob] = []
    taken: set[str] = set()
    for job in sorted(jobs, key=lambda j: j["id"]):
        schedule = job.get("schedule") or {}
        cron = (schedule.get("cron") or (schedule.get("date") or {}).get("cron") or "").strip() or None
        item = ImportedJob(
            job_id=int(job["id"]),
            job_name=str(job.get("name") or f"job {job['id']}"),
            cron=cron,
            schedule_on=bool((job.get("triggers") or {}).get("schedule")),
            commands=[str(c) for c in job.get("execute_steps") or []],
        )
        imported.append(item)
        if item.job_id in skip_job_ids:
            item.reasons.append("the job Dagster triggers (DBT_CLOUD_JOB_NAME)")
            continue
        if cron is None:
            item.reasons.append("no cron schedule")
        elif not item.schedule_on:
            item.reasons.append("its schedule is off in dbt Cloud")
        elif not _valid(cron_expression, cron):
            item.reasons.append(f"its cron {cron!r} is not one Dagster accepts")
        for command in item.commands:
            parsed = selection_of(command)
            if parsed is None:
                item.not_imported.append(command)
                continue
            subcommand, select, exclude = parsed
            if subcommand == "test":  # the builds here test what they build: a test step selects nothing more
                item.not_imported.append(command)
                continue
            item.select.append(node_selection(subcommand, select))
            item.exclude.extend(exclude)
        if not item.select:
            item.reasons.append("no command that builds nodes (dbt build/run/seed/snapshot)")
        if not item.reasons:
            item.schedule_name = schedule_name(item.job_name, item.job_id, taken)
    return imported


def _valid(parse: Any, value: str) -> bool:
    try:
        parse(value)
    except ValueError:
        return False
    return True


def schedules_document(imported: Sequence[ImportedJob], source: str) -> str:
    entries = {}
    for item in imported:
        if item.schedule_name is None:
            continue
        entries[item.schedule_name] = {
            "dbt_cloud_job_id": item.job_id,
            "dbt_cloud_job_name": item.job_name,
            "cron": item.cron,
            "timezone": DBT_CLOUD_TIMEZONE,
            "select": " ".join(dict.fromkeys(item.select)),
            "exclude": " ".join(dict.fromkeys(item.exclude)),
            "commands": item.commands,
            **({"not_imported": item.not_imported} if item.not_imported else {}),
        }
    header = (
        f"# dbt Cloud job schedules imported from {source} by `python -m pipeline.transformation.cloud_jobs`.\n"
        "# Each is a stopped Dagster schedule: turn the job's schedule off in dbt Cloud, then start it in Dagster.\n"
        "# `timezone` is the zone the cron is read in (dbt Cloud's is UTC). Edit freely; re-importing overwrites.\n"
    )
    return header + yaml.safe_dump({"timezone": DBT_CLOUD_TIMEZONE, "schedules": entries}, sort_keys=False)


def load_schedules(
    path: Path, manifest: Mapping[str, Any], translator: DagsterDbtTranslator
) -> tuple[list[dg.UnresolvedAssetJobDefinition], list[dg.ScheduleDefinition]]:
    """The imported schedules (none when the file does not exist); ConfigFileError naming each bad line."""
    if not path.is_file():
        return [], []
    document = load_marked(path)
    problems = Problems(path)
    root = problems.mapping(document, 1, "the file")
    jobs: list[dg.UnresolvedAssetJobDefinition] = []
    schedules: list[dg.ScheduleDefinition] = []
    if root is None:
        problems.raise_if_any("see pipeline/transformation/cloud_jobs.py for its form")
    problems.keys(root, ("timezone", "schedules"), "the file")
    entries = problems.mapping(root.get("schedules"), root.line_of("schedules", 1), "`schedules`")
    for name in entries or {}:
        spec, line = problems.entry(entries, name, f"schedule {name}", NAME_RULE, SCHEDULE_KEYS)
        if spec is None:
            continue
        where = f"schedule {name}"
        cron = problems.text(spec, "cron", where, required=True, line=line)
        zone = problems.text(spec, "timezone", where) or root.get("timezone") or DBT_CLOUD_TIMEZONE
        select = problems.text(spec, "select", where, required=True, line=line)
        exclude = spec.get("exclude") or ""
        if cron is not None and not _valid(cron_expression, cron):
            problems.add(
                spec.line_of("cron"),
                f"{where}: `cron` {cron!r} is not a cron expression Dagster accepts (five fields: minute hour"
                " day-of-month month day-of-week, e.g. '0 6 * * 1-5', or @daily / @hourly)",
            )
            continue
        if not _valid(time_zone, str(zone)):
            problems.add(spec.line_of("timezone", line), f"{where}: `timezone` {zone!r} is not an IANA time zone")
            continue
        if cron is None or select is None:
            continue
        selection = DbtManifestAssetSelection.build(
            manifest, select=select, exclude=str(exclude), dagster_dbt_translator=translator
        )
        try:
            empty = not selection.resolve_inner(None, allow_missing=True)  # dbt's selector, on the manifest alone
        except Exception as exc:
            problems.add(spec.line_of("select"), f"{where}: dbt cannot read the selection {select!r}: {exc}")
            continue
        if empty:
            problems.add(spec.line_of("select"), f"{where}: the selection {select!r} names no node of the project")
            continue
        job_id = spec.get("dbt_cloud_job_id")
        job = dg.define_asset_job(
            name,
            selection=selection,
            description=f"Imported from dbt Cloud job {job_id} ({spec.get('dbt_cloud_job_name')}): {select}",
            tags={"pipeline/trigger": "schedule", "pipeline/dbt_cloud_job_id": str(job_id)},
        )
        jobs.append(job)
        schedules.append(
            dg.ScheduleDefinition(
                name=f"{name}_schedule",
                job=job,
                cron_schedule=cron,
                execution_timezone=str(zone),
                default_status=dg.DefaultScheduleStatus.STOPPED,
                description=f"dbt Cloud job {job_id}'s schedule `{cron}` ({zone}), imported from "
                f"{shown_path(path)}. Turn the job's schedule off in dbt Cloud before starting this one.",
            )
        )
    problems.raise_if_any("fix it, or import the jobs again: make dbt-cloud-import")
    return jobs, schedules


def report(imported: Sequence[ImportedJob]) -> list[str]:
    lines = []
    for item in imported:
        head = f"  job {item.job_id} {item.job_name!r} ({item.cron or 'no schedule'})"
        if item.schedule_name:
            on = "; its schedule is ON in dbt Cloud: turn it off there" if item.schedule_on else ""
            left = f" (left out: {', '.join(item.not_imported)})" if item.not_imported else ""
            lines.append(f"{head} -> {item.schedule_name}_schedule, {' + '.join(item.select)}{left}{on}")
        else:
            lines.append(f"{head} not imported: {'; '.join(item.reasons)}")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    from .cloud import dbt_cloud_workspace

    settings = Settings.from_env()
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.transformation.cloud_jobs", description=(__doc__ or "").split("\n")[0]
    )
    default = settings.dbt_cloud.schedules_path if settings.dbt_cloud else None
    parser.add_argument(
        "--output", type=Path, default=default, help="the YAML file (default: DBT_CLOUD_SCHEDULES_PATH)"
    )
    args = parser.parse_args(argv)
    cloud = settings.dbt_cloud
    if cloud is None:
        sys.stderr.write(
            "DBT_CLOUD_ACCOUNT_ID is not set: set the DBT_CLOUD_* settings of the account to import (.env), or"
            " import the local stand-in's jobs: `make dbt-cloud-import DBT_ENGINE=cloud` while"
            " `make dev DBT_ENGINE=cloud` runs.\n"
        )
        return 2
    workspace = dbt_cloud_workspace(cloud)
    sys.stdout.write(f"Listing the jobs of dbt Cloud account {cloud.account_id} at {cloud.url} ...\n")
    sys.stdout.flush()
    jobs = workspace.get_client().list_jobs(project_id=cloud.project_id, environment_id=cloud.environment_id)
    ours_name = cloud.job_name or get_dagster_adhoc_job_name(cloud.project_id, cloud.environment_id)
    ours = {j["id"] for j in jobs if j.get("name") == ours_name}
    imported = import_jobs(jobs, skip_job_ids=ours)
    source = f"dbt Cloud account {cloud.account_id}, project {cloud.project_id}, environment {cloud.environment_id}"
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(schedules_document(imported, source))
    count = sum(1 for i in imported if i.schedule_name)
    lines = [f"{len(jobs)} dbt Cloud jobs in {source}:", *report(imported)]
    lines.append(f"Wrote {count} schedules to {shown_path(args.output)} (stopped: start them in the UI, Automation).")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ConfigurationError, dg.Failure) as exc:  # a bad setting, or dbt Cloud's API refused or unreachable
        sys.stderr.write(f"{getattr(exc, 'description', None) or exc}\n")
        sys.exit(2)
