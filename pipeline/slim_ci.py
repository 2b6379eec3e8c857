"""Slim CI: build what a pull request changed, and what depends on it, against a copy of production; report the impact.

    python -m pipeline.slim_ci [--report-dir DIR]          # or: make slim-ci

Run in the pull request's checkout. In order:

1. Production's manifest: `<DBT_ARTIFACTS_URL>/latest/manifest.json`, which every successful `dbt build` of the
   code location keeps (a folder or `s3://...`, with the landing bucket's endpoint and credentials). Missing or
   unreadable, the run says why and falls back to a full `dbt build`.
2. The CI warehouse: a fresh copy of production's DuckDB file (SLIM_CI_PRODUCTION_DUCKDB_PATH, default DUCKDB_PATH),
   read through a READ_ONLY attach, into a file of its own (SLIM_CI_DUCKDB_PATH, default `.data/ci/<production's
   file name>`). It keeps production's base name because dbt-duckdb names the catalog after the file: relations keep
   production's names (`warehouse.main.dim_customers`), so `--defer` resolves every model it does not build, and
   every source, inside the copy. DuckDB has no zero-copy clone, hence a copy; a big warehouse is better served by a
   sampled snapshot (see the README's "Slim CI").
3. `dbt build --select state:modified+ --defer --state <production's manifest>` with DUCKDB_PATH set to the CI file;
   before it, `dbt ls --select state:modified` names what the pull request changed. Both run in this process on one
   parse of the pull request's project.
4. The impact: the code location's asset graph for this checkout (`pipeline.definitions`), and the Dagster assets
   downstream of what dbt built (syncs, their destinations, the Slack summary).

The report (markdown on stdout, `slim_ci.md` and `slim_ci.json` in the report folder) lists the modified nodes, the
downstream models, the downstream Dagster assets, and every test run with its result.

Production is never written: the CI file may not be production's (by path or as the same file under another name),
production is only ever attached READ_ONLY, and dbt runs only once its profile is seen to resolve to the CI file.

Exit status: 0 everything built and passed; 1 a model or test failed, or the pull request's project or code location
does not load; 2 the setup is wrong (the message names the setting and what to do).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
from dagster_dbt.asset_utils import DAGSTER_DBT_UNIQUE_ID_METADATA_KEY

from .core.environment import environment
from .core.settings import (
    CI_DIR,
    SLIM_CI_DUCKDB_PATH,
    SLIM_CI_PRODUCTION_DUCKDB_PATH,
    ConfigurationError,
    Settings,
    slim_ci_paths,
)
from .core.sql import quote_ident, quote_literal
from .transformation.artifacts import LATEST, ArtifactStore
from .transformation.project import dbt_target_output

log = logging.getLogger("pipeline.slim_ci")

EXIT_PASSED, EXIT_FAILED, EXIT_SETUP = 0, 1, 2
DEFAULT_REPORT_DIR = CI_DIR / "report"
PRODUCTION_MANIFEST = f"{LATEST}/manifest.json"
#: dbt nodes that build a relation; the others that run are tests
BUILT_TYPES = ("model", "seed", "snapshot")
TEST_TYPES = ("test", "unit_test")
#: run_results statuses of a failure (a skip follows an upstream failure, which is counted already)
FAILED = {"error", "fail", "runtime error"}
#: the name production is attached under while it is copied (never the CI file's own catalog name)
PRODUCTION_ALIAS = "slim_ci_production"


class SetupError(Exception):
    """The command cannot run as configured; the message says which setting and what to do (exit status 2)."""


@dataclass
class Report:
    production_warehouse: str
    ci_warehouse: str
    production_manifest: str
    #: "slim" (state:modified+ deferred to production) or "full"
    build: str = "slim"
    full_build_reason: str | None = None
    #: state:modified (None on a full build: nothing to compare with)
    modified: list[dict[str, str]] | None = None
    #: nodes built that are not themselves modified, with their status
    downstream: list[dict[str, str]] = field(default_factory=list)
    dagster_assets: list[dict[str, Any]] = field(default_factory=list)
    tests: list[dict[str, str]] = field(default_factory=list)
    #: what failed outside the results (the project does not parse, the code location does not load, ...)
    errors: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        built = self.downstream + (self.modified or [])
        return bool(self.errors) or any(n.get("status") in FAILED for n in [*built, *self.tests])

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.failed else EXIT_PASSED

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "failed": self.failed, "exit_code": self.exit_code}, indent=2)

    def to_markdown(self) -> str:
        failures = {n["unique_id"]: n for n in [*(self.modified or []), *self.downstream, *self.tests]}
        failed = [n for n in failures.values() if n.get("status") in FAILED]
        verdict = "**failed**" if self.failed else "**passed**"
        lines = ["# Slim CI report", ""]
        if self.build == "slim":
            lines.append(f"Result: {verdict}. Built `state:modified+`, deferred to production's manifest.")
        else:
            lines.append(f"Result: {verdict}. **Full build: {self.full_build_reason}**")
        lines += [
            "",
            f"- production manifest: `{self.production_manifest}`",
            f"- CI warehouse: `{self.ci_warehouse}` (a copy of `{self.production_warehouse}`)",
            f"- seconds: {', '.join(f'{step} {s:.1f}' for step, s in self.seconds.items())}",
            "",
        ]
        for error in self.errors:
            lines += [f"**Error:** {error}", ""]
        if self.modified is not None:
            lines += [f"## Modified ({len(self.modified)})", "", *_node_lines(self.modified, "nothing"), ""]
        title = "Built" if self.modified is None else "Downstream"
        lines += [f"## {title} ({len(self.downstream)})", "", *_node_lines(self.downstream, "nothing"), ""]
        lines += [f"## Downstream Dagster assets ({len(self.dagster_assets)})", ""]
        lines += [
            f"- `{a['key']}` ({a['kind']}, group {a['group']}), after {', '.join(f'`{p}`' for p in a['upstream'])}"
            for a in self.dagster_assets
        ] or ["- none"]
        by_status = Counter(t["status"] for t in self.tests)
        counts = ", ".join(f"{n} {status}" for status, n in sorted(by_status.items()))
        lines += ["", f"## Tests ({len(self.tests)}{': ' + counts if counts else ''})", ""]
        for node in failed:
            message = " ".join((node.get("message") or "").split())[:300]
            lines.append(f"- **{node['status']}** `{node['name']}` ({node['resource_type']}): {message}")
        if self.tests:
            lines += ["", "<details><summary>Every test</summary>", ""]
            lines += [f"- {t['status']} `{t['name']}`" for t in self.tests]
            lines += ["", "</details>"]
        return "\n".join(lines) + "\n"


def _node_lines(nodes: list[dict[str, str]], empty: str) -> list[str]:
    lines = [f"- `{n['name']}` ({n['resource_type']}{', ' + n['status'] if n.get('status') else ''})" for n in nodes]
    return lines or [f"- {empty}"]


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths are one file: the same path once resolved, or the same file under two names."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): no hard link to worry about
        return False


def refuse_production(ci: Path, production: Path) -> None:
    if same_file(ci, production):
        raise SetupError(
            f"The CI warehouse {ci} ({SLIM_CI_DUCKDB_PATH}) is the production warehouse {production} "
            f"({SLIM_CI_PRODUCTION_DUCKDB_PATH}, default DUCKDB_PATH): slim CI never writes production. Set "
            f"{SLIM_CI_DUCKDB_PATH} to a file of its own with production's file name, e.g. {CI_DIR / production.name}."
        )


def production_manifest(settings: Settings, state_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    """Production's manifest, copied into `state_dir` for `--state`; or None and why it cannot be used."""
    where = f"{settings.dbt_artifacts_url.rstrip('/')}/{PRODUCTION_MANIFEST}"
    try:
        store = ArtifactStore.open(settings.dbt_artifacts_url, settings.landing_endpoint_url, settings.landing_region)
        manifest = store.load(PRODUCTION_MANIFEST)
    except ValueError as exc:  # json's errors are ValueErrors
        return None, f"the production manifest {where} (DBT_ARTIFACTS_URL) is not JSON ({exc})"
    except Exception as exc:  # an unreachable or refusing S3 endpoint, an unreadable folder
        return None, f"the production manifest {where} (DBT_ARTIFACTS_URL) could not be read: {exc}"
    if manifest is None:
        return None, f"there is no production manifest at {where} (DBT_ARTIFACTS_URL): no successful build kept yet"
    if not isinstance(manifest, dict) or not isinstance(manifest.get("nodes"), dict) or "metadata" not in manifest:
        return None, f"{where} (DBT_ARTIFACTS_URL) is not a dbt manifest"
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    return manifest, None


