"""Shared fixtures: a parsed dbt manifest, environments pointing the pipeline at temp resources."""

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipeline import fastpaths
from pipeline.core.settings import REPO_ROOT

DBT = str(Path(sys.executable).with_name("dbt"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test of a fast path itself runs only while the fast paths are on (CI runs the suite both ways)."""
    if fastpaths.enabled():
        return
    unverified = fastpaths.unverified_versions()
    why = (
        f"fast paths are off (PIPELINE_FAST_PATHS={fastpaths.fast_paths_mode()}"
        + (f"; unverified versions: {unverified}" if unverified else "")
        + ")"
    )
    for item in items:
        if item.get_closest_marker("fastpaths"):
            item.add_marker(pytest.mark.skip(reason=why))


def dbt_parse(project_dir: Path, profiles_dir: Path | None = None) -> Path:
    """`dbt parse`, which `make test` also runs: definitions need a manifest (prepare_if_dev parses only
    under `dagster dev`)."""
    subprocess.run(
        [
            DBT,
            "parse",
            "--quiet",
            "--project-dir",
            str(project_dir),
            "--profiles-dir",
            str(profiles_dir or project_dir),
        ],
        check=True,
        cwd=project_dir,
    )
    return project_dir / "target" / "manifest.json"


@pytest.fixture(scope="session")
def demo_manifest() -> Path:
    manifest = REPO_ROOT / "dbt_project" / "target" / "manifest.json"
    if not manifest.exists():
        dbt_parse(REPO_ROOT / "dbt_project")
    return manifest


@pytest.fixture(scope="module")
def module_env(tmp_path_factory) -> Iterator[pytest.MonkeyPatch]:
    """Environment for one test module; every setting the pipeline reads is set explicitly."""
    with pytest.MonkeyPatch.context() as mp:
        for name in (
            "LANDING_URL",
            "DUCKDB_PATH",
            "DBT_PROJECT_DIR",
            "DBT_PROFILES_DIR",
            "DBT_TARGET",
            "CRM_URL",
            "CRM_TOKEN",
            "SLACK_WEBHOOK_URL",
            "CRM_BATCH_SIZE",
            "WEBHOOK_URL",
            "WEBHOOK_SECRET",
            "SYNC_CONCURRENCY",
            "PIPELINE_TIMEZONE",
            "DAILY_BUILD_CRON",
            "RAW_FRESHNESS_DEADLINE_CRON",
            "MART_FRESHNESS_HOURS",
            "ALERT_WEBHOOK_URL",
            "ALERT_ROUTES",
            "DAGSTER_UI_BASE_URL",
            "DBT_PARTITION_INCREMENTAL",
        ):
            mp.delenv(name, raising=False)
        # Never the repository's .data/: each module keeps its dbt artifacts in its own temp folder.
        mp.setenv("DBT_ARTIFACTS_URL", str(tmp_path_factory.mktemp("dbt_artifacts")))
        yield mp
