"""The stand-in's state, in memory only (a restart starts from the seed again): the account, project and
environment it was started with, the jobs, and the runs with their steps.

`Workspace` holds it all behind one lock; the HTTP handlers read through it and the run workers
(`devstack.dbt_cloud.runner`) move runs through their states with `start`, `begin_step`, `end_step` and `finish`,
which never overwrite a run that has already ended (a cancel may land at any moment).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

DEFAULT_CRON = "0 6 * * *"
DEFAULT_EXECUTE_STEPS = ("dbt build",)


class RunStatus(IntEnum):
    """dbt Cloud's run (and run step) status codes."""

    QUEUED = 1
    STARTING = 2
    RUNNING = 3
    SUCCESS = 10
    ERROR = 20
    CANCELLED = 30

    @property
    def humanized(self) -> str:
        return self.name.capitalize()

    @property
    def is_complete(self) -> bool:
        return self >= RunStatus.SUCCESS


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def timestamp(value: dt.datetime | None) -> str | None:
    """dbt Cloud's timestamps: ``2026-12-03 02:10:11.123456+00:00``."""
    return None if value is None else str(value)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"


def _humanized(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} second{'' if seconds == 1 else 's'}"
    minutes = seconds // 60
    return f"{minutes} minute{'' if minutes == 1 else 's'}, {seconds % 60} seconds"


@dataclass(frozen=True, slots=True)
class Seed:
    """What the stand-in starts with: one account, project and environment (dbt Cloud ids)."""

    account_id: int = 1
    project_id: int = 1
    environment_id: int = 1
    account_name: str = "Devstack account"
    project_name: str = "Devstack project"
    environment_name: str = "Production"
    dbt_version: str = "latest"


@dataclass(slots=True)
class Job:
    id: int
    account_id: int
    project_id: int
    environment_id: int
    name: str
    description: str
    execute_steps: list[str]
    job_type: str
    cron: str
    schedule_enabled: bool
    created_at: dt.datetime
    threads: int = 4
    target_name: str = "default"
    state: int = 1  # 1 active, 2 deleted

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "account_id": self.account_id,
            "project_id": self.project_id,
            "environment_id": self.environment_id,
            "name": self.name,
            "description": self.description,
            "dbt_version": None,
            "execute_steps": list(self.execute_steps),
            "triggers": {
                "github_webhook": False,
                "git_provider_webhook": False,
                "schedule": self.schedule_enabled,
                "on_merge": False,
            },
            "schedule": {
                "cron": self.cron,
                "date": {"type": "custom_cron", "cron": self.cron, "days": None},
                "time": {"type": "every_hour", "interval": 1, "hours": None},
            },
            "settings": {"threads": self.threads, "target_name": self.target_name},
            "execution": {"timeout_seconds": 0},
            "state": self.state,
            "deactivated": self.state != 1,
            "job_type": self.job_type,
            "generate_docs": False,
            "run_generate_sources": False,
            "triggers_on_draft_pr": False,
            "created_at": timestamp(self.created_at),
            "updated_at": timestamp(self.created_at),
            "next_run": None,
        }


@dataclass(slots=True)
class RunStep:
    index: int
    name: str
    started_at: dt.datetime
    status: RunStatus = RunStatus.RUNNING
    logs: str = ""
    finished_at: dt.datetime | None = None

    def to_json(self, run: Run) -> dict[str, Any]:
        end = self.finished_at or utc_now()
        return {
            "id": run.id * 1000 + self.index,
            "run_id": run.id,
            "account_id": run.account_id,
            "index": self.index,
            "name": self.name,
            "status": int(self.status),
            "status_humanized": self.status.humanized,
            "logs": self.logs,
            "debug_logs": "",
            "started_at": timestamp(self.started_at),
            "finished_at": timestamp(self.finished_at),
            "duration": _clock((end - self.started_at).total_seconds()),
        }