def check_catalog(manifest: Mapping[str, Any], ci: Path) -> None:
    """Production's relations must be reachable in the CI file under their own names (`--defer` uses them)."""
    catalogs = {
        n["database"] for n in manifest["nodes"].values() if n.get("resource_type") in BUILT_TYPES and n.get("database")
    }
    if catalogs and ci.stem not in catalogs:
        name = sorted(catalogs)[0]
        raise SetupError(
            f"Production's relations are in catalog {name!r} (its manifest), but the CI warehouse {ci} "
            f"({SLIM_CI_DUCKDB_PATH}) would be catalog {ci.stem!r}: dbt-duckdb names the catalog after the file, and "
            f"--defer reads production's relation names. Name the CI file {name}.duckdb, in a folder of its own."
        )


def copy_production(production: Path, ci: Path) -> None:
    """Replace the CI file with a consistent copy of production, which is attached READ_ONLY (no writer can start
    while the copy runs, and none may be running)."""
    if not production.is_file():
        raise SetupError(
            f"No production warehouse at {production} ({SLIM_CI_PRODUCTION_DUCKDB_PATH}, default DUCKDB_PATH): slim "
            "CI builds on a copy of it. Point the setting at production's DuckDB file or at a snapshot of it."
        )
    log.info("Copying the production warehouse %s to %s", production, ci)
    ci.parent.mkdir(parents=True, exist_ok=True)
    for stale in (ci, ci.with_name(ci.name + ".wal")):
        stale.unlink(missing_ok=True)
    try:
        with duckdb.connect(str(ci)) as conn:
            (catalog,) = conn.execute("SELECT current_database()").fetchone() or ("",)
            conn.execute(f"ATTACH {quote_literal(str(production))} AS {PRODUCTION_ALIAS} (READ_ONLY)")
            conn.execute(f"COPY FROM DATABASE {PRODUCTION_ALIAS} TO {quote_ident(catalog)}")
            conn.execute(f"DETACH {PRODUCTION_ALIAS}")
    except duckdb.Error as exc:
        ci.unlink(missing_ok=True)
        if "lock" in str(exc).lower():
            raise SetupError(
                f"The production warehouse {production} is busy: a process is writing it ({exc}). Retry when the run "
                f"is done, or point {SLIM_CI_PRODUCTION_DUCKDB_PATH} at a snapshot of it."
            ) from None
        raise SetupError(
            f"Could not copy the production warehouse {production} ({SLIM_CI_PRODUCTION_DUCKDB_PATH}): {exc}"
        ) from None


