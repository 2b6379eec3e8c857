"""A fully temporary `make dev` stack for the browser test and the end-to-end benchmark: a Dagster instance with
devstack/dagster.yaml, the local CRM and webhook receiver (each in its own process group) and `dagster dev` on a
free port, all pointed at one temporary folder (landing zone, warehouse, dbt artifacts, CRM database).

`dagster dev` runs in its own process group; teardown sends it SIGINT (its own Ctrl-C handling), then SIGKILLs
what is left of the group (`stop_dagster_dev`); processes are never looked up by name.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import httpx
from dotenv import dotenv_values

from devstack import INSTANCE_YAML
from devstack.serve import free_port, server_process, stop_group
from pipeline.core.settings import REPO_ROOT

VENV_BIN = Path(sys.executable).parent
LOCATION = "analytics_pipeline"  # workspace.yaml
REPOSITORY = "__repository__"  # the name Dagster gives a code location's single Definitions
STARTUP_TIMEOUT = 300.0  # webserver up and code location loaded (`dbt parse` first when the manifest is stale)
#: Seconds `dagster dev` gets to shut down its webserver, daemon and code server after SIGINT before the rest of its
#: process group is killed (a clean shutdown takes 5-10 s on a loaded 2-core machine).
SHUTDOWN_GRACE = 20.0
#: What this process may pass on to `dagster dev`; the settings the pipeline needs are set explicitly and the rest
#: stay unset (SLACK_WEBHOOK_URL too: the Slack summary records `posted: 0`), so a developer's shell (a real CRM_URL,
#: Slack or alert webhook, proxies, ...) never reaches the temporary stack.
PASSED_THROUGH = ("HOME", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TZ", "USER", "LOGNAME")

WORKSPACE_QUERY = """
{
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries { name loadStatus locationOrLoadError { __typename ... on PythonError { message } } }
    }
    ... on PythonError { message }
  }
}
"""
ASSET_NODES_QUERY = "{ assetNodes { assetKey { path } dependencyKeys { path } } }"
SENSOR_STATUS_QUERY = """
query ($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status } }
    ... on PythonError { message }
  }
}
"""
START_SENSOR_MUTATION = """
mutation ($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status } }
    ... on PythonError { message }
  }
}
"""
LAUNCH_RUN_MUTATION = """
mutation ($params: ExecutionParams!) {
  launchPipelineExecution(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}
"""
RUN_STATUS_QUERY = """
query ($runId: ID!) { runOrError(runId: $runId) { __typename ... on Run { status } ... on PythonError { message } } }
"""
RUN_ENGINE_EVENTS_QUERY = """
query ($runId: ID!) {
  logsForRun(runId: $runId, limit: 100000) {
    __typename
    ... on EventConnection {
      events { __typename ... on EngineEvent { message metadataEntries { label ... on TextMetadataEntry { text } } } }
    }
    ... on PythonError { message }
  }
}
"""
#: A run's steps and materializations (the bench's timings, the tests' failure messages).
RUN_EVENTS_QUERY = """
query ($runId: ID!) {
  logsForRun(runId: $runId, limit: 100000) {
    __typename
    ... on EventConnection {
      events {
        __typename
        ... on ExecutionStepStartEvent { stepKey timestamp }
        ... on ExecutionStepSuccessEvent { stepKey timestamp }
        ... on ExecutionStepFailureEvent { stepKey timestamp error { message cause { message cause { message } } } }
        ... on MaterializationEvent { stepKey timestamp assetKey { path } }
      }
    }
  }
}
"""
POOL_QUERY = """
query ($pool: String!) {
  instance { concurrencyLimit(concurrencyKey: $pool) { claimedSlots { runId stepKey } pendingSteps { runId } } }
}
"""


class StackError(RuntimeError):
    """The temporary stack could not start (or a setting would leak into it); the message says why."""


class GraphQL:
    """POST /graphql on the running webserver; raises on transport errors and on GraphQL errors."""

    def __init__(self, base_url: str) -> None:
        # trust_env=False: a proxy configured in the environment must not intercept loopback requests.
        self._client = httpx.Client(base_url=base_url, timeout=30, trust_env=False)

    def __call__(self, query: str, **variables: Any) -> dict[str, Any]:
        response = self._client.post("/graphql", json={"query": query, "variables": variables})
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise AssertionError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def close(self) -> None:
        self._client.close()


@dataclass(frozen=True)
class DagsterDev:
    """A running temporary stack: the UI (and its GraphQL endpoint), the local CRM and webhook receiver."""

    url: str
    gql: GraphQL
    crm_url: str
    hooks_url: str
    root: Path
    log: Path
    process: subprocess.Popen

    @property
    def landing(self) -> Path:
        return self.root / "landing"

    def log_tail(self, lines: int = 60) -> str:
        return tail(self.log, lines)

    def ensure_sensor_running(self, name: str) -> None:
        """Start the sensor `name` through GraphQL unless it already runs (both of ours default to RUNNING)."""
        selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "sensorName": name}
        sensor = self.gql(SENSOR_STATUS_QUERY, selector=selector)["sensorOrError"]
        if sensor["__typename"] != "Sensor":
            raise StackError(f"sensor {name}: {sensor}")
        if sensor["sensorState"]["status"] == "RUNNING":
            return
        started = self.gql(START_SENSOR_MUTATION, selector=selector)["startSensor"]
        if started["__typename"] != "Sensor" or started["sensorState"]["status"] != "RUNNING":
            raise StackError(f"could not start sensor {name}: {started}")


def launch_assets(gql: GraphQL, *paths: Sequence[str], run_config: Mapping[str, Any] | None = None) -> str:
    """Launch one run of the assets at `paths` (as the UI's "Materialize selected" does, with the launchpad's
    `run_config` if given); returns its run id."""
    selector = {
        "repositoryLocationName": LOCATION,
        "repositoryName": REPOSITORY,
        "pipelineName": "__ASSET_JOB",
        "assetSelection": [{"path": list(path)} for path in paths],
    }
    params = {"selector": selector, "mode": "default", **({"runConfigData": run_config} if run_config else {})}
    launched = gql(LAUNCH_RUN_MUTATION, params=params)["launchPipelineExecution"]
    if launched["__typename"] != "LaunchRunSuccess":
        raise StackError(f"could not launch {paths}: {launched}")
    return launched["run"]["runId"]


def run_status(gql: GraphQL, run_id: str) -> str:
    """QUEUED, STARTING, STARTED, SUCCESS, FAILURE, CANCELED, ..."""
    run = gql(RUN_STATUS_QUERY, runId=run_id)["runOrError"]
    if run["__typename"] != "Run":
        raise StackError(f"run {run_id}: {run}")
    return run["status"]


def run_worker_pid(gql: GraphQL, run_id: str) -> int | None:
    """The pid of the run's worker process, from its "Started process for run" event (None before it starts)."""
    answer = gql(RUN_ENGINE_EVENTS_QUERY, runId=run_id)["logsForRun"]
    if answer["__typename"] != "EventConnection":
        raise StackError(f"logsForRun({run_id}): {answer}")
    for event in answer["events"]:
        if event["__typename"] == "EngineEvent" and event["message"].startswith("Started process for run"):
            return next(int(e["text"]) for e in event["metadataEntries"] if e["label"] == "pid")
    return None


def step_failures(gql: GraphQL, run_id: str) -> list[str]:
    """Each failed step of the run (retried attempts too) as `step: error`, with the error's causes, for an
    assertion message."""

    def messages(error: dict[str, Any] | None) -> str:
        chain = []
        while error:
            chain.append(error["message"].strip())
            error = error.get("cause")
        return "\n  ".join(chain)[:2000]

    events = gql(RUN_EVENTS_QUERY, runId=run_id)["logsForRun"].get("events", [])
    return [f"{e['stepKey']}: {messages(e['error'])}" for e in events if e["__typename"] == "ExecutionStepFailureEvent"]


def wait_for(what: str, condition: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    """Poll `condition` until it returns something truthy (returned); fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        time.sleep(interval)
    return result


def pool_claims(gql: GraphQL, pool: str) -> list[str]:
    """The ids of the runs holding a slot of `pool` (the UI's pool page)."""
    claims = gql(POOL_QUERY, pool=pool)["instance"]["concurrencyLimit"]["claimedSlots"]
    return [claim["runId"] for claim in claims]


def tail(path: Path, lines: int) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def dev_env(
    root: Path,
    *,
    crm_url: str,
    crm_token: str,
    hooks_url: str,
    webhook_secret: str,
    ui_url: str,
    first_day: date,
) -> dict[str, str]:
    """What `make dev` sets (the Makefile's DEV_ENV), pointed at temporary resources under `root`."""
    dbt_project_dir = os.environ.get("DBT_PROJECT_DIR") or str(REPO_ROOT / "dbt_project")
    env = {name: os.environ[name] for name in PASSED_THROUGH if name in os.environ}
    env.update(
        # The venv's bin first: dagster-dbt's prepare_if_dev() runs `dbt parse` through the `dbt` on PATH.
        PATH=os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", os.defpath)]),
        DAGSTER_HOME=str(root / "dagster_home"),
        DBT_PROJECT_DIR=dbt_project_dir,
        DBT_PROFILES_DIR=os.environ.get("DBT_PROFILES_DIR") or dbt_project_dir,
        LANDING_URL=str(root / "landing"),
        # The raw tables' partitions start with the demo's first day, so the demo range is always selectable.
        LANDING_START_DATE=first_day.isoformat(),
        # Named like the default: the parsed manifest's relation names carry the file's stem as the database
        # ("warehouse"."main"."dim_customers"), and the syncs read their model through that name.
        DUCKDB_PATH=str(root / "warehouse.duckdb"),
        DBT_ARTIFACTS_URL=str(root / "dbt_artifacts"),
        CRM_URL=crm_url,
        CRM_TOKEN=crm_token,
        WEBHOOK_URL=f"{hooks_url}/hooks",
        WEBHOOK_SECRET=webhook_secret,
        DAGSTER_UI_BASE_URL=ui_url,
        PYTHONUNBUFFERED="1",
    )
    return env


def refuse_a_local_env_file() -> None:
    """`dagster dev` loads .env from its working directory (the repository) over its environment: any setting there
    would reach the temporary stack, e.g. a real CRM, Slack or alert webhook, or a non-temporary warehouse."""
    dotenv = REPO_ROOT / ".env"
    if not dotenv.exists():
        return
    names = sorted(name for name, value in dotenv_values(dotenv).items() if value is not None)
    if names:
        raise StackError(
            f"{dotenv} sets {', '.join(names)}: `dagster dev` loads it over the temporary stack's environment."
            " Move it aside while the temporary stack runs."
        )


def wait_until_loaded(gql: GraphQL, url: str, process: subprocess.Popen, log: Path, timeout: float) -> None:
    """Poll until the webserver answers and the code location has loaded with its asset graph."""
    deadline = time.monotonic() + timeout
    state = "webserver not answering"
    while True:
        if process.poll() is not None:
            raise StackError(f"dagster dev exited with {process.returncode} ({state}); {log}:\n{tail(log, 60)}")
        try:
            if httpx.get(f"{url}/server_info", timeout=5, trust_env=False).status_code == 200:
                workspace = gql(WORKSPACE_QUERY)["workspaceOrError"]
                entries = {e["name"]: e for e in workspace.get("locationEntries", [])}
                entry = entries.get(LOCATION)
                state = f"code location {LOCATION}: {entry['loadStatus'] if entry else 'not listed yet'}"
                if entry and entry["loadStatus"] == "LOADED":
                    location = entry["locationOrLoadError"] or {}
                    if location.get("__typename") == "PythonError":
                        raise StackError(f"code location {LOCATION} failed to load:\n{location['message']}")
                    if gql(ASSET_NODES_QUERY)["assetNodes"]:
                        return
                    state = f"code location {LOCATION} loaded without asset nodes"
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise StackError(f"dagster dev not ready after {timeout:.0f} s ({state}); {log}:\n{tail(log, 60)}")
        time.sleep(0.5)


def dagster_dev_command(port: int, host: str = "127.0.0.1") -> list[str]:
    """`dagster dev` on `host`:`port` with the repository's workspace.yaml (run it in the repository root)."""
    return [str(VENV_BIN / "dagster"), "dev", "-h", host, "-p", str(port), "-w", "workspace.yaml"]


def stop_dagster_dev(process: subprocess.Popen, hurry: threading.Event | None = None) -> None:
    """Stop `dagster dev` and everything it started: SIGINT to `dagster dev` (its Ctrl-C: it stops its webserver and
    daemon and asks its code servers to stop once their runs finish), then, once it has exited or after
    SHUTDOWN_GRACE, SIGKILL to its whole process group. Run workers are not waited for: a run may take hours, and
    with the in-process executor an interrupted step that has a retry policy is retried, not stopped; a run killed
    here is one whose worker died (devstack.dev marks it canceled)."""
    stop_group(process, first_signal=signal.SIGINT, grace=SHUTDOWN_GRACE, hurry=hurry, leader_only=True)


@contextmanager
def dagster_dev(
    root: Path,
    *,
    log: Path,
    first_day: date,
    crm_token: str,
    webhook_secret: str,
    env: Mapping[str, str] | None = None,
    startup_timeout: float = STARTUP_TIMEOUT,
) -> Iterator[DagsterDev]:
    """Start the stack on `root` (its `landing/` may already hold files) and stop all of it afterwards.

    `env` adds to or overrides `dev_env` (e.g. LANDING_SENSOR_INTERVAL_SECONDS); `log` receives `dagster dev`'s
    output. Yields once the code location has loaded.
    """
    refuse_a_local_env_file()
    (root / "landing").mkdir(parents=True, exist_ok=True)
    (root / "dagster_home").mkdir(parents=True, exist_ok=True)
    shutil.copy(INSTANCE_YAML, root / "dagster_home" / "dagster.yaml")
    with ExitStack() as cleanup:
        crm_url = cleanup.enter_context(
            server_process("devstack.crm", "--db", str(root / "crm.sqlite"), "--token", crm_token)
        )
        hooks_url = cleanup.enter_context(server_process("devstack.webhook_receiver", "--secret", webhook_secret))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process_env = dev_env(
            root,
            crm_url=crm_url,
            crm_token=crm_token,
            hooks_url=hooks_url,
            webhook_secret=webhook_secret,
            ui_url=url,
            first_day=first_day,
        )
        process_env.update(env or {})
        with log.open("w") as log_file:
            process = subprocess.Popen(
                dagster_dev_command(port),
                cwd=REPO_ROOT,
                env=process_env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        cleanup.callback(stop_dagster_dev, process)
        gql = GraphQL(url)
        cleanup.callback(gql.close)
        wait_until_loaded(gql, url, process, log, startup_timeout)
        yield DagsterDev(url=url, gql=gql, crm_url=crm_url, hooks_url=hooks_url, root=root, log=log, process=process)
