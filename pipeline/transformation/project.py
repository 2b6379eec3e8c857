"""The dbt project this code location runs: ours by default, any dbt-duckdb project through DBT_PROJECT_DIR."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from dagster_dbt import DbtCliResource, DbtProject

from ..settings import Settings


def dbt_project(settings: Settings) -> DbtProject:
    """The project, its profile and target.

    Under `dagster dev` the manifest is re-parsed when a project file changed since the last parse, like
    `prepare_if_dev()` but only when stale: every run worker and step process of `dagster dev` loads this
    code location with the dev flag set, and an unconditional `dbt parse` (~20 s here) there would dominate
    every run. Elsewhere `make dev` / `make test` / CI parse first, since a manifest must exist to build assets.
    """
    project = DbtProject(
        project_dir=settings.dbt_project_dir,
        profiles_dir=settings.dbt_profiles_dir,
        target=settings.dbt_target,
    )
    if project.preparer.using_dagster_dev() and manifest_is_stale(project.project_dir, project.manifest_path):
        project.preparer.prepare(project)
    if not project.manifest_path.exists():
        raise FileNotFoundError(
            f"No dbt manifest at {project.manifest_path}. Run `dbt parse` in {project.project_dir} "
            "(`make dev` and `make test` do it for you)."
        )
    return project


#: Folders dbt writes or installs into; changes there do not make the manifest stale.
_GENERATED = {"target", "logs", "dbt_packages", ".venv"}


def manifest_is_stale(project_dir: Path, manifest_path: Path) -> bool:
    """True when the manifest is missing or older than any source file of the project."""
    if not manifest_path.exists():
        return True
    parsed_at = manifest_path.stat().st_mtime
    for root, dirs, files in os.walk(project_dir):
        dirs[:] = [d for d in dirs if d not in _GENERATED and not d.startswith(".")]
        for name in files:
            if name.endswith((".sql", ".yml", ".yaml", ".csv", ".py", ".md")) and (
                os.stat(os.path.join(root, name)).st_mtime > parsed_at
            ):
                return True
    return False


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
