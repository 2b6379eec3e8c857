"""Fast paths: the speed-ups that rely on Dagster's, dagster-dbt's or dbt-duckdb's internals, all behind one switch.

    dagster_patches.py   Dagster's step execution: output key sets built once, the data version cache fed from
                         what this process stored, a `dg.Failure` recorded without a stack
    instance_storage.py  the local instance's SQLite storage: one engine per file, kept open (devstack/dagster.yaml)
    check_targets.py     which materialization a check evaluation recorded outside its asset's step judges
    dagster_dbt.py       dagster-dbt's dbt resource without `dbt --version` and with its adapter built while dbt
                         runs; a large subset selected without dagster-dbt's project copy
    (and dbt_launcher.py's row counts through dbt-duckdb's open database: `--count-rows`, see its `row_count`)

`PIPELINE_FAST_PATHS` switches them: `auto` (the default) turns them on with exactly the library versions they were
verified against (`VERIFIED_AGAINST`) and off with any other, so a Dagster or dbt upgrade lands on the public paths;
`on` forces them on (to re-check them after an upgrade: run the suite with it, then update `VERIFIED_AGAINST`);
`off` turns them off. Off, every piece steps aside and the library does what it does by itself: slower, and a few
figures less (no `dagster/row_count` on DuckDB models; a failed step's `dg.Failure` shows its stack).
The README ("Fast paths") lists each with what it saves; CI runs the test suite once with them off.
"""

from __future__ import annotations

import logging
from functools import cache
from importlib import metadata

from ..core.settings import fast_paths_mode

logger = logging.getLogger(__name__)

#: The versions each fast path was verified against (the suite passed with them on, `make bench` measured them).
VERIFIED_AGAINST = {"dagster": "1.13.27", "dagster-dbt": "0.29.27", "dbt-core": "1.11.16", "dbt-duckdb": "1.11.1"}


@cache
def unverified_versions() -> dict[str, str]:
    """Installed versions that differ from VERIFIED_AGAINST (package -> installed version)."""
    found = {}
    for package, verified in VERIFIED_AGAINST.items():
        try:
            installed = metadata.version(package)
        except metadata.PackageNotFoundError:
            installed = "not installed"
        if installed != verified:
            found[package] = installed
    return found


def enabled() -> bool:
    """Whether the fast paths run in this process (PIPELINE_FAST_PATHS, read each time: it is cheap)."""
    mode = fast_paths_mode()
    if mode != "auto":
        return mode == "on"
    unverified = unverified_versions()
    if unverified:
        _warn_once(tuple(sorted(unverified.items())))
        return False
    return True


@cache
def _warn_once(unverified: tuple[tuple[str, str], ...]) -> None:
    found = ", ".join(
        f"{package} {installed} (verified: {VERIFIED_AGAINST[package]})" for package, installed in unverified
    )
    logger.warning(
        f"The fast paths (pipeline/fastpaths/) are off: {found}. Run the test suite with PIPELINE_FAST_PATHS=on, "
        "then update VERIFIED_AGAINST in pipeline/fastpaths/__init__.py."
    )
