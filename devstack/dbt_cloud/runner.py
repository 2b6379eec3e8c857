"""The run workers: each run's steps really execute, as ``dbt`` subprocesses of the stand-in.

dbt Cloud lets one run of a job be in progress at a time: later triggers of the same job wait in the queue
(status 1) and start, oldest first, when the run ahead of them ends. Runs of different jobs run side by side, each
on its own thread. A run records dbt Cloud's usual preamble steps (no work is done for them; the faults hook in
there), then runs its dbt commands in the configured project with the configured profiles, each run with its own
target folder ``<data>/runs/<run_id>/target`` so artifacts never mix.

dbt reads ``DBT_ENV_CUSTOM_ENV_<NAME>`` variables into ``metadata.env.<NAME>`` of its artifacts; the workers set
dbt Cloud's ``DBT_CLOUD_RUN_ID``, ``DBT_CLOUD_JOB_ID`` and friends that way, which is how dagster-dbt ties
``run_results.json`` to a run.
"""

from __future__ import annotations

import logging
import os
import shlex
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from devstack.dbt_cloud.faults import FaultInjector
from devstack.dbt_cloud.store import Run, RunStatus, Workspace
from devstack.serve import stop_group

logger = logging.getLogger(__name__)

CLONE_STEP = "Clone git repository"
PROFILE_STEP = "Create profile from connection"
DEPS_STEP = "Invoke dbt deps"
PREAMBLE = (CLONE_STEP, PROFILE_STEP, DEPS_STEP)
CANCELLED_BY_USER = "Cancelled by a user in dbt Cloud."
# How long a cancelled dbt process gets to exit after SIGTERM before its process group is killed.
CANCEL_GRACE_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class DbtSetup:
    """Where the runs' dbt commands run: the dbt project, its profiles, and the folder for the runs' files."""

    project_dir: Path
    profiles_dir: Path
    data_dir: Path
    env: Mapping[str, str] | None = None  # over the server's own environment, e.g. DUCKDB_PATH in tests
    dbt: Path = Path(sys.executable).with_name("dbt")

    def run_dir(self, run_id: int) -> Path:
        return self.data_dir / "runs" / str(run_id)

    def target_dir(self, run_id: int) -> Path:
        return self.run_dir(run_id) / "target"


