"""The README's walkthrough in a real browser: open the lineage, see the graph run from the landing bucket to the CRM
object, press "Materialize all", pick the demo's landing dates and wait for the backfill to succeed.

Lineage is Dagster's "Global asset lineage" page, `/asset-groups`; `/asset-groups~<selection>/` shows a selection.
Screenshots (and the `dagster dev` log) go to tests/e2e/artifacts/ or $E2E_ARTIFACTS_DIR.
"""

from __future__ import annotations

import itertools
import math
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from playwright.sync_api import Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from devstack.dagster_dev import step_failures
from tests.e2e.conftest import ASSET_NODES_QUERY, CRM_TOKEN, DEMO_CUSTOMERS, DEMO_DAYS, SAVED, Stack

pytestmark = [pytest.mark.e2e, pytest.mark.once]

#: The cross-stack edges (parent, child), as asset key paths.
EDGES = [
    ("landing/shop", "raw/customers"),
    ("landing/billing", "raw/payments"),
    ("raw/customers", "stg_shop__customers"),
    ("stg_shop__customers", "dim_customers"),
    ("dim_customers", "crm_contacts_sync"),
    ("crm_contacts_sync", "crm/contacts"),
]
#: One path from the landing bucket to the CRM object; the graph labels a node with the last part of its key.
PATH = ["landing/shop", "raw/customers", "stg_shop__customers", "dim_customers", "crm_contacts_sync", "crm/contacts"]
GROUP_PATH = ["landing", "ingestion", "staging", "marts", "activation", "destinations"]
GROUPS = {*GROUP_PATH, "intermediate"}

BACKFILL_TIMEOUT = 15 * 60.0
ACTIVE_RUN_STATUSES = {"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING", "MANAGED"}

BACKFILLS_QUERY = """
{ partitionBackfillsOrError { __typename ... on PartitionBackfills { results { id status tags { key value } } } } }
"""
#: Tag of the backfills declarative automation emits (a backlog of several days); the UI's has none.
AUTOMATION_TAG = "dagster/from_automation_condition"
BACKFILL_QUERY = """
query ($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { id status runs(limit: 1000) { runId status jobName } }
    ... on PythonError { message }
  }
}
"""
RUNS_QUERY = "{ runsOrError { __typename ... on Runs { results { runId status jobName tags { key value } } } } }"

#: The asset graph as drawn, in the SVG's own coordinates: groups and asset nodes as boxes named by their label (its
#: data-tooltip; zoomed-out "minimal" asset nodes only show their text, maybe middle-truncated) and edges (paths with
#: an arrow head).
DRAWN_GRAPH_JS = """
() => {
  const box = (o) => ({
    name: o.querySelector("[data-tooltip]")?.getAttribute("data-tooltip") ?? (o.textContent.trim() || null),
    x: +o.getAttribute("x"), y: +o.getAttribute("y"), w: +o.getAttribute("width"), h: +o.getAttribute("height"),
  });
  const objects = [...document.querySelectorAll("[data-svg-viewport] svg foreignObject")];
  const groups = objects.filter((o) => o.classList.contains("group")).map(box);
  const nodes = objects.filter((o) => !o.classList.contains("group")).map(box);
  const edges = [...document.querySelectorAll("[data-svg-viewport] svg path[marker-end]")].map((p) => {
    const n = (p.getAttribute("d").match(/-?\\d+(?:\\.\\d+)?/g) || []).map(Number);
    return n.length >= 4 ? {start: [n[0], n[1]], end: [n[n.length - 2], n[n.length - 1]]} : null;
  }).filter(Boolean);
  return {groups, nodes, edges};
}
"""


