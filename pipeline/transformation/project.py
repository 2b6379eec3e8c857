"""The dbt project this code location runs: ours by default, any dbt-duckdb project through DBT_PROJECT_DIR."""

from __future__ import annotations

import sys
from pathlib import Path

from dagster_dbt import DbtCliResource, DbtProject

from ..settings import Settings


def dbt_project(settings: Settings) -> DbtProject:
    """The project, its profile and target. Under `dagster dev` the manifest is (re)parsed on load;
    elsewhere `make dev` / `make test` / CI run `dbt parse` first, since a manifest must exist to build assets.
    """
    project = DbtProject(
        project_dir=settings.dbt_project_dir,
        profiles_dir=settings.dbt_profiles_dir,
        target=settings.dbt_target,
    )
    project.prepare_if_dev()
    if not project.manifest_path.exists():
        raise FileNotFoundError(
            f"No dbt manifest at {project.manifest_path}. Run `dbt parse` in {project.project_dir} "
            "(`make dev` and `make test` do it for you)."
        )
    return project


def dbt_executable() -> str:
    """The dbt installed beside this interpreter, so a venv works without being activated."""
    beside = Path(sys.executable).with_name("dbt")
    return str(beside) if beside.exists() else "dbt"


def dbt_resource(project: DbtProject) -> DbtCliResource:
    return DbtCliResource(
        dbt_executable=dbt_executable(),
        project_dir=project,
        profiles_dir=str(project.profiles_dir) if project.profiles_dir else None,
        target=project.target,
    )
