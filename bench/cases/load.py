"""P1: building the code location's Definitions over a large dbt manifest costs at most 1.2x stock dagster-dbt.

Ours is what `pipeline.definitions` does when a code server loads it: `defs()` with DBT_PROJECT_DIR pointing at a
real-world-shaped synthetic project (bench/synthetic.py: seeds feeding sources, snapshots, unit tests, vendored
packages, semantic models, metrics, exposures, incremental models of its own) and the default settings — our
translator (groups from folders, owners from `meta`, one automation condition per asset, asset checks from tests,
seeds upstream of the readers of the sources they load), the partition rule (none of its incremental models reads a
raw table of ours), the external source specs, plus ingestion, activation, freshness, schedules and sensors. The
baseline is stock dagster-dbt, what a user would pick instead (bench/stock_dbt.py): `@dbt_assets(manifest=path)`
with the default translator and a `DbtCliResource` in a `dg.Definitions`. Both then resolve the repository and its
asset graph (`get_repository_def()`, `asset_graph`, the implicit global job), so work Dagster defers until first use
is counted on both sides.

Each repetition is a fresh Python process (a small script run with `python -c`), so nothing is cached between
repetitions. The rows compare the time *inside* the process from after the imports (dagster, dagster_dbt, and
the side's module: `pipeline.definitions` or bench/stock_dbt.py) to the resolved asset graph: reading the manifest,
building assets and resolving them. The imports are a constant of the environment, not of the manifest; the whole
process (start-up and imports included) is measured too and reported as `info` rows and in "All measures". A last
timing, also info, adds `RepositorySnap.from_def` — the snapshot a code server sends to the webserver — to the
resolved graph.

`dbt parse` of each synthetic project runs once, untimed, before the rounds.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.synthetic import generate

from ..harness import Case, Row, Setup, stopwatch
from ..processes import clean_env, dbt_parse, run_python

FULL_SIZES = (1_000, 5_000)
QUICK_SIZES = (50, 250)
GOAL_RATIO = 1.2
#: ours at the large size / ours at the small size, with 5x the models: at most linear growth
GOAL_SCALING = 6.0

#: The timed script: argv = side, project dir. Prints one JSON line: timings and what was built.
PROBE = r"""
import json, sys, time
side, project_dir = sys.argv[1], sys.argv[2]
import dagster as dg
from dagster_dbt import DbtCliResource, dbt_assets
if side == "ours":
    import pipeline.definitions as location
else:
    import bench.stock_dbt as location
