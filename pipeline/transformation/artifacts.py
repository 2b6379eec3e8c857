"""Every dbt invocation's artifacts, kept: `manifest.json` and `run_results.json` per run and attempt.

    <DBT_ARTIFACTS_URL>/runs/<run id>/<step>/attempt-<n>/manifest.json, run_results.json
    <DBT_ARTIFACTS_URL>/latest/manifest.json, run_results.json      the last successful build: slim CI's --state

`DBT_ARTIFACTS_URL` is a local folder (default `.data/dbt_artifacts`) or an `s3://bucket/prefix` (same endpoint and
credentials as the landing bucket). They serve three purposes: an audit trail of what each run built, the
`run_results.json` a retried step reads to rebuild only what failed, and the production manifest a CI job
downloads to build only what a pull request changed:

    dbt build --select state:modified+ --defer --state <folder holding latest/manifest.json>

Once they are kept there, the invocation's own target folder (dagster-dbt gives each dbt invocation one under the
project's `target/`: artifacts, compiled SQL, the debug log, a copy of the partial-parse file; ~3 MB per invocation
of a 100-model project) has served its purpose and is removed (`remove_invocation_folder`), so `target/` stays
bounded. Nothing later reads it: a retry reads the attempt's run_results.json from the store, and partial parsing
starts from the project's own `target/partial_parse.msgpack`, which dagster-dbt copies into each new folder and
which is never touched here. A failed invocation's folder is kept for a while (its dbt.log is what the error
message points to), then swept (`sweep_invocation_folders`), with those a killed run left behind.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.objectstore import LandingStore, open_landing_store

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


#: dagster-dbt's name for an invocation's target folder: `<op>-<run id[:7]>-<7 hex>`, or `<7 hex>` without a context
INVOCATION_FOLDER = re.compile(r"(?:\w+-[0-9a-f]{7}-)?[0-9a-f]{7}")
#: how long a failed invocation's folder (and one a killed run left) stays for a look at its dbt.log
KEEP_FAILED_SECONDS = 3 * 24 * 3600


def is_invocation_folder(path: Path) -> bool:
    """Whether `path` is a per-invocation folder dagster-dbt made under a target folder (never anything else)."""
    return INVOCATION_FOLDER.fullmatch(path.name) is not None


def remove_invocation_folder(target_path: Path) -> bool:
    """Remove one invocation's target folder once its artifacts are kept; False when it is not one of dagster-dbt's
    (an explicit target path is left alone)."""
    if not is_invocation_folder(target_path) or not target_path.is_dir():
        return False
    shutil.rmtree(target_path, ignore_errors=True)
    return True


def sweep_invocation_folders(target_dir: Path, *, keep_seconds: float = KEEP_FAILED_SECONDS) -> list[str]:
    """Remove invocation folders under `target_dir` untouched for `keep_seconds` (failed invocations' folders, kept
    for their dbt.log, and those of runs killed before cleaning up). Returns the names removed."""
    cutoff = time.time() - keep_seconds
    removed = []
    for folder in sorted(target_dir.iterdir()) if target_dir.is_dir() else []:
        try:
            stale = folder.is_dir() and is_invocation_folder(folder) and folder.stat().st_mtime < cutoff
        except OSError:  # removed meanwhile by another run's sweep
            continue
        if stale:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return removed


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
