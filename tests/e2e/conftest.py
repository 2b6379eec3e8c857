"""The e2e stack: `dagster dev` in its own process group on a fully temporary environment (instance, landing zone,
warehouse, local CRM and webhook receiver), a GraphQL client for the UI's own endpoint, and Debian's Chromium driven
by Playwright.

`dagster dev` may ignore SIGINT/SIGTERM (it does when started from a non-interactive background shell), so teardown
sends SIGTERM to its whole process group, waits briefly and then SIGKILLs the group; processes are never looked up
by name.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from dotenv import dotenv_values
from playwright.sync_api import Page, expect, sync_playwright

from devstack.serve import free_port, server_process
from pipeline.settings import REPO_ROOT

#: Debian's package, installed by .ci/run; Playwright's own browser download (`playwright install`) is never used.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
VIEWPORT = {"width": 2560, "height": 1200}

VENV_BIN = Path(sys.executable).parent
LOCATION = "analytics_pipeline"  # workspace.yaml
CRM_TOKEN = "e2e-token"
WEBHOOK_SECRET = "e2e-webhook-secret"
DEMO_DAYS = 3
DEMO_CUSTOMERS = 40

#: Screenshots and logs written by this session, listed at the end of the run.
SAVED: list[Path] = []

STARTUP_TIMEOUT = 300.0  # webserver up and code location loaded (`dbt parse` first when the manifest is stale)
#: What the test process may pass on to `dagster dev`; the settings the pipeline needs are set explicitly and the rest
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
class Stack:
    url: str
    gql: GraphQL
    crm_url: str
    hooks_url: str
    first_day: date
    last_day: date
    log: Path

    def log_tail(self, lines: int = 60) -> str:
        return tail(self.log, lines)


def tail(path: Path, lines: int) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[pytest.TestReport]:
    """Keep each phase's report on the item, so the `page` fixture can take a screenshot when the test failed."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SAVED:
        terminalreporter.section("e2e artifacts")
        for path in SAVED:
            terminalreporter.write_line(str(path))


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.fail(
            f"Chromium is missing: the e2e test drives Debian's {CHROMIUM}. Install it with"
            " `sudo apt-get update && sudo apt-get install -y chromium` (.ci/run does this in CI). Playwright's own"
            " browser download (`playwright install`) is not used. To run the other tests only: make test"
            " PYTEST_ARGS='-m \"not e2e\"'.",
            pytrace=False,
        )
    return CHROMIUM


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Screenshots and the `dagster dev` log: $E2E_ARTIFACTS_DIR, or tests/e2e/artifacts/ (ignored by git)."""
    path = Path(os.environ.get("E2E_ARTIFACTS_DIR") or Path(__file__).parent / "artifacts").resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def dev_env(root: Path, *, crm_url: str, hooks_url: str, ui_url: str, first_day: date) -> dict[str, str]:
    """What `make dev` sets (the Makefile's DEV_ENV), pointed at temporary resources."""
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
        CRM_TOKEN=CRM_TOKEN,
        WEBHOOK_URL=f"{hooks_url}/hooks",
        WEBHOOK_SECRET=WEBHOOK_SECRET,
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
        pytest.fail(
            f"{dotenv} sets {', '.join(names)}: `dagster dev` loads it over the e2e test's temporary environment."
            " Move it aside while the e2e test runs, or deselect the test: make test PYTEST_ARGS='-m \"not e2e\"'.",
            pytrace=False,
        )


def generate_demo_data(landing: Path, first_day: date) -> None:
    subprocess.run(
        [
            str(VENV_BIN / "python"),
            "-m",
            "pipeline.demo_data",
            "--landing",
            str(landing),
            "--days",
            str(DEMO_DAYS),
            "--customers",
            str(DEMO_CUSTOMERS),
            "--start",
            first_day.isoformat(),
            "--no-progress",
        ],
        check=True,
        cwd=REPO_ROOT,
    )


def wait_until_loaded(gql: GraphQL, url: str, process: subprocess.Popen, log: Path) -> None:
    """Poll until the webserver answers and the code location has loaded with its asset graph."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    state = "webserver not answering"
    while True:
        if process.poll() is not None:
            pytest.fail(f"dagster dev exited with {process.returncode} ({state}); {log}:\n{tail(log, 60)}")
        try:
            if httpx.get(f"{url}/server_info", timeout=5, trust_env=False).status_code == 200:
                workspace = gql(WORKSPACE_QUERY)["workspaceOrError"]
                entries = {e["name"]: e for e in workspace.get("locationEntries", [])}
                entry = entries.get(LOCATION)
                state = f"code location {LOCATION}: {entry['loadStatus'] if entry else 'not listed yet'}"
                if entry and entry["loadStatus"] == "LOADED":
                    location = entry["locationOrLoadError"] or {}
                    if location.get("__typename") == "PythonError":
                        pytest.fail(f"code location {LOCATION} failed to load:\n{location['message']}", pytrace=False)
                    if gql(ASSET_NODES_QUERY)["assetNodes"]:
                        return
                    state = f"code location {LOCATION} loaded without asset nodes"
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"dagster dev not ready after {STARTUP_TIMEOUT:.0f} s ({state}); {log}:\n{tail(log, 60)}")
        time.sleep(0.5)


def stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM the group (run workers, code server, daemon and webserver live in it), then SIGKILL what is left."""
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.fixture(scope="module")
def stack(chromium: Path, artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("e2e")
    # Three whole days ending yesterday (UTC): their daily partitions exist whatever the date.
    first_day = datetime.now(UTC).date() - timedelta(days=DEMO_DAYS)
    last_day = first_day + timedelta(days=DEMO_DAYS - 1)
    refuse_a_local_env_file()
    generate_demo_data(root / "landing", first_day)
    (root / "dagster_home").mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", root / "dagster_home" / "dagster.yaml")
    log = artifacts / "dagster-dev.log"
    SAVED.append(log)

    with ExitStack() as cleanup:
        crm_url = cleanup.enter_context(
            server_process("devstack.crm_server", "--db", str(root / "crm.sqlite"), "--token", CRM_TOKEN)
        )
        hooks_url = cleanup.enter_context(server_process("devstack.webhook_receiver", "--secret", WEBHOOK_SECRET))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = dev_env(root, crm_url=crm_url, hooks_url=hooks_url, ui_url=url, first_day=first_day)
        command = [str(VENV_BIN / "dagster"), "dev", "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"]
        with log.open("w") as log_file:
            process = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        cleanup.callback(stop_process_group, process)
        gql = GraphQL(url)
        cleanup.callback(gql.close)
        wait_until_loaded(gql, url, process, log)
        yield Stack(
            url=url,
            gql=gql,
            crm_url=crm_url,
            hooks_url=hooks_url,
            first_day=first_day,
            last_day=last_day,
            log=log,
        )


@pytest.fixture
def page(chromium: Path, artifacts: Path, request: pytest.FixtureRequest) -> Iterator[Page]:
    expect.set_options(timeout=60_000)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport=VIEWPORT).new_page()
            page.set_default_timeout(60_000)
            # The first visit to a new instance opens "Join the Dagster community"; skip it whenever it shows up.
            page.add_locator_handler(
                page.get_by_text("Join the Dagster community"),
                lambda: page.get_by_role("button", name="Skip").click(),
            )
            yield page
            call = getattr(request.node, "rep_call", None)
            if call is not None and call.failed:
                page.screenshot(path=artifacts / "failure.png")
                SAVED.append(artifacts / "failure.png")
        finally:
            browser.close()
