"""The dbt assets: one `dbt build` per run for whatever subset of the project is selected."""

import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dagster as dg
import duckdb
from dagster_dbt import DbtCliInvocation, DbtCliResource, DbtProject, dbt_assets

from ..automation.conditions import dbt_depth
from ..settings import WAREHOUSE_POOL, Settings
from .project import dbt_project, dbt_resource
from .translator import PipelineTranslator

EXTERNAL_SOURCES_GROUP = "external_sources"

#: Materializations whose relation is a table: counting rows is cheap. Views would re-run their query.
COUNTABLE = {"table", "incremental", "snapshot", "seed"}


@contextmanager
def indirect_selection(mode: str) -> Iterator[None]:
    """Run dbt with DBT_INDIRECT_SELECTION=`mode` unless the environment already sets it.

    dagster-dbt reads this variable when it builds the command (and overrides it with `empty` when it selects
    tests explicitly). With dbt's default, `eager`, a subset run — as an asset backfill launches for the dbt
    assets whose upstream partitions are done — also runs every relationships test touching a selected model,
    including tests whose other model is not built yet, which fails on a fresh warehouse. `buildable` runs a
    test only when all its parents are selected or upstream of the selection.
    """
    previous = os.environ.get("DBT_INDIRECT_SELECTION")
    if previous is None:
        os.environ["DBT_INDIRECT_SELECTION"] = mode
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("DBT_INDIRECT_SELECTION", None)


def build_dbt_assets(project: DbtProject, translator: PipelineTranslator) -> dg.AssetsDefinition:
    @dbt_assets(
        manifest=project.manifest_path,
        project=project,
        dagster_dbt_translator=translator,
        name="dbt_build",
        pool=WAREHOUSE_POOL,
    )
    def _dbt_build(context: dg.AssetExecutionContext, dbt: DbtCliResource) -> Iterator[Any]:
        """dbt writes the warehouse, so the whole build holds the one `warehouse` pool slot."""
        with indirect_selection("buildable"):
            invocation = dbt.cli(["build"], context=context)
        yield from events_with_row_counts(invocation)

    return _dbt_build


def events_with_row_counts(invocation: DbtCliInvocation) -> Iterator[Any]:
    """Stream a dbt invocation's events, adding `dagster/row_count` to every table it built.

    On DuckDB the dbt process holds the file's only write lock until it exits, so a second connection (which
    is what dagster-dbt's `fetch_row_counts()` opens while dbt runs) cannot read it. We therefore keep the
    events — dbt's log still streams to the run's compute log as it happens — and count all built tables in
    one read-only connection once dbt has released the file. Other adapters use `fetch_row_counts()`.
    """
    adapter = invocation.adapter
    if adapter is None or adapter.type() != "duckdb":
        yield from invocation.stream().fetch_row_counts()
        return

    events: list[Any] = []
    failure: BaseException | None = None
    try:
        for event in invocation.stream():
            events.append(event)
    except Exception as exc:  # dbt failed: still report what it did build, then re-raise
        failure = exc
    counts = count_rows(str(adapter.config.credentials.path), relations_of(invocation.manifest, events))
    for event in events:
        relation = _relation(invocation.manifest, event)
        if relation in counts:
            event = event.with_metadata({**event.metadata, "dagster/row_count": counts[relation]})
        yield event
    if failure is not None:
        raise failure


def _relation(manifest: dict, event: Any) -> str | None:
    if not isinstance(event, dg.Output | dg.AssetMaterialization):
        return None
    unique_id = event.metadata.get("unique_id")
    node = manifest["nodes"].get(getattr(unique_id, "value", unique_id))
    if not node or node.get("config", {}).get("materialized", node["resource_type"]) not in COUNTABLE:
        return None
    return node.get("relation_name")


def relations_of(manifest: dict, events: Sequence[Any]) -> list[str]:
    return [r for r in (_relation(manifest, e) for e in events) if r]


def count_rows(database_path: str, relations: Sequence[str]) -> dict[str, int]:
    if not relations or database_path in ("", ":memory:"):
        return {}
    counts: dict[str, int] = {}
    with duckdb.connect(database_path, read_only=True) as conn:
        for relation in relations:
            try:
                counts[relation] = conn.execute(f"SELECT count(*) FROM {relation}").fetchone()[0]
            except duckdb.Error:
                continue  # e.g. a relation in an attached database this connection does not have
    return counts


@dataclass(frozen=True)
class DbtStage:
    """The dbt part of the graph, plus what later stages need to find models in it."""

    defs: dg.Definitions
    manifest: dict
    key_of: Callable[[str], dg.AssetKey]


def external_source_specs(
    manifest: dict, key_of: Callable[[str], dg.AssetKey], defined: set[dg.AssetKey]
) -> list[dg.AssetSpec]:
    """dbt sources that no ingestion asset feeds (e.g. in a project brought via DBT_PROJECT_DIR) appear as
    external assets, so their lineage is visible instead of dangling."""
    specs: dict[dg.AssetKey, dg.AssetSpec] = {}
    for unique_id, source in manifest.get("sources", {}).items():
        key = key_of(unique_id)
        if key in defined or key in specs:
            continue
        specs[key] = dg.AssetSpec(
            key=key,
            description=source.get("description") or f"dbt source {source['source_name']}.{source['name']}",
            group_name=EXTERNAL_SOURCES_GROUP,
            kinds={"dbt"},
            metadata={"relation": source.get("relation_name") or ""},
        )
    return list(specs.values())


def transformation_defs(settings: Settings, ingested: set[dg.AssetKey]) -> DbtStage:
    project = dbt_project(settings)
    manifest = json.loads(project.manifest_path.read_text())
    translator = PipelineTranslator(depth=dbt_depth(manifest))

    def key_of(unique_id: str) -> dg.AssetKey:
        return translator.get_asset_spec(manifest, unique_id, project).key

    return DbtStage(
        defs=dg.Definitions(
            assets=[build_dbt_assets(project, translator), *external_source_specs(manifest, key_of, ingested)],
            resources={"dbt": dbt_resource(project)},
        ),
        manifest=manifest,
        key_of=key_of,
    )