from dagster._core.remote_representation.external_data import RepositorySnap
started = time.perf_counter()
defs = location.defs()
repo = defs.get_repository_def()
graph = repo.asset_graph
job = defs.resolve_implicit_global_asset_job_def()
resolved = time.perf_counter()
snap = RepositorySnap.from_def(repo)
snapped = time.perf_counter()
executable = [a for a in repo.assets_defs_by_key.values() if a.is_executable]
dbt_ops = [a for a in executable if a.node_def.name.startswith(("dbt_", "stock"))]
dbt_keys = sorted({k.to_user_string() for a in dbt_ops for k in a.keys})
dbt_checks = sorted({c.to_user_string() for a in dbt_ops for c in a.check_keys})
print(json.dumps({
    "resolved": resolved - started,
    "snapshot": snapped - started,
    "assets": len(graph.get_all_asset_keys()),
    "dbt_assets": dbt_keys,
    "dbt_checks": dbt_checks,
    "job_nodes": len(job.graph.node_defs),
    "snap_assets": len(snap.asset_nodes),
}))
"""


def probe_env(project: Path, workdir: Path) -> dict[str, str]:
    """The code location pointed at `project`, every other setting inside `workdir` (never the repository's .data)."""
    return clean_env(
        DBT_PROJECT_DIR=str(project),
        DBT_PROFILES_DIR=str(project),
        DBT_ARTIFACTS_URL=str(workdir / "dbt_artifacts"),
        DUCKDB_PATH=str(project / "warehouse.duckdb"),
        LANDING_URL=str(workdir / "landing"),
    )


def run_probe(side: str, project: Path, env: dict[str, str]) -> tuple[dict, float]:
    """(what the script printed, wall seconds of the whole process)."""
    return run_python(PROBE, side, str(project), env=env, what=f"{side} probe on {project}")


@contextmanager
def prepare(quick: bool, workdir: Path) -> Iterator[Setup]:
    small, large = QUICK_SIZES if quick else FULL_SIZES
    notes = []
    measures = {}
    for size in (small, large):
        with stopwatch() as made:
            project = generate(workdir / f"synthetic_{size}", size)
            dbt_parse(project.path, clean_env())
        manifest = json.loads((project.path / "target" / "manifest.json").read_text())
        models = [n for n in manifest["nodes"].values() if n["resource_type"] == "model"]
        tests = [n for n in manifest["nodes"].values() if n["resource_type"] == "test"]
        assert len(models) >= size, (len(models), size)  # the layered models, plus reference, history, packages'
        incremental = sum(n["config"].get("materialized") == "incremental" for n in models)
        # What dagster-dbt makes an asset: models (but ephemeral ones), seeds, snapshots.
        assets = sum(
            n["resource_type"] in ("model", "seed", "snapshot") and n["config"].get("materialized") != "ephemeral"
            for n in manifest["nodes"].values()
        )
        notes.append(
            f"{size:,}-model project: {len(models):,} models in the manifest, {project.layers} layers,"
            f" {len(project.sources)} sources, {len(tests):,} data tests (asset checks), {len(manifest['unit_tests'])}"
            f" unit tests, {len(project.seeds)} seeds, {len(project.snapshots)} snapshots, {incremental} incremental"
            f" models, {len(manifest['semantic_models'])} semantic models, {len(manifest['exposures'])} exposures;"
            f" manifest {_mb(project.path)} MB; generated and parsed in {made.seconds:.0f} s (not timed)"
        )
        env = probe_env(project.path, workdir)
        seen: dict[str, dict] = {}

        def measure(
            side: str, path: Path = project.path, env: dict = env, seen: dict = seen, size: int = size, assets=assets
        ):
            out, total = run_probe(side, path, env)
            # Both sides built the same dbt assets and checks (ours adds non-dbt assets around them).
            assert len(out["dbt_assets"]) == assets, (side, len(out["dbt_assets"]), assets)
            seen[side] = out
            other = seen.get("stock" if side == "ours" else "ours")
            if other is not None:
                assert out["dbt_assets"] == other["dbt_assets"], f"{size}: the two sides built different dbt assets"
                assert out["dbt_checks"] == other["dbt_checks"], f"{size}: the two sides built different checks"
            label = f"{side} {size:,}"
            return {
                f"{label}: defs + asset graph": out["resolved"],
                f"{label}: + repository snapshot": out["snapshot"],
                f"{label}: process total": total,
            }

        measures[f"ours {size:,}"] = lambda m=measure: m("ours")
        measures[f"stock {size:,}"] = lambda m=measure: m("stock")

    rows = []
    for size in (small, large):
        rows += [
            Row(
                f"Definitions load, {size:,} models: ours (pipeline.definitions) vs stock dagster-dbt (@dbt_assets)",
                f"ours {size:,}: defs + asset graph",
                f"stock {size:,}: defs + asset graph",
                GOAL_RATIO,
            ),
            Row(
                f"… {size:,} models, with the repository snapshot a code server sends",
                f"ours {size:,}: + repository snapshot",
                f"stock {size:,}: + repository snapshot",
            ),
            Row(
                f"… {size:,} models, whole process (interpreter start and imports included)",
                f"ours {size:,}: process total",
                f"stock {size:,}: process total",
            ),
        ]
    rows.append(
        Row(
            f"Definitions load scaling: ours at {large:,} models vs ours at {small:,} ({large // small}x the models)",
            f"ours {large:,}: defs + asset graph",
            f"ours {small:,}: defs + asset graph",
            GOAL_SCALING,
        )
    )
    notes += [
        "Ours: `pipeline.definitions.defs()` with DBT_PROJECT_DIR/DBT_PROFILES_DIR at the synthetic project and the"
        " default settings (other settings in a temp folder), then `get_repository_def()`, its `asset_graph` and"
        " the implicit global asset job",
        "Stock: bench/stock_dbt.py's `defs()`: `@dbt_assets(manifest=<project>/target/manifest.json)` (default"
        " DagsterDbtTranslator) + `DbtCliResource` in `dg.Definitions`, resolved the same way",
        "Each repetition is a fresh `python -c` process; the ratio rows time from after the imports to the resolved"
        " asset graph (manifest read included); `process total` is the subprocess's wall time from the parent;"
        " asserted per repetition: both sides built the same dbt asset keys and asset checks",
    ]
    yield Setup(measures=measures, rows=rows, notes=notes)


def _mb(project: Path) -> str:
    return f"{(project / 'target' / 'manifest.json').stat().st_size / 1e6:.1f}"


CASE = Case(
    "p1",
    "Definitions load on large dbt projects (ours: pipeline.definitions; baseline: stock dagster-dbt @dbt_assets)",
    prepare,
)