def label(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def shoot(page: Page, path: Path) -> None:
    page.screenshot(path=path)
    SAVED.append(path)


def open_lineage(page: Page, url: str, selection: str | None = None, *, expand: bool = False) -> None:
    """Open the global asset lineage (or a selection of it), laid out to fit the viewport: groups collapsed (the
    default for a graph this size) or, with `expand`, every group expanded."""
    page.goto(f"{url}/asset-groups" + (f"~{quote(selection, safe='')}/" if selection else ""))
    materialize_all = page.get_by_role("button", name=re.compile(r"Materialize all"))
    expect(materialize_all).to_be_enabled()
    hide_navigation = page.get_by_role("button", name="Hide navigation")
    if hide_navigation.is_visible():  # more room for the graph
        hide_navigation.click()
    if expand:
        viewport = page.locator("[data-svg-viewport]")
        box = viewport.bounding_box()
        assert box is not None
        # The bottom left corner: the search bar overlays the top, the zoom controls sit bottom right.
        for attempt in range(3):
            viewport.click(button="right", position={"x": 20, "y": box["height"] - 20})
            try:
                page.get_by_role("menuitem", name="Expand all groups").click(timeout=15_000)
                break
            except PlaywrightTimeoutError:
                # The "Join the Dagster community" dialog can open over the menu; skipping it closes the menu too.
                if attempt == 2:
                    raise
        expect(page).to_have_url(re.compile(r"[?&]expanded="))
    # Loading the page again lays the graph out to fit the viewport as it is now.
    page.reload()
    expect(materialize_all).to_be_enabled()
    expect(page.locator("[data-svg-viewport] svg foreignObject").first).to_be_attached()


def drawn_graph(page: Page, kind: str, path: list[str], timeout: float = 60.0) -> dict[str, Any]:
    """Poll the drawing until the boxes of `kind` ("groups" or "nodes") named `path` are drawn with an edge between
    each two consecutive ones."""
    deadline = time.monotonic() + timeout
    while True:
        graph = page.evaluate(DRAWN_GRAPH_JS)
        boxes = [
            {**box, "name": next((name for name in path if shown_as(box["name"], name)), box["name"])}
            for box in graph[kind]
            if box["name"]
        ]
        drawn = {box["name"] for box in boxes}
        edges = drawn_edges(boxes, graph["edges"]) if boxes else set()
        missing = [name for name in path if name not in drawn]
        missing += [f"{a} -> {b}" for a, b in itertools.pairwise(path) if (a, b) not in edges]
        if not missing:
            return graph
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the lineage lacks {missing}; it draws {kind} {sorted(drawn)} and edges {sorted(edges)}"
            )
        page.wait_for_timeout(250)


def shown_as(label: str, name: str) -> bool:
    """Whether a drawn label shows `name`: in full, or middle-truncated as zoomed-out nodes are ("stg_sh…__orders")."""
    if "…" not in label:
        return label == name
    head, tail = label.split("…", 1)
    return len(name) > len(head) + len(tail) and name.startswith(head) and name.endswith(tail)


def drawn_edges(boxes: list[dict[str, Any]], edges: list[dict[str, Any]]) -> set[tuple[str, str]]:
    """Each drawn edge as (source, target): the boxes (groups or asset nodes) nearest its two ends."""

    def nearest(point: list[float]) -> str:
        def distance(box: dict[str, Any]) -> float:
            dx = max(box["x"] - point[0], 0, point[0] - box["x"] - box["w"])
            dy = max(box["y"] - point[1], 0, point[1] - box["y"] - box["h"])
            return math.hypot(dx, dy)

        return min(boxes, key=distance)["name"]

    return {(nearest(e["start"]), nearest(e["end"])) for e in edges}


def describe_failures(stack: Stack, runs: list[dict[str, Any]]) -> str:
    """Each run with its failed steps' errors, for an assertion message."""
    lines = []
    for run in runs:
        errors = step_failures(stack.gql, run["runId"])
        lines.append(f"run {run['runId']} ({run['jobName']}, {run['status']}): " + ("\n  ".join(errors) or "-"))
    return "\n".join(lines)


def wait_for_backfill(stack: Stack) -> tuple[str, dict[str, Any]]:
    """The one backfill the UI launched (automation may launch its own for a backlog), once it has finished."""
    deadline = time.monotonic() + BACKFILL_TIMEOUT
    backfill_id = None
    while True:
        if backfill_id is None:
            backfills = [
                b
                for b in stack.gql(BACKFILLS_QUERY)["partitionBackfillsOrError"]["results"]
                if AUTOMATION_TAG not in {t["key"] for t in b["tags"]}
            ]
            assert len(backfills) <= 1, f"expected one backfill launched from the UI, found {backfills}"
            backfill_id = backfills[0]["id"] if backfills else None
        if backfill_id is not None:
            backfill = stack.gql(BACKFILL_QUERY, id=backfill_id)["partitionBackfillOrError"]
            assert backfill["__typename"] == "PartitionBackfill", backfill
            if backfill["status"] not in {"REQUESTED", "CANCELING", "FAILING"}:
                return backfill_id, backfill
        if time.monotonic() > deadline:
            raise AssertionError(
                f"backfill {backfill_id} not finished after {BACKFILL_TIMEOUT:.0f} s; {stack.log}:\n{stack.log_tail()}"
            )
        time.sleep(2)


