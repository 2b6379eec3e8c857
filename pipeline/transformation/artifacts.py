"""Every dbt invocation's artifacts, kept: `manifest.json` and `run_results.json` per run and attempt.

    <DBT_ARTIFACTS_URL>/runs/<run id>/<step>/attempt-<n>/manifest.json, run_results.json
    <DBT_ARTIFACTS_URL>/latest/manifest.json, run_results.json      the last successful build: slim CI's --state

`DBT_ARTIFACTS_URL` is a local folder (default `.data/dbt_artifacts`) or an `s3://bucket/prefix` (same endpoint and
credentials as the landing bucket). They serve three purposes: an audit trail of what each run built, the
`run_results.json` a retried step reads to rebuild only what failed, and the production manifest a CI job
downloads to build only what a pull request changed:

    dbt build --select state:modified+ --defer --state <folder holding latest/manifest.json>
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..ingestion.landing import LandingStore, open_landing_store

ARTIFACTS = ("manifest.json", "run_results.json")
LATEST = "latest"
#: run_results statuses of nodes a retry must run again (errors, failed tests, and what they caused to be skipped)
UNFINISHED = {"error", "fail", "runtime error", "skipped"}


def attempt_prefix(run_id: str, step: str, attempt: int) -> str:
    return f"runs/{run_id}/{step}/attempt-{attempt}/"


@dataclass
class ArtifactStore:
    store: LandingStore

    @classmethod
    def open(cls, url: str, endpoint_url: str | None = None, region: str | None = None) -> ArtifactStore:
        return cls(open_landing_store(url, endpoint_url=endpoint_url, region=region))

    @property
    def url(self) -> str:
        return self.store.url

    def save(self, run_id: str, step: str, attempt: int, target_path: Path, *, succeeded: bool) -> list[str]:
        """Copy the invocation's artifacts under its run and attempt; a successful build also becomes `latest/`."""
        saved = []
        for name in ARTIFACTS:
            source = target_path / name
            if not source.exists():
                continue  # dbt died before writing it
            text = source.read_text(encoding="utf-8")
            self.store.put_text(attempt_prefix(run_id, step, attempt) + name, text)
            saved.append(attempt_prefix(run_id, step, attempt) + name)
            if succeeded:
                self.store.put_text(f"{LATEST}/{name}", text)
        return saved

    def load(self, key: str) -> dict[str, Any] | None:
        if self.store.head(key) is None:
            return None
        with self.store.local_path(key) as path:
            return json.loads(path.read_text(encoding="utf-8"))

    def run_results(self, run_id: str, step: str, attempt: int) -> dict[str, Any] | None:
        return self.load(attempt_prefix(run_id, step, attempt) + "run_results.json")


def unfinished_nodes(run_results: dict[str, Any]) -> list[str]:
    """unique_ids of the nodes an invocation did not finish: what `dbt retry` would run again."""
    return sorted(r["unique_id"] for r in run_results.get("results", []) if r.get("status") in UNFINISHED)


def summary(run_results: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
    """Per-invocation figures for metadata: counts by status, tests passed / failed, the slowest models."""
    by_status: dict[str, int] = {}
    tests = {"passed": 0, "failed": 0, "warned": 0}
    timings = []
    for result in run_results.get("results", []):
        status = result.get("status", "unknown")
        by_status[status] = by_status.get(status, 0) + 1
        unique_id = result.get("unique_id", "")
        if unique_id.startswith(("test.", "unit_test.")):
            tests["passed" if status == "pass" else "failed" if status in ("fail", "error") else "warned"] += 1
        elif unique_id in manifest.get("nodes", {}):
            timings.append((round(float(result.get("execution_time") or 0.0), 3), manifest["nodes"][unique_id]["name"]))
    timings.sort(reverse=True)
    return {
        "elapsed_seconds": round(float(run_results.get("elapsed_time") or 0.0), 3),
        "by_status": by_status,
        "tests": tests,
        "slowest": [{"node": name, "seconds": seconds} for seconds, name in timings[:10]],
    }
