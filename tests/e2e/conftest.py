"""The e2e stack: `dagster dev` in its own process group on a fully temporary environment (instance, landing zone,
warehouse, local CRM and webhook receiver; see `devstack.dagster_dev`, which the end-to-end benchmark shares), a
GraphQL client for the UI's own endpoint, and Debian's Chromium driven by Playwright.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from devstack.dagster_dev import (
    ASSET_NODES_QUERY,
    VENV_BIN,
    GraphQL,
    StackError,
    dagster_dev,
    refuse_a_local_env_file,
    tail,
)
from pipeline.core.settings import REPO_ROOT

__all__ = ["ASSET_NODES_QUERY", "CRM_TOKEN", "DEMO_CUSTOMERS", "DEMO_DAYS", "SAVED", "Stack"]

#: Debian's package, installed by .ci/run; Playwright's own browser download (`playwright install`) is never used.
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
VIEWPORT = {"width": 2560, "height": 1200}

CRM_TOKEN = "e2e-token"
WEBHOOK_SECRET = "e2e-webhook-secret"
DEMO_DAYS = 3
DEMO_CUSTOMERS = 40

#: Screenshots and logs written by this session, listed at the end of the run.
SAVED: list[Path] = []


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


def generate_demo_data(landing: Path) -> date:
    """The demo as `make dev` writes it (its days end today), and its first day as `make dev` reads it back (the
    raw partitions start there)."""
    subprocess.run(
        [
            str(VENV_BIN / "python"),
            "-m",
            "devstack.demo_data",
            "--landing",
            str(landing),
            "--days",
            str(DEMO_DAYS),
            "--customers",
            str(DEMO_CUSTOMERS),
            "--no-progress",
        ],
        check=True,
        cwd=REPO_ROOT,
    )
    first_day = subprocess.run(
        [str(VENV_BIN / "python"), "-m", "devstack.demo_data", "--landing", str(landing), "--first-day"],
        check=True,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return date.fromisoformat(first_day)


@pytest.fixture(scope="module")
def stack(chromium: Path, artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("e2e")
    try:
        refuse_a_local_env_file()
    except StackError as exc:
        pytest.fail(f"{exc} Or deselect the test: make test PYTEST_ARGS='-m \"not e2e\"'.", pytrace=False)
    first_day = generate_demo_data(root / "landing")
    last_day = first_day + timedelta(days=DEMO_DAYS - 1)
    log = artifacts / "dagster-dev.log"
    SAVED.append(log)
    with ExitStack() as cleanup:
        try:
            dev = cleanup.enter_context(
                dagster_dev(root, log=log, first_day=first_day, crm_token=CRM_TOKEN, webhook_secret=WEBHOOK_SECRET)
            )
        except StackError as exc:
            pytest.fail(str(exc), pytrace=False)
        yield Stack(
            url=dev.url,
            gql=dev.gql,
            crm_url=dev.crm_url,
            hooks_url=dev.hooks_url,
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
