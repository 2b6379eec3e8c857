"""The dbt project this code location runs: ours by default, any dbt-duckdb project through DBT_PROJECT_DIR."""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

from dagster_dbt import DbtCliInvocation, DbtCliResource, DbtProject

from ..core.settings import Settings
from ..fastpaths import enabled as fast_paths_enabled
from ..fastpaths.dagster_dbt import FastStartDbtCliResource
from .dbt_launcher import ARGUMENT_PLACEHOLDER, ARGUMENTS_FILE, COUNT_ROWS, SEEDS_BEFORE_SOURCES

logger = logging.getLogger(__name__)


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
        prepare(project)
    if not project.manifest_path.exists():
        raise FileNotFoundError(
            f"No dbt manifest at {project.manifest_path}. Run `dbt parse` in {project.project_dir} "
            "(`make dev` and `make test` do it for you)."
        )
    return project


def prepare(project: DbtProject) -> None:
    """Parse the project (`dbt parse`), after `dbt deps` only when a package it lists is not installed.

    dagster-dbt's own preparation runs `dbt deps` whenever the project has a packages.yml: that needs the dbt hub
    (network), fails offline, and can leave dbt_packages/ without the vendored packages a team committed there. dbt
    itself only needs every listed package to have a folder in the install path (its check before parsing), so
    that is the test here.
    """
    if not packages_installed(project.project_dir):
        project.preparer.prepare(project)
        return
    parser = DbtCliResource(project_dir=project, dbt_executable=dbt_executable())
    parser.cli(["parse", "--quiet"], target_path=project.target_path).wait()