def check_ci_target(settings: Settings, ci: Path, production: Path) -> None:
    """dbt's profile, rendered as dbt will render it (DUCKDB_PATH set to the CI file), must write the CI file and
    attach production, if at all, READ_ONLY."""
    output = dbt_target_output(settings.dbt_project_dir, str(settings.dbt_profiles_dir), None, settings.dbt_target)
    profile = settings.dbt_profiles_dir / "profiles.yml"
    if output is None:
        raise SetupError(f"Could not read the dbt profile's target from {profile} (DBT_PROFILES_DIR, DBT_TARGET).")
    if output.get("type") != "duckdb":
        raise SetupError(f"Slim CI builds on DuckDB; the target of {profile} is {output.get('type')!r}.")
    path = Path(str(output.get("path") or ":memory:"))
    if not same_file(path, ci):
        raise SetupError(
            f"The dbt target in {profile} writes {path}, not the CI warehouse {ci}: its path must be "
            "\"{{ env_var('DUCKDB_PATH') }}\" (slim CI sets DUCKDB_PATH to the CI file), so CI never writes elsewhere."
        )
    for attached in output.get("attach") or []:
        if same_file(Path(str(attached.get("path", ""))), production) and not attached.get("read_only"):
            raise SetupError(f"The dbt target in {profile} attaches production ({production}) without read_only: true.")


