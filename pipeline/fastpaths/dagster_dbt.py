"""dagster-dbt 0.29's dbt resource and subset selection, without the costs they pay before dbt starts.

Each piece here overrides or calls a private member of dagster-dbt; with PIPELINE_FAST_PATHS=off every one steps aside
and dagster-dbt does what it does by itself. tests/unit/test_dbt_resource.py fails when an upgrade removes a member.

- **The dbt version** (`_cli_version`). dagster-dbt learns it by running `dbt --version` in a subprocess once per
  process (to tell dbt Core from Fusion): a second Python start-up with dbt's imports, *and* dbt's own check of the
  latest release on PyPI, which waits on the network: ~2.5 s per step process here, longer offline. When the
  executable is the `dbt` installed beside this interpreter the answer is already in this environment's package
  metadata (`dbt-core`), so it is read there; any other executable (a Fusion binary, a dbt elsewhere on PATH) is
  still asked.
- **The adapter handle** (`_initialize_dbt_core_adapter`). dagster-dbt builds an in-process dbt adapter (profile,
  project, the dbt and adapter macros parsed from Jinja: ~3 s) *before* it starts dbt, although nothing reads it
  until dbt's events are streamed. Here dbt starts first and the same handle is built, with dagster-dbt's own
  method, while dbt runs: the two overlap instead of adding up. A resource that has no use for the handle at all
  (`skips_adapter`: ours on DuckDB, where rows are counted inside the dbt process) does not build it.
- **A subset's selection** (`subset_selection_without_copy`). Given a subset of more than 200 nodes, dagster-dbt
  copies the whole project folder to a new temporary folder (never removed: target/, dbt_packages/, a DuckDB file
  kept there), writes a selectors.yml there and runs dbt in the copy; a profile whose DuckDB path is relative to the
  project (`path: warehouse.duckdb`) then builds the copy's warehouse. Here dagster-dbt's own selection of the subset
  goes on dbt's command line and dbt runs in the project itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from functools import cached_property
from importlib import metadata
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DbtCliInvocation, DbtCliResource
from dagster_dbt.asset_utils import (
    _SELECTION_ARGS_THRESHOLD,
    DAGSTER_DBT_EXCLUDE_METADATA_KEY,
    DAGSTER_DBT_SELECT_METADATA_KEY,
    DAGSTER_DBT_SELECTOR_METADATA_KEY,
    DBT_INDIRECT_SELECTION_ENV,
    get_subset_selection_for_context,
)
from packaging import version

from ..core.environment import environment
from . import enabled as fast_paths_enabled

logger = logging.getLogger(__name__)

#: Set while `FastStartDbtCliResource.start` lets dagster-dbt start dbt: the adapter handle is built after that.
_ADAPTER_AFTER_START: ContextVar[bool] = ContextVar("adapter_after_start", default=False)


@contextlib.contextmanager
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


class FastStartDbtCliResource(DbtCliResource):
    """`DbtCliResource` without the two start-up costs above; start dbt with `start` (which `cli` may call)."""

    @property
    def skips_adapter(self) -> bool:
        """Whether this resource has no use for dagster-dbt's in-process adapter handle (a subclass says)."""
        return False

    @cached_property
    def _cli_version(self) -> version.Version:
        installed = installed_dbt_core_version(self.dbt_executable) if fast_paths_enabled() else None
        return installed if installed is not None else super()._cli_version

    def _initialize_dbt_core_adapter(self, args: Sequence[str]) -> Any:
        if fast_paths_enabled() and (self.skips_adapter or _ADAPTER_AFTER_START.get()):
            return None  # not needed, or built by `start` once dbt has started
        return super()._initialize_dbt_core_adapter(args)

    def start(self, args: Sequence[str], **kwargs: Any) -> DbtCliInvocation:
        """dagster-dbt's `cli`, with the adapter handle built while dbt runs (fast paths on)."""
        if not fast_paths_enabled():
            return super().cli(args, **kwargs)
        with _adapter_after_start():
            invocation = super().cli(args, **kwargs)
        if not invocation.is_fusion and not self.skips_adapter:
            with contextlib.chdir(str(invocation.project_dir)):  # where dagster-dbt builds it, too
                try:
                    invocation.adapter = super()._initialize_dbt_core_adapter(args)
                except Exception:
                    logger.warning(
                        "An error was encountered when creating a handle to the dbt adapter in Dagster.",
                        exc_info=True,
                    )
        return invocation


def subset_selection_without_copy(
    context: dg.AssetExecutionContext, manifest: dict, translator: DagsterDbtTranslator
) -> tuple[list[str], str | None] | None:
    """For a subset run of more than dagster-dbt's 200 nodes: dagster-dbt's own selection of it (`--select` and the
    DBT_INDIRECT_SELECTION it needs), to put on dbt's command line (see the module's docstring); None for any other
    run, and with PIPELINE_FAST_PATHS=off (dagster-dbt then selects the subset itself)."""
    if not fast_paths_enabled():
        return None
    assets_def = context.assets_def
    subset = (
        assets_def.keys_by_output_name != assets_def.node_keys_by_output_name
        or assets_def.check_specs_by_output_name != assets_def.node_check_specs_by_output_name
    )
    if not subset:
        return None
    tags = context.op.tags
    selection, indirect = get_subset_selection_for_context(
        context=context,
        manifest=manifest,
        select=tags.get(DAGSTER_DBT_SELECT_METADATA_KEY),
        exclude=tags.get(DAGSTER_DBT_EXCLUDE_METADATA_KEY),
        selector=tags.get(DAGSTER_DBT_SELECTOR_METADATA_KEY),
        dagster_dbt_translator=translator,
        current_dbt_indirect_selection_env=os.getenv(DBT_INDIRECT_SELECTION_ENV),
    )
    selected = selection[-1].split() if selection[:1] == ["--select"] and len(selection) == 2 else []
    if len(selected) <= _SELECTION_ARGS_THRESHOLD:
        return None  # dagster-dbt selects it on the command line itself
    return selection, indirect


@contextlib.contextmanager
def indirect_selection(value: str | None) -> Iterator[None]:
    """DBT_INDIRECT_SELECTION set to `value` (when not None) while dagster-dbt starts dbt."""
    with environment(**({DBT_INDIRECT_SELECTION_ENV: value} if value is not None else {})):
        yield
