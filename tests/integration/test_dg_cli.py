"""Dagster's own command line works on the project: `dg check defs` and `dg list defs` ([tool.dg] in pyproject.toml)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.settings import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.once]

DG = Path(sys.executable).with_name("dg")


def run_dg(*args: str, home: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    venv = Path(sys.executable).parent.parent
    environ = {
        **os.environ,
        **env,
        "DAGSTER_HOME": str(home),
        "VIRTUAL_ENV": str(venv),  # the project's venv is the active one: dg says so otherwise
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "COLUMNS": "400",  # `dg list defs` draws a table as wide as the terminal
        "NO_COLOR": "1",
    }
    (home / "dagster.yaml").touch()
    return subprocess.run(
        [str(DG), *args], cwd=REPO_ROOT, env=environ, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture
def dg_env(tmp_path: Path, module_env: pytest.MonkeyPatch, demo_manifest: Path) -> dict[str, str]:
    return {"DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"), "LANDING_URL": str(tmp_path / "landing")}


def test_dg_check_defs_passes(tmp_path: Path, dg_env: dict[str, str]) -> None:
    result = run_dg("check", "defs", home=tmp_path, env=dg_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "All definitions loaded successfully" in result.stdout + result.stderr


def test_dg_check_defs_reports_a_bad_setting(tmp_path: Path, dg_env: dict[str, str]) -> None:
    result = run_dg("check", "defs", home=tmp_path, env={**dg_env, "CRM_BATCH_SIZE": "many"})
    assert result.returncode != 0
    assert "CRM_BATCH_SIZE" in result.stdout + result.stderr


def test_dg_list_defs_shows_the_whole_graph(tmp_path: Path, dg_env: dict[str, str]) -> None:
    result = run_dg("list", "defs", home=tmp_path, env=dg_env)
    assert result.returncode == 0, result.stdout + result.stderr
    listing = result.stdout
    # from the bucket to the CRM object, and what drives it
    for name in (
        "landing/shop",
        "raw/customers",
        "stg_shop__customers",
        "dim_customers",
        "crm_contacts_sync",
        "crm/contacts",
    ):
        assert name in listing, f"{name} missing from `dg list defs`:\n{listing[:3000]}"
    for name in ("daily_build_schedule", "landing_arrival_sensor", "freshness_checks_sensor"):
        assert name in listing
