"""The dbt project this code location runs: ours by default, any dbt-duckdb project through DBT_PROJECT_DIR."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Any

from dagster._utils import pushd
from dagster_dbt import DbtCliInvocation, DbtCliResource, DbtProject
from packaging import version

from ..core.settings import Settings
from .dbt_launcher import ARGUMENT_PLACEHOLDER, ARGUMENTS_FILE, SEEDS_BEFORE_SOURCES

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


#: Set while `PipelineDbtCliResource.cli` lets dagster-dbt start dbt: the adapter handle is built after that.
_ADAPTER_AFTER_START: ContextVar[bool] = ContextVar("adapter_after_start", default=False)


@contextmanager
def _adapter_after_start() -> Iterator[None]:
    token = _ADAPTER_AFTER_START.set(True)
    try:
        yield
    finally:
        _ADAPTER_AFTER_START.reset(token)


def installed_dbt_core_version(dbt_executable: str) -> version.Version | None:
    """dbt-core's version from this environment's package metadata, when `dbt_executable` is the `dbt` script
    installed beside this interpreter (so it runs this very dbt-core); None for any other executable."""
    resolved = shutil.which(dbt_executable)
    beside = Path(sys.executable).with_name("dbt")
    if resolved is None or not beside.exists() or Path(resolved).resolve() != beside.resolve():
        return None
    try:
        return version.parse(metadata.version("dbt-core"))
    except metadata.PackageNotFoundError:
        return None


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


class PipelineDbtCliResource(DbtCliResource):
    """`DbtCliResource` without two start-up costs it pays before every dbt command (issue 6; dagster-dbt 0.29).

    - **The dbt version.** dagster-dbt learns it by running `dbt --version` in a subprocess once per process (its
      `_cli_version`, to tell dbt Core from Fusion): a second Python start-up with dbt's imports, *and* dbt's own
      check of the latest release on PyPI, which waits on the network — ~2.5 s per step process here, longer
      offline. When the executable is the `dbt` installed beside this interpreter the answer is already in
      this environment's package metadata (`dbt-core`), so we read it there; any other executable (a Fusion
      binary, a dbt elsewhere on PATH) still gets asked.
    - **The adapter handle.** dagster-dbt builds an in-process dbt adapter (profile, project, the dbt and adapter
      macros parsed from Jinja: ~3 s) *before* it starts dbt, although nothing reads it until dbt's events are
      streamed. We let dagster-dbt start the dbt subprocess first and build the same handle, with dagster-dbt's
      own method, while dbt runs — the two overlap instead of adding up. `invocation.adapter` is the same object
      as before by the time `cli()` returns; if building it fails, it is None with dagster-dbt's warning, as
      before. On DuckDB no handle is built at all: the only use we have for it is counting rows, which
      dbt_launcher.py does inside the dbt process (the only one the file admits while dbt runs), and the file's
      path comes from the profile (`duckdb_path`, read without dbt's macros).

    On DuckDB, dbt also runs through `dbt_launcher.py` (see `cli`): the installed dbt, reporting each result as it
    comes although its stdout log is text.

    With `seeds_before_sources` (set when the project has seeds that load a table it also reads as a source), the
    launcher orders those seeds before the source's readers in `dbt build` / `dbt run` (see dbt_launcher.py).

    Both override private members of the pinned dagster-dbt (`_cli_version`, `_initialize_dbt_core_adapter`);
    tests/unit/test_dbt_resource.py fails if they disappear.
    """

    seeds_before_sources: bool = False

    @cached_property
    def _cli_version(self) -> version.Version:
        installed = installed_dbt_core_version(self.dbt_executable)
        return installed if installed is not None else super()._cli_version

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

    def _initialize_dbt_core_adapter(self, args: Sequence[str]) -> Any:
        if self.duckdb_path is not None or _ADAPTER_AFTER_START.get():
            return None  # DuckDB: not needed; otherwise built by `cli` once dbt has started
        return super()._initialize_dbt_core_adapter(args)

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
            own += [ARGUMENTS_FILE, spilled] if spilled else []
            launcher = self.model_copy(
                update={
                    "dbt_executable": sys.executable,
                    "global_config_flags": [*LAUNCHER, *own, *self.global_config_flags],
                }
            )
            return launcher._start(args, **kwargs)  # noqa: SLF001 - the copy is this resource
        return self._start(args, **kwargs)

    def _start(self, args: Sequence[str], **kwargs: Any) -> DbtCliInvocation:
        with _adapter_after_start():
            invocation = super().cli(args, **kwargs)
        if not invocation.is_fusion and self.duckdb_path is None:
            with pushd(str(invocation.project_dir)):  # where dagster-dbt builds it, too
                try:
                    invocation.adapter = super()._initialize_dbt_core_adapter(args)
                except Exception:
                    logger.warning(
                        "An error was encountered when creating a handle to the dbt adapter in Dagster.",
                        exc_info=True,
                    )
        return invocation


def dbt_resource(project: DbtProject, *, seeds_before_sources: bool = False) -> DbtCliResource:
    return PipelineDbtCliResource(
        dbt_executable=dbt_executable(),
        project_dir=project,
        profiles_dir=str(project.profiles_dir) if project.profiles_dir else None,
        target=project.target,
        seeds_before_sources=seeds_before_sources,
    )