@dataclass
class DbtOutcome:
    modified: list[str] | None
    run_results: dict[str, Any] | None
    manifest: Any
    #: set when the build was a full one although a production manifest was found
    fallback_reason: str | None = None
    error: str | None = None


def run_dbt(settings: Settings, state_dir: Path | None, watch: Stopwatch) -> DbtOutcome:
    """One parse of the pull request's project, then `dbt ls --select state:modified` and the build, in this process
    (dbt's programmatic entry point); with no `state_dir`, a full build. Each part's seconds go to `watch`."""
    from dbt.cli.main import dbtRunner

    target_path = settings.dbt_project_dir / "target"
    common = [
        "--project-dir",
        str(settings.dbt_project_dir),
        "--profiles-dir",
        str(settings.dbt_profiles_dir),
        "--target-path",
        str(target_path),
        *(["--target", settings.dbt_target] if settings.dbt_target else []),
    ]
    parsed = dbtRunner().invoke(["parse", "--quiet", *common])
    watch.lap("parse")
    if not parsed.success:
        return DbtOutcome(None, None, None, error=f"the dbt project does not parse: {parsed.exception}")
    runner = dbtRunner(manifest=parsed.result)
    modified, fallback = None, None
    if state_dir is not None:
        listed = runner.invoke(
            ["ls", "--select", "state:modified", "--state", str(state_dir), "--indirect-selection", "empty"]
            + ["--output", "json", "--output-keys", "unique_id", "--log-level", "none", *common]
        )
        if listed.success:
            modified = sorted(json.loads(line)["unique_id"] for line in listed.result or [])
        else:
            fallback = f"dbt could not compare the project with the production manifest ({listed.exception})"
            log.warning("%s: falling back to a full build", fallback)
            state_dir = None
        watch.lap("compare")
    selection = ["--select", "state:modified+", "--defer", "--state", str(state_dir)] if state_dir else []
    results_file = target_path / "run_results.json"
    results_file.unlink(missing_ok=True)
    built = runner.invoke(["build", *selection, *common])
    watch.lap("build")
    run_results = json.loads(results_file.read_text(encoding="utf-8")) if results_file.exists() else None
    error = None  # failed models and tests are no error here: their results say so
    if run_results is None:
        error = f"dbt build stopped before running anything: {built.exception}"
    elif built.exception is not None:
        error = f"dbt build failed: {built.exception}"
    return DbtOutcome(modified, run_results, parsed.result, fallback, error)


#: the manifest's collections of nodes, where a unique_id is looked up for its name
NODE_COLLECTIONS = ("nodes", "unit_tests", "sources", "exposures", "metrics", "semantic_models", "saved_queries")


def node_entry(manifest: Any, unique_id: str, result: Mapping[str, Any] | None = None) -> dict[str, str]:
    """A node as the report lists it: unique_id, name, resource type, and its result when it ran."""
    found = (getattr(manifest, name, {}).get(unique_id) for name in NODE_COLLECTIONS)
    node = next((n for n in found if n is not None), None)
    entry = {
        "unique_id": unique_id,
        "name": node.name if node is not None else unique_id.split(".")[-1],
        "resource_type": unique_id.split(".", 1)[0],
    }
    if result is not None:
        entry["status"] = str(result.get("status"))
        entry["message"] = str(result.get("message") or "")
    return entry