@dataclass(slots=True)
class Run:
    id: int
    trigger_id: int
    account_id: int
    project_id: int
    environment_id: int
    job_definition_id: int
    cause: str
    steps_override: list[str] | None
    steps: list[str]  # the dbt commands to run: steps_override, else the job's execute_steps
    created_at: dt.datetime
    status: RunStatus = RunStatus.QUEUED
    status_message: str | None = None
    dequeued_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    run_steps: list[RunStep] = field(default_factory=list)
    artifacts_saved: bool = False
    cancel_requested: threading.Event = field(default_factory=threading.Event)

    def to_json(
        self, *, base_url: str, job: Job | None, include: Iterable[str] = (), now: dt.datetime | None = None
    ) -> dict[str, Any]:
        now = now or utc_now()
        include = set(include)
        end = self.finished_at or now
        queued_seconds = ((self.started_at or end) - self.created_at).total_seconds()
        run_seconds = (end - self.started_at).total_seconds() if self.started_at else 0.0
        duration = (end - self.created_at).total_seconds()
        return {
            "id": self.id,
            "trigger_id": self.trigger_id,
            "account_id": self.account_id,
            "environment_id": self.environment_id,
            "project_id": self.project_id,
            "job_definition_id": self.job_definition_id,
            "job_id": self.job_definition_id,
            "status": int(self.status),
            "status_humanized": self.status.humanized,
            "status_message": self.status_message,
            "dbt_version": "latest",
            "git_branch": None,
            "git_sha": None,
            "href": f"{base_url}/deploy/{self.account_id}/projects/{self.project_id}/runs/{self.id}",
            "created_at": timestamp(self.created_at),
            "updated_at": timestamp(self.finished_at or self.started_at or self.created_at),
            "dequeued_at": timestamp(self.dequeued_at),
            "started_at": timestamp(self.started_at),
            "finished_at": timestamp(self.finished_at),
            "last_checked_at": timestamp(now),
            "duration": _clock(duration),
            "queued_duration": _clock(queued_seconds),
            "run_duration": _clock(run_seconds),
            "duration_humanized": _humanized(duration),
            "queued_duration_humanized": _humanized(queued_seconds),
            "run_duration_humanized": _humanized(run_seconds),
            "in_progress": not self.status.is_complete,
            "is_complete": self.status.is_complete,
            "is_success": self.status == RunStatus.SUCCESS,
            "is_error": self.status == RunStatus.ERROR,
            "is_cancelled": self.status == RunStatus.CANCELLED,
            "is_running": self.status == RunStatus.RUNNING,
            "artifacts_saved": self.artifacts_saved,
            "has_docs_generated": False,
            "has_sources_generated": False,
            "trigger": self._trigger_json() if "trigger" in include else None,
            "job": job.to_json() if job is not None and "job" in include else None,
            "run_steps": [step.to_json(self) for step in self.run_steps] if "run_steps" in include else [],
        }

    def _trigger_json(self) -> dict[str, Any]:
        return {
            "id": self.trigger_id,
            "cause": self.cause,
            "cause_humanized": self.cause,
            "job_definition_id": self.job_definition_id,
            "git_branch": None,
            "git_sha": None,
            "schema_override": None,
            "threads_override": None,
            "target_name_override": None,
            "generate_docs_override": None,
            "steps_override": self.steps_override,
            "created_at": timestamp(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class RunFilter:
    """``GET runs`` query parameters, parsed (`None`: no filter)."""

    project_id: int | None = None
    environment_id: int | None = None
    job_definition_id: int | None = None
    statuses: frozenset[int] | None = None
    finished_between: tuple[dt.datetime, dt.datetime] | None = None

    def matches(self, run: Run) -> bool:
        if self.project_id is not None and run.project_id != self.project_id:
            return False
        if self.environment_id is not None and run.environment_id != self.environment_id:
            return False
        if self.job_definition_id is not None and run.job_definition_id != self.job_definition_id:
            return False
        if self.statuses is not None and int(run.status) not in self.statuses:
            return False
        if self.finished_between is not None:
            lower, upper = self.finished_between
            return run.finished_at is not None and lower <= run.finished_at <= upper
        return True


RUN_ORDERINGS = ("id", "created_at", "finished_at")


def _sort_key(field_name: str) -> Callable[[Run], tuple[Any, int]]:
    far_future = dt.datetime.max.replace(tzinfo=dt.UTC)

    def key(run: Run) -> tuple[Any, int]:
        if field_name == "id":
            return (run.id, run.id)
        value = getattr(run, field_name)
        return (value or far_future, run.id)  # runs not finished yet sort last, as they would finish last

    return key


class Workspace:
    """Account, project, environment, jobs and runs, safe to share between the event loop and the run workers."""

    def __init__(self, seed: Seed) -> None:
        self.seed = seed
        self.lock = threading.RLock()
        self._jobs: dict[int, Job] = {}
        self._runs: dict[int, Run] = {}
        self._next_job_id = 1
        self._next_run_id = 1
        self.counters: Counter[str] = Counter()

    # -- account, project, environment --

    def account_json(self) -> dict[str, Any]:
        seed = self.seed
        return {"id": seed.account_id, "name": seed.account_name, "state": 1, "plan": "enterprise", "run_slots": 5}

    def project_json(self, project_id: int) -> dict[str, Any] | None:
        seed = self.seed
        if project_id != seed.project_id:
            return None
        return {
            "id": seed.project_id,
            "name": seed.project_name,
            "account_id": seed.account_id,
            "dbt_project_subdirectory": None,
            "state": 1,
        }

    def environment_json(self, environment_id: int) -> dict[str, Any] | None:
        seed = self.seed
        if environment_id != seed.environment_id:
            return None
        return {
            "id": seed.environment_id,
            "name": seed.environment_name,
            "account_id": seed.account_id,
            "project_id": seed.project_id,
            "dbt_version": seed.dbt_version,
            "type": "deployment",
            "deployment_type": "production",
            "use_custom_branch": False,
            "custom_branch": None,
            "state": 1,
        }

    # -- jobs --

    def create_job(
        self,
        *,
        name: str,
        project_id: int | None = None,
        environment_id: int | None = None,
        description: str = "",
        execute_steps: Sequence[str] = DEFAULT_EXECUTE_STEPS,
        job_type: str = "other",
        cron: str = DEFAULT_CRON,
        schedule_enabled: bool = False,
    ) -> Job:
        with self.lock:
            job = Job(
                id=self._next_job_id,
                account_id=self.seed.account_id,
                project_id=self.seed.project_id if project_id is None else project_id,
                environment_id=self.seed.environment_id if environment_id is None else environment_id,
                name=name,
                description=description,
                execute_steps=list(execute_steps),
                job_type=job_type,
                cron=cron,
                schedule_enabled=schedule_enabled,
                created_at=utc_now(),
            )
            self._jobs[job.id] = job
            self._next_job_id += 1
        return job

    def job(self, job_id: int) -> Job | None:
        with self.lock:
            return self._jobs.get(job_id)

    def delete_job(self, job_id: int) -> Job | None:
        """Remove the job (its runs stay); dbt Cloud answers with the job in state 2 (deleted)."""
        with self.lock:
            job = self._jobs.pop(job_id, None)
            if job is not None:
                job.state = 2
        return job

    def jobs(self, *, project_id: int | None, environment_id: int | None) -> list[Job]:
        with self.lock:
            return [
                job
                for job in self._jobs.values()
                if (project_id is None or job.project_id == project_id)
                and (environment_id is None or job.environment_id == environment_id)
            ]

    # -- runs --

    def add_run(self, job: Job, *, cause: str, steps_override: Sequence[str] | None) -> Run:
        with self.lock:
            run = Run(
                id=self._next_run_id,
                trigger_id=self._next_run_id,
                account_id=job.account_id,
                project_id=job.project_id,
                environment_id=job.environment_id,
                job_definition_id=job.id,
                cause=cause,
                steps_override=list(steps_override) if steps_override else None,
                steps=list(steps_override or job.execute_steps),
                created_at=utc_now(),
            )
            self._runs[run.id] = run
            self._next_run_id += 1
            self.counters["runs_triggered"] += 1
        return run

    def run(self, run_id: int) -> Run | None:
        with self.lock:
            return self._runs.get(run_id)

    def runs(self, run_filter: RunFilter, *, order_by: str = "id") -> list[Run]:
        field_name = order_by.removeprefix("-")
        with self.lock:
            found = [run for run in self._runs.values() if run_filter.matches(run)]
        return sorted(found, key=_sort_key(field_name), reverse=order_by.startswith("-"))

    def active_runs(self) -> list[Run]:
        with self.lock:
            return [run for run in self._runs.values() if not run.status.is_complete]

    # -- run state transitions (the run workers) --

    def start(self, run: Run) -> bool:
        """Queued -> starting; False if the run was cancelled while it waited."""
        with self.lock:
            if run.status != RunStatus.QUEUED:
                return False
            run.status = RunStatus.STARTING
            run.dequeued_at = utc_now()
        return True

    def begin_step(self, run: Run, name: str) -> RunStep:
        with self.lock:
            now = utc_now()
            if run.status == RunStatus.STARTING:
                run.status, run.started_at = RunStatus.RUNNING, now
            step = RunStep(index=len(run.run_steps) + 1, name=name, started_at=now)
            run.run_steps.append(step)
        return step

    def end_step(self, step: RunStep, status: RunStatus, logs: str = "") -> None:
        with self.lock:
            step.status, step.logs, step.finished_at = status, logs, utc_now()

    def finish(self, run: Run, status: RunStatus, message: str | None = None, *, artifacts: bool = False) -> bool:
        """End the run, unless it already ended (a cancel got there first): then False."""
        with self.lock:
            if run.status.is_complete:
                run.artifacts_saved = run.artifacts_saved or artifacts
                return False
            run.status, run.status_message, run.finished_at = status, message, utc_now()
            run.artifacts_saved = artifacts
            for step in run.run_steps:
                if not step.status.is_complete:
                    step.status, step.finished_at = status, run.finished_at
            self.counters[f"runs_{status.name.lower()}"] += 1
        return True

    def count(self, name: str, amount: int = 1) -> None:
        with self.lock:
            self.counters[name] += amount

    def stats(self) -> dict[str, Any]:
        with self.lock:
            statuses = Counter(run.status.humanized.lower() for run in self._runs.values())
            return {
                "jobs": len(self._jobs),
                "runs": len(self._runs),
                "runs_by_status": dict(statuses),
                **self.counters,
            }


def seed_jobs(workspace: Workspace, jobs: Iterable[Mapping[str, Any]]) -> list[Job]:
    """Create the jobs of a ``--jobs`` file: a list of ``{name, execute_steps, cron, schedule_enabled}``."""
    created = []
    for index, spec in enumerate(jobs):
        if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
            raise ValueError(f"job #{index + 1}: expected a mapping with at least a `name`, got {spec!r}")
        steps = spec.get("execute_steps", list(DEFAULT_EXECUTE_STEPS))
        if not isinstance(steps, list) or not all(isinstance(step, str) for step in steps):
            raise ValueError(f"job {spec['name']!r}: execute_steps must be a list of strings like 'dbt build'")
        created.append(
            workspace.create_job(
                name=spec["name"],
                description=str(spec.get("description", "")),
                execute_steps=steps,
                job_type=str(spec.get("job_type", "scheduled")),
                cron=str(spec.get("cron", DEFAULT_CRON)),
                schedule_enabled=bool(spec.get("schedule_enabled", "cron" in spec)),
            )
        )
    return created