def wait_until_idle(stack: Stack, timeout: float = 300.0) -> list[dict[str, Any]]:
    """Every run once none is queued or in progress (the arrival sensor's runs for the demo files too)."""
    deadline = time.monotonic() + timeout
    while True:
        runs = stack.gql(RUNS_QUERY)["runsOrError"]["results"]
        active = [r for r in runs if r["status"] in ACTIVE_RUN_STATUSES]
        if not active:
            return runs
        if time.monotonic() > deadline:
            raise AssertionError(f"runs still active after {timeout:.0f} s: {active}")
        time.sleep(2)


@pytest.mark.timeout(1800)
def test_lineage_runs_from_the_bucket_to_the_crm_and_materialize_all_succeeds(
    stack: Stack, page: Page, artifacts: Path
) -> None:
    # The UI's own GraphQL endpoint holds the cross-stack edges.
    nodes = stack.gql(ASSET_NODES_QUERY)["assetNodes"]
    parents = {"/".join(n["assetKey"]["path"]): {"/".join(d["path"]) for d in n["dependencyKeys"]} for n in nodes}
    for parent, child in EDGES:
        assert parent in parents.get(child, set()), f"no edge {parent} -> {child} in the UI's asset graph"

    # Lineage: the whole graph by group, from the landing bucket to the destinations.
    open_lineage(page, stack.url)
    graph = drawn_graph(page, "groups", GROUP_PATH)
    groups = {g["name"] for g in graph["groups"]}
    assert groups >= GROUPS, f"the lineage shows groups {sorted(groups)}"
    shoot(page, artifacts / "lineage.png")

    # One path from the landing bucket to the CRM object, asset by asset.
    open_lineage(page, stack.url, " or ".join(f'key:"{key}"' for key in PATH), expand=True)
    drawn_graph(page, "nodes", [label(key) for key in PATH])
    shoot(page, artifacts / "lineage-landing-to-crm.png")

    # The README's click path, literally: "Materialize all"; the raw tables are daily-partitioned, so the UI asks
    # which landing dates; "All" picks the demo's days (make dev starts the partitions on its first day).
    page.goto(f"{stack.url}/asset-groups")
    page.get_by_role("button", name=re.compile(r"Materialize all")).click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("Partition selection")
    dialog.get_by_role("button", name="All", exact=True).click()
    expect(dialog.get_by_text(f"{DEMO_DAYS} partitions", exact=True)).to_be_visible()
    expect(dialog).not_to_contain_text("older partitions are outside this range")
    shoot(page, artifacts / "materialize-all.png")
    dialog.get_by_role("button", name="Launch backfill").click()
    expect(page.get_by_text("Created backfill")).to_be_visible()

    backfill_id, backfill = wait_for_backfill(stack)
    failed = [r for r in backfill["runs"] if r["status"] != "SUCCESS"]
    assert backfill["status"] == "COMPLETED_SUCCESS" and not failed, (
        f"backfill {backfill_id}: {backfill['status']}; see {stack.log}\n{describe_failures(stack, failed)}"
    )
    runs = wait_until_idle(stack)
    failed = [r for r in runs if r["status"] != "SUCCESS"]
    assert not failed, f"runs not successful; see {stack.log}\n{describe_failures(stack, failed)}"

    # The contacts reached the local CRM, the segments the signed webhook.
    stats = httpx.get(
        f"{stack.crm_url}/_devstack/stats", headers={"Authorization": f"Bearer {CRM_TOKEN}"}, trust_env=False
    ).json()
    assert stats["contacts"] >= DEMO_CUSTOMERS, stats
    received = httpx.get(f"{stack.hooks_url}/_devstack/received", trust_env=False).json()
    assert any(r["path"] == "/hooks/segments" for r in received), [r["path"] for r in received]

    # The backfill's page in the UI, tall enough for every asset's row.
    page.set_viewport_size({"width": 2560, "height": 2400})
    page.goto(f"{stack.url}/runs/b/{backfill_id}")
    expect(page.get_by_text(f"{stack.first_day.isoformat()}...{stack.last_day.isoformat()}")).to_be_visible()
    expect(page.get_by_text("Succeeded").first).to_be_visible()
    shoot(page, artifacts / "backfill.png")