def packages_installed(project_dir: Path) -> bool:
    """Whether the packages the project lists (packages.yml, dependencies.yml) have as many folders in its packages
    install path (`packages-install-path`, by default dbt_packages/), as dbt checks before it parses."""
    from dbt.clients.yaml_helper import load_yaml_text

    listed = 0
    for name in ("packages.yml", "dependencies.yml"):
        path = project_dir / name
        if path.exists():
            listed += len((load_yaml_text(path.read_text()) or {}).get("packages") or [])
    if not listed:
        return True
    config = load_yaml_text((project_dir / "dbt_project.yml").read_text()) or {}
    folder = project_dir / str(config.get("packages-install-path") or "dbt_packages")
    installed = sum(1 for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else 0
    return installed >= listed


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


#: The longest argument put on dbt's command line; longer ones (a selection of a few thousand nodes) go through a file
#: (dbt_launcher.py's --arguments-file): Linux refuses to start a process with an argument over 128 KiB.
LONGEST_ARGUMENT = 100_000


def spill_long_arguments(args: Sequence[str]) -> tuple[list[str], str | None]:
    """`args` with each argument longer than LONGEST_ARGUMENT replaced by a placeholder, and the file holding them
    (a JSON list, for dbt_launcher.py, which removes it), or None when none is that long."""
    kept: list[str] = []
    long_ones: list[str] = []
    for arg in args:
        if len(arg) > LONGEST_ARGUMENT:
            kept.append(ARGUMENT_PLACEHOLDER.format(len(long_ones)))
            long_ones.append(arg)
        else:
            kept.append(arg)
    if not long_ones:
        return kept, None
    handle, path = tempfile.mkstemp(prefix="dbt-arguments-", suffix=".json")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        json.dump(long_ones, out)
    return kept, path


#: Runs dbt through dbt_launcher.py, by path, without the script's folder on sys.path (`-P`).
LAUNCHER = ("-P", str(Path(__file__).with_name("dbt_launcher.py")))


def dbt_executable() -> str:
    """The dbt installed beside this interpreter, so a venv works without being activated."""
    beside = Path(sys.executable).with_name("dbt")
    return str(beside) if beside.exists() else "dbt"


def profiles_dir_of(project_dir: Path, profiles_dir: str | None) -> Path:
    """Where dbt looks for profiles.yml: the given folder, else DBT_PROFILES_DIR, else the project folder when it
    holds one, else ~/.dbt (dbt's own order)."""
    if profiles_dir:
        return Path(profiles_dir)
    if os.environ.get("DBT_PROFILES_DIR"):
        return Path(os.environ["DBT_PROFILES_DIR"])
    return project_dir if (project_dir / "profiles.yml").exists() else Path.home() / ".dbt"


def dbt_target_output(
    project_dir: Path, profiles_dir: str | None, profile: str | None, target: str | None
) -> dict[str, Any] | None:
    """The profile's target output (`type`, `path`, ...) rendered the way dbt renders it (`env_var()` included),
    without building an adapter; None when it cannot be read here (dbt then reports the problem itself)."""
    from dbt.clients.yaml_helper import load_yaml_text
    from dbt.config.profile import Profile, read_profile
    from dbt.config.renderer import ProfileRenderer
    from dbt_common.context import set_invocation_context

    try:
        set_invocation_context(os.environ.copy())  # what env_var() reads; dagster-dbt sets it the same way
        name = profile or load_yaml_text((project_dir / "dbt_project.yml").read_text()).get("profile")
        raw = read_profile(str(profiles_dir_of(project_dir, profiles_dir))).get(name)
        if not raw:
            return None
        return Profile.render_profile(raw, name, target, ProfileRenderer({}))[1]
    except Exception:  # a profile dbt itself would refuse: let dbt say why when it runs
        logger.debug("Could not read the dbt profile's target in-process", exc_info=True)
        return None


class PipelineDbtCliResource(FastStartDbtCliResource):
    """dagster-dbt's dbt resource, starting dbt through `dbt_launcher.py` on DuckDB (see `cli`), with the fast start
    of fastpaths/dagster_dbt.py (dagster-dbt's start-up costs, off with PIPELINE_FAST_PATHS=off).

    On DuckDB the dbt process holds the file's only lock while it runs, so the adapter handle dagster-dbt builds has
    no use here (`skips_adapter`): rows are counted inside the dbt process (dbt_launcher.py), and the file's path
    comes from the profile (`duckdb_path`, read without dbt's macros).

    With `seeds_before_sources` (set when the project has seeds that load a table it also reads as a source), the
    launcher orders those seeds before the source's readers in `dbt build` / `dbt run` (see dbt_launcher.py).
    """

    seeds_before_sources: bool = False

    @cached_property
    def duckdb_path(self) -> str | None:
        """The DuckDB file of the profile's target (relative paths are relative to the project folder, where dbt
        runs); None when the target is not DuckDB or the profile cannot be read here."""
        project_dir = Path(self.project_dir)
        output = dbt_target_output(project_dir, self.profiles_dir, self.profile, self.target)
        if not output or output.get("type") != "duckdb":
            return None
        path = str(output.get("path") or ":memory:")
        if path == ":memory:" or ":" in path.split("/", 1)[0]:  # in memory, or a URL such as md:
            return path
        return str(project_dir / path)

    @property
    def skips_adapter(self) -> bool:
        return self.duckdb_path is not None

    @property
    def reports_through_launcher(self) -> bool:
        """Whether dbt runs through dbt_launcher.py: on DuckDB, with the dbt installed beside this interpreter."""
        return self.duckdb_path is not None and self.dbt_executable == dbt_executable()

    def cli(self, args: Sequence[str], **kwargs: Any) -> DbtCliInvocation:
        if self.reports_through_launcher:
            # On DuckDB the installed dbt runs through dbt_launcher.py (same dbt, same arguments), which reports each
            # node's result as a line dagster-dbt parses: see `dbt_log_args` and `events_with_run_metadata`. The copy
            # takes this resource's cached dbt version along (it would otherwise ask `python --version`).
            self._cli_version  # noqa: B018 - computed (and cached) here, so the copy carries it
            args, spilled = spill_long_arguments(args)
            own = [SEEDS_BEFORE_SOURCES] if self.seeds_before_sources else []
            own += [COUNT_ROWS] if fast_paths_enabled() else []
            own += [ARGUMENTS_FILE, spilled] if spilled else []
            launcher = self.model_copy(
                update={
                    "dbt_executable": sys.executable,
                    "global_config_flags": [*LAUNCHER, *own, *self.global_config_flags],
                }
            )
            return launcher.start(args, **kwargs)
        return self.start(args, **kwargs)


def dbt_resource(project: DbtProject, *, seeds_before_sources: bool = False) -> DbtCliResource:
    return PipelineDbtCliResource(
        dbt_executable=dbt_executable(),
        project_dir=project,
        profiles_dir=str(project.profiles_dir) if project.profiles_dir else None,
        target=project.target,
        seeds_before_sources=seeds_before_sources,
    )
