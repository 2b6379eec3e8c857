"""The local instance's run launcher (devstack/dagster.yaml, `make dev`): Dagster's DefaultRunLauncher, plus a
health check of run workers, so Dagster's run monitoring notices a run whose process is gone.

A run whose worker dies holds its `warehouse` pool slot until the run is marked finished; only then does the
monitoring daemon free it (`free_slots_after_run_end_seconds`). Under `dagster dev` the code server that started
the worker marks the run failed as soon as the worker exits, but nothing marks it when the code server went with
it (the whole stack was killed, the machine restarted) or when nobody launched it through a code server (a
`dagster asset materialize` in a terminal): the DefaultRunLauncher cannot check a worker's health, so such a run
stays STARTED and keeps the slot for good. This launcher answers Dagster's `check_run_worker_health` for the local
machine: the worker is the process that wrote the run's RUN_START event (its pid is on the event), alive or not.
Run monitoring then fails a run whose worker is gone within one poll, and frees its slot after the configured
delay: the same path Dagster's Docker and Kubernetes launchers take with their containers.

Local only: the check looks for the pid on this machine, which is where `make dev` runs every worker. Production
keeps the DefaultRunLauncher (deploy/dagster.production.yaml), whose workers may live elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus

#: A process that started this long after the run's RUN_START event cannot be the run's worker: the pid was reused.
#: (The worker starts before it writes the event; the slack covers /proc's one-second boot time.)
PID_REUSE_SLACK_SECONDS = 2.0


def run_worker_pid(instance: dg.DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """The pid of the process that started executing the run, and when (its RUN_START event); None before that."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_START, limit=1).records
    if not records:
        return None
    entry = records[0].event_log_entry
    pid = entry.dagster_event.pid if entry.dagster_event else None
    return (pid, entry.timestamp) if pid else None


def process_started_at(pid: int) -> float | None:
    """When process `pid` started (epoch seconds), where /proc tells (Linux); None elsewhere or when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot_line = next(line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime "))
    except (OSError, StopIteration):
        return None
    # Field 22 (starttime, in clock ticks since boot); the fields after the command name, which may hold spaces.
    start_ticks = int(stat[stat.rindex(")") + 2 :].split()[19])
    return int(boot_line.split()[1]) + start_ticks / os.sysconf("SC_CLK_TCK")


def worker_alive(pid: int, run_started_at: float) -> bool:
    """Whether the process `pid` that started a run at `run_started_at` still runs (a reused pid does not count)."""
    try:
        os.kill(pid, 0)  # signal 0: existence and permission check only, nothing is sent
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    started = process_started_at(pid)
    return started is None or started <= run_started_at + PID_REUSE_SLACK_SECONDS


class LocalRunLauncher(dg.DefaultRunLauncher):
    """DefaultRunLauncher (runs start in the code server's process) whose run workers run monitoring can check."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return os.name == "posix"  # os.kill(pid, 0) checks existence on POSIX only (Windows would kill the process)

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        worker = run_worker_pid(self._instance, run.run_id)
        if worker is None:  # STARTED without a RUN_START event: nothing to check, so never fail the run on it
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no RUN_START event to find the worker by")
        pid, started_at = worker
        if worker_alive(pid, started_at):
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker pid {pid} is alive")
        return CheckRunHealthResult(
            WorkerStatus.NOT_FOUND,
            f"its run worker (pid {pid}) no longer exists: it was killed, ran out of memory, or stopped with the stack"
            " that ran it",
        )
