"""`make dev`: the local CRM, the local webhook receiver (with DBT_ENGINE=cloud, the dbt Cloud stand-in too) and
`dagster dev`, started together and stopped together by one Ctrl-C, runs in progress included.

Each runs in its own process group, so a Ctrl-C in the terminal reaches only this process, which then stops them in
order: first `dagster dev` and everything it started (`devstack.dagster_dev.stop_dagster_dev`: SIGINT to `dagster
dev`, then SIGKILL to its process group once it has exited), then the servers. Left to the terminal, the Ctrl-C
reached every process at once: `dagster dev` shut down its webserver and daemon and exited and the prompt came
back, but a run worker turned the interrupt into a retry of its step (the in-process executor honours retry
policies on interrupts) and went on for minutes, its code server waiting for it, and the run stayed STARTED.

A run the stopped stack was running cannot finish any more; it is marked canceled and its pool slots freed
(`end_runs_of_stopped_stack`), so the next `make dev` starts with a free `warehouse` slot instead of a run that
looks alive forever. A run some other process is running on the same instance (a `dagster asset materialize` in
another terminal) is left alone. A second Ctrl-C skips the grace period.

The settings come from the environment (the Makefile exports them: DAGSTER_HOME, CRM_TOKEN, WEBHOOK_SECRET, ...).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from devstack.dagster_dev import dagster_dev_command, stop_dagster_dev
from devstack.serve import configure_logging, free_port, port_in_use, server_process
from pipeline.core.settings import REPO_ROOT

logger = logging.getLogger("devstack.dev")
#: the dbt Cloud jobs the stand-in starts with under `make dev DBT_ENGINE=cloud`
DEMO_DBT_CLOUD_JOBS = Path(__file__).with_name("dbt_cloud_jobs.yaml")

#: A stop request: SIGINT (Ctrl-C), SIGTERM (a service manager, `kill`), SIGHUP (the terminal closed; `dagster dev`
#: sits in its own session, so the terminal's hangup would not reach it).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: Run statuses of a run whose worker may be (or be about to be) running.
ACTIVE = ("STARTING", "STARTED", "CANCELING")
STOPPED_MESSAGE = (
    "`make dev` was stopped (Ctrl-C) while this run was active, and its run worker with it: what the run had not"
    " built yet was not built."
)


def end_runs_of_stopped_stack(home: Path) -> list[str]:
    """Mark canceled every run of the instance in `home` still starting, started or canceling whose worker is gone,
    and free its pool slots; returns their ids. Call it once the stack's processes are gone: none of its runs can
    still be running then, and the slot need not wait for run monitoring (`free_slots_after_run_end_seconds`)."""
    import dagster as dg  # the instance, not the stack, needs Dagster: imported only at shutdown

    from pipeline.run_launcher import run_worker_pid, worker_alive

    ended = []
    with dg.DagsterInstance.from_config(str(home)) as instance:
        statuses = [dg.DagsterRunStatus[status] for status in ACTIVE]
        for record in instance.get_run_records(dg.RunsFilter(statuses=statuses)):
            run = record.dagster_run
            worker = run_worker_pid(instance, run.run_id)
            if worker and worker_alive(*worker):
                continue  # another process runs it, on this instance but not in this stack
            instance.report_run_canceled(run, message=STOPPED_MESSAGE)
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            ended.append(run.run_id)
    return ended


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="The local CRM, webhook receiver and `dagster dev` (`make dev`).")
    parser.add_argument("--crm-port", type=int, required=True)
    parser.add_argument("--webhook-port", type=int, required=True)
    parser.add_argument("--dagster-port", type=int, required=True)
    parser.add_argument("--data", type=Path, required=True, help="folder for the CRM database and the webhook log")
    parser.add_argument(
        "--dbt-cloud-port", type=int, default=None, help="also start the dbt Cloud stand-in here (DBT_ENGINE=cloud)"
    )
    args = parser.parse_args(argv)
    if not os.environ.get("DAGSTER_HOME"):
        parser.error("DAGSTER_HOME is not set: run `make dev`, which sets it and the other settings")
    args.home = Path(os.environ["DAGSTER_HOME"])
    return args


def run_stack(args: argparse.Namespace, stop: threading.Event, hurry: threading.Event) -> None:
    """Start the servers and `dagster dev`, wait for `stop` (or for `dagster dev` to exit by itself), then stop them
    all."""
    with ExitStack() as stack:
        crm = stack.enter_context(
            server_process("devstack.crm", "--db", str(args.data / "crm.sqlite"), port=args.crm_port, log_level="info")
        )
        hooks = stack.enter_context(
            server_process(
                "devstack.webhook_receiver",
                "--log",
                str(args.data / "webhooks.jsonl"),
                port=args.webhook_port,
                log_level="info",
            )
        )
        if args.dbt_cloud_port:
            # The dbt Cloud stand-in runs the same project with dbt Core, on the same warehouse (DUCKDB_PATH passes
            # through to its dbt runs), and has two scheduled jobs for `make dbt-cloud-import`.
            project = os.environ.get("DBT_PROJECT_DIR", str(REPO_ROOT / "dbt_project"))
            cloud = stack.enter_context(
                server_process(
                    "devstack.dbt_cloud",
                    "--project-dir",
                    project,
                    "--profiles-dir",
                    os.environ.get("DBT_PROFILES_DIR", project),
                    "--data",
                    str(args.data / "dbt_cloud"),
                    "--jobs",
                    str(DEMO_DBT_CLOUD_JOBS),
                    port=args.dbt_cloud_port,
                    log_level="info",
                )
            )
            logger.info("dbt Cloud stand-in on %s: dbt runs there (DBT_ENGINE=cloud)", cloud)
        dagster = subprocess.Popen(
            dagster_dev_command(args.dagster_port), cwd=REPO_ROOT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        # On the way out (last registered first): stop dagster dev and its process group, then end its runs.
        stack.callback(end_runs, args.home)
        stack.callback(stop_dagster_dev, dagster, hurry)
        logger.info(
            "Local CRM on %s; webhooks to %s/hooks; Dagster UI on http://127.0.0.1:%d (one Ctrl-C stops all %s)",
            crm,
            hooks,
            args.dagster_port,
            "four" if args.dbt_cloud_port else "three",
        )
        logger.info(
            "Landing folder %s; raw partitions from LANDING_START_DATE=%s (a file for an earlier day is set aside:"
            " start with an earlier LANDING_START_DATE to load it)",
            os.environ.get("LANDING_URL", "(default)"),
            os.environ.get("LANDING_START_DATE") or "(default)",
        )
        while not stop.wait(0.5):
            if dagster.poll() is not None:
                logger.error("dagster dev exited with %s; stopping the rest", dagster.returncode)
                break
        logger.info("Stopping dagster dev and its runs (Ctrl-C again to kill them at once) ...")


def end_runs(home: Path) -> None:
    """`end_runs_of_stopped_stack`, reported; a failure is reported too, and the servers still stop (the next
    start's run monitoring then fails the runs instead)."""
    try:
        ended = end_runs_of_stopped_stack(home)
    except Exception as exc:
        logger.error("Could not mark the stack's unfinished runs canceled: %s: %s", type(exc).__name__, exc)
        return
    for run_id in ended:
        logger.info("Run %s was still active: marked canceled, its pool slots freed", run_id)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("warning")  # Dagster's and alembic's INFO lines when the instance opens at shutdown: noise
    logger.setLevel(logging.INFO)
    busy = [
        f"{name}={port}"
        for name, port in (
            ("CRM_PORT", args.crm_port),
            ("WEBHOOK_PORT", args.webhook_port),
            ("DAGSTER_PORT", args.dagster_port),
            ("DBT_CLOUD_PORT", args.dbt_cloud_port),
        )
        if port and port_in_use(port)
    ]
    if busy:  # before anything starts: another `make dev` (or another server) holds them
        logger.error(
            "Already in use: %s (another `make dev`?). Stop it, or set another port (in .env or on the make command"
            " line, e.g. `make dev %s`).",
            ", ".join(busy),
            " ".join(f"{item.split('=')[0]}={free_port()}" for item in busy),
        )
        return 1
    args.data.mkdir(parents=True, exist_ok=True)
    stop, hurry = threading.Event(), threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        (hurry if stop.is_set() else stop).set()

    for signum in STOP_SIGNALS:
        signal.signal(signum, on_signal)
    try:
        run_stack(args, stop, hurry)
    except (RuntimeError, TimeoutError) as exc:  # a server that could not start, e.g. on a port in use
        ports = "CRM_PORT, WEBHOOK_PORT, DAGSTER_PORT" + (" or DBT_CLOUD_PORT" if args.dbt_cloud_port else "")
        logger.error("%s. Another port: set %s (in .env or on the make command line).", exc, ports)
        return 1
    logger.info("Stopped.")
    return 0 if stop.is_set() else 1


if __name__ == "__main__":
    raise SystemExit(main())