def dagster_impact(built: Sequence[str]) -> list[dict[str, Any]]:
    """The assets of the code location (as this checkout defines it) downstream of the dbt nodes built, other than
    dbt's own: syncs, their destinations, the Slack summary. Raises what the code location's load raises."""
    from .definitions import defs

    graph = defs().resolve_asset_graph()
    dbt_keys = {
        uid: key
        for key in graph.get_all_asset_keys()
        if (uid := graph.get(key).metadata.get(DAGSTER_DBT_UNIQUE_ID_METADATA_KEY)) is not None
    }
    roots = [dbt_keys[uid] for uid in built if uid in dbt_keys]
    if not roots:
        return []
    downstream = dg.AssetSelection.assets(*roots).downstream().resolve(graph)
    impacted = sorted(set(downstream) - set(dbt_keys.values()), key=lambda k: k.to_user_string())
    assets = []
    for key in impacted:
        node = graph.get(key)
        assets.append(
            {
                "key": key.to_user_string(),
                "group": node.group_name,
                "kind": "materialized by Dagster" if node.is_materializable else "external",
                "upstream": sorted(p.to_user_string() for p in node.parent_keys if p in downstream),
            }
        )
    return assets


class Stopwatch:
    """Seconds per step, for the report."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.monotonic()

    def lap(self, step: str) -> None:
        now = time.monotonic()
        self.seconds[step] = round(now - self._last, 2)
        self._last = now


def slim_ci(report_dir: Path, environ: Mapping[str, str] | None = None) -> Report:
    """Run the whole check (see the module docstring); raises SetupError for exit status 2."""
    try:
        settings = Settings.from_env(environ)
        ci, production = slim_ci_paths(settings.warehouse_path, environ)
    except ConfigurationError as exc:
        raise SetupError(str(exc)) from None
    refuse_production(ci, production)
    watch = Stopwatch()
    state_dir = report_dir / "production"
    manifest, reason = production_manifest(settings, state_dir)
    if manifest is not None:
        check_catalog(manifest, ci)
    else:
        log.warning("Full build: %s", reason)
    report = Report(
        production_warehouse=str(production),
        ci_warehouse=str(ci),
        production_manifest=f"{settings.dbt_artifacts_url.rstrip('/')}/{PRODUCTION_MANIFEST}",
        build="slim" if manifest is not None else "full",
        full_build_reason=reason,
        seconds=watch.seconds,
    )
    watch.lap("manifest")
    with environment(DUCKDB_PATH=str(ci)):
        check_ci_target(settings, ci, production)
        copy_production(production, ci)
        watch.lap("copy")
        outcome = run_dbt(settings, state_dir if manifest is not None else None, watch)
        built = record_dbt(report, outcome)
        if built:
            try:
                report.dagster_assets = dagster_impact(built)
            except Exception as exc:  # the pull request breaks the code location: that is the finding
                report.errors.append(f"the code location does not load with this change: {exc}")
        watch.lap("impact")
    return report


def record_dbt(report: Report, outcome: DbtOutcome) -> list[str]:
    """Put dbt's outcome in the report: modified nodes, the others built, tests; returns the nodes built."""
    if outcome.fallback_reason:
        report.build, report.full_build_reason = "full", outcome.fallback_reason
    if outcome.error:
        report.errors.append(outcome.error)
    results = {r["unique_id"]: r for r in (outcome.run_results or {}).get("results", [])}
    modified = outcome.modified if report.build == "slim" else None
    if modified is not None:
        report.modified = [node_entry(outcome.manifest, uid, results.get(uid)) for uid in modified]
    for uid in sorted(results):
        entry = node_entry(outcome.manifest, uid, results[uid])
        if entry["resource_type"] in TEST_TYPES:
            report.tests.append(entry)
        elif uid not in (modified or ()):
            report.downstream.append(entry)
    return [uid for uid in results if uid.split(".", 1)[0] in BUILT_TYPES]


def write_report(report: Report, report_dir: Path) -> None:
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "slim_ci.json").write_text(report.to_json(), encoding="utf-8")
    (report_dir / "slim_ci.md").write_text(report.to_markdown(), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--report-dir",
        type=Path,
        default=DEFAULT_REPORT_DIR,
        help=f"where slim_ci.md, slim_ci.json and production's manifest go (default {DEFAULT_REPORT_DIR})",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        report = slim_ci(args.report_dir.resolve())
    except SetupError as exc:
        log.error("Slim CI cannot run: %s", exc)
        return EXIT_SETUP
    write_report(report, args.report_dir)
    sys.stdout.write(report.to_markdown())
    log.info("Report: %s", args.report_dir / "slim_ci.md")
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