class RunWorkers:
    """Starts queued runs (one per job at a time), executes them, and stops them on cancel or shutdown."""

    def __init__(self, workspace: Workspace, faults: FaultInjector, setup: DbtSetup) -> None:
        self._workspace = workspace
        self._faults = faults
        self._setup = setup
        self._lock = threading.Lock()
        self._queues: dict[int, list[Run]] = {}
        self._active: dict[int, threading.Thread] = {}  # job id -> the thread of its run in progress
        self._stopping = False

    def submit(self, run: Run) -> None:
        with self._lock:
            self._queues.setdefault(run.job_definition_id, []).append(run)
            self._start_next(run.job_definition_id)

    def cancel(self, run: Run) -> None:
        """Mark the run cancelled now (as dbt Cloud answers); its worker stops the dbt process, if any."""
        if self._workspace.finish(run, RunStatus.CANCELLED, CANCELLED_BY_USER):
            logger.info("run %d cancelled", run.id)
        run.cancel_requested.set()

    def shutdown(self, timeout: float = 30.0) -> None:
        """Cancel every run not yet ended and wait for the workers, so no dbt process outlives the server."""
        with self._lock:
            self._stopping = True
            threads = list(self._active.values())
        for run in self._workspace.active_runs():
            if self._workspace.finish(run, RunStatus.CANCELLED, "Cancelled: the dbt Cloud stand-in stopped."):
                logger.info("run %d cancelled at shutdown", run.id)
            run.cancel_requested.set()
        for thread in threads:
            thread.join(timeout)

    def _start_next(self, job_id: int) -> None:
        """Start the oldest queued run of `job_id` if none of its runs is in progress (caller holds the lock)."""
        queue = self._queues.get(job_id, [])
        if self._stopping or job_id in self._active or not queue:
            return
        run = queue.pop(0)
        thread = threading.Thread(target=self._work, args=(run,), name=f"dbt-cloud-run-{run.id}", daemon=True)
        self._active[job_id] = thread
        thread.start()

    def _work(self, run: Run) -> None:
        try:
            self._execute(run)
        except Exception as exc:  # a bug here must not leave the job blocked forever
            logger.exception("run %d: the stand-in failed while running it", run.id)
            self._workspace.finish(run, RunStatus.ERROR, f"Internal error in the dbt Cloud stand-in: {exc!r}")
        finally:
            with self._lock:
                del self._active[run.job_definition_id]
                self._start_next(run.job_definition_id)

    def _execute(self, run: Run) -> None:
        workspace = self._workspace
        if not workspace.start(run):
            return  # cancelled while queued
        fail_preamble = self._faults.take("run_error")
        cancel_midway = self._faults.take("cancel_runs")
        for name in PREAMBLE:
            step = workspace.begin_step(run, name)
            if name == CLONE_STEP and fail_preamble:
                workspace.end_step(step, RunStatus.ERROR, "fatal: could not read from the remote repository.\n")
                workspace.finish(run, RunStatus.ERROR, f"Step '{name}' failed (devstack fault injection: run_error).")
                return
            if name == DEPS_STEP and (slow := self._faults.config.slow_seconds) > 0:
                # A cancel ends the wait at once, as it would end a real dependency install.
                run.cancel_requested.wait(slow)
            if run.cancel_requested.is_set():
                workspace.end_step(step, RunStatus.CANCELLED)
                return
            workspace.end_step(step, RunStatus.SUCCESS, f"{name}: done (devstack: no work to do).\n")
        if cancel_midway:
            workspace.finish(run, RunStatus.CANCELLED, f"{CANCELLED_BY_USER} (devstack fault injection: cancel_runs)")
            return
        for command in run.steps:
            step = workspace.begin_step(run, f"Invoke dbt with `{command}`")
            returncode, logs = self._invoke(run, command, step.index)
            if run.cancel_requested.is_set():
                workspace.end_step(step, RunStatus.CANCELLED, logs)
                workspace.finish(run, RunStatus.CANCELLED, CANCELLED_BY_USER, artifacts=self._has_artifacts(run))
                return
            if returncode != 0:
                workspace.end_step(step, RunStatus.ERROR, logs)
                workspace.finish(
                    run,
                    RunStatus.ERROR,
                    f"Step '{step.name}' failed: exit code {returncode}.",
                    artifacts=self._has_artifacts(run),
                )
                return
            workspace.end_step(step, RunStatus.SUCCESS, logs)
        workspace.finish(run, RunStatus.SUCCESS, None, artifacts=self._has_artifacts(run))

    def _invoke(self, run: Run, command: str, index: int) -> tuple[int, str]:
        """Run one dbt command; its exit code and its stdout+stderr."""
        try:
            args = shlex.split(command)
        except ValueError as exc:
            return 2, f"Could not parse the command {command!r}: {exc}\n"
        if not args or args[0] != "dbt":
            return 2, f"dbt Cloud runs dbt commands only (a step starts with `dbt`), got {command!r}\n"
        setup = self._setup
        run_dir = setup.run_dir(run.id)
        run_dir.mkdir(parents=True, exist_ok=True)
        log_file = run_dir / f"step-{index}.log"
        # DBT_TARGET_PATH rather than an appended --target-path: it is the same setting for the commands that have
        # it, and `dbt deps` / `dbt debug`, which reject the flag, ignore the variable.
        env = {
            **os.environ,
            **(setup.env or {}),
            "DBT_PROJECT_DIR": str(setup.project_dir),  # over any DBT_PROJECT_DIR of the server's environment
            "DBT_PROFILES_DIR": str(setup.profiles_dir),
            "DBT_TARGET_PATH": str(setup.target_dir(run.id)),
            "DBT_LOG_PATH": str(run_dir / "logs"),
            **_dbt_cloud_env(run),
        }
        self._workspace.count("dbt_invocations")
        logger.info("run %d: %s", run.id, command)
        with log_file.open("wb") as out:
            process = subprocess.Popen(
                [str(setup.dbt), *args[1:]],
                cwd=setup.project_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so a cancel stops dbt and whatever it started
            )
            while process.poll() is None:
                if run.cancel_requested.wait(0.1):
                    stop_group(process, grace=CANCEL_GRACE_SECONDS)
                    break
        return process.returncode, log_file.read_text(encoding="utf-8", errors="replace")

    def _has_artifacts(self, run: Run) -> bool:
        return self._setup.target_dir(run.id).is_dir()


def _dbt_cloud_env(run: Run) -> dict[str, str]:
    """dbt Cloud's run variables, plain and as ``DBT_ENV_CUSTOM_ENV_`` (which dbt copies into ``metadata.env``)."""
    values = {
        "DBT_CLOUD_ACCOUNT_ID": run.account_id,
        "DBT_CLOUD_PROJECT_ID": run.project_id,
        "DBT_CLOUD_ENVIRONMENT_ID": run.environment_id,
        "DBT_CLOUD_JOB_ID": run.job_definition_id,
        "DBT_CLOUD_RUN_ID": run.id,
        "DBT_CLOUD_RUN_REASON": run.cause,
        "DBT_CLOUD_RUN_REASON_CATEGORY": "other",
    }
    env = {name: str(value) for name, value in values.items()}
    return {**env, **{f"DBT_ENV_CUSTOM_ENV_{name}": value for name, value in env.items()}}
