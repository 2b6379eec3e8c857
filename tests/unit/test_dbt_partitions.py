"""Which dbt models are daily-partitioned by landing day (pipeline/transformation/assets.py `partitioned_models`), and
which seeds come before the readers of a source over their table (dbt_launcher.py)."""

from types import SimpleNamespace

import pytest

from pipeline.transformation.assets import PARTITION_META_KEY, dbt_selection, partition_opt_in, partitioned_models
from pipeline.transformation.dbt_launcher import (
    command_of,
    order_seeds_before_sources,
    relation_key,
    seeds_feeding_sources,
)


def node(kind: str, name: str, parents: list[str], materialized: str = "view", meta: dict | None = None) -> dict:
    return {
        "unique_id": f"{kind}.p.{name}",
        "name": name,
        "resource_type": kind,
        "fqn": ["p", name],
        "original_file_path": f"models/{name}.sql",
        "config": {"materialized": materialized, "meta": meta or {}},
        "parents": parents,
    }


def manifest(*nodes: dict, sources: tuple[str, ...] = ("raw_orders", "crm_accounts")) -> dict:
    return {
        "nodes": {n["unique_id"]: n for n in nodes},
        "sources": {f"source.p.{s}": {"name": s} for s in sources},
        "parent_map": {
            **{n["unique_id"]: n["parents"] for n in nodes},
            **{f"source.p.{s}": [] for s in sources},
        },
    }


RAW = frozenset({"source.p.raw_orders"})  # the source an ingestion asset of ours loads


def test_an_incremental_model_reading_our_raw_tables_is_partitioned_with_the_chain_to_them():
    m = manifest(
        node("model", "stg_orders", ["source.p.raw_orders"]),
        node("seed", "regions", []),
        node("model", "stg_regions", ["seed.p.regions"]),
        node("model", "int_orders", ["model.p.stg_orders", "model.p.stg_regions"]),
        node("model", "fct_orders", ["model.p.int_orders"], "incremental"),
        node("model", "mart", ["model.p.fct_orders"], "table"),
    )
    # stg_regions is upstream of fct_orders but reads no raw table: unpartitioned, like the mart on top.
    assert partitioned_models(m, RAW) == {"model.p.stg_orders", "model.p.int_orders", "model.p.fct_orders"}


def test_an_incremental_model_of_another_project_is_not_partitioned():
    m = manifest(
        node("model", "stg_accounts", ["source.p.crm_accounts"]),
        node("model", "daily_accounts", ["model.p.stg_accounts"], "incremental"),
    )
    assert partitioned_models(m, RAW) == frozenset()
    assert partitioned_models(m, frozenset()) == frozenset()


def test_meta_opts_in_and_out():
    opted_in = node("model", "daily_accounts", ["model.p.stg_accounts"], "incremental", {PARTITION_META_KEY: True})
    opted_out = node("model", "fct_orders", ["model.p.stg_orders"], "incremental", {PARTITION_META_KEY: False})
    m = manifest(
        node("model", "stg_accounts", ["source.p.crm_accounts"]),
        node("model", "stg_orders", ["source.p.raw_orders"]),
        opted_in,
        opted_out,
    )
    # Opted in: partitioned alone (nothing between it and a raw table of ours); opted out: nothing partitioned for it.
    assert partitioned_models(m, RAW) == {"model.p.daily_accounts"}
    # The key counts on incremental models only: a view with it is whatever its incremental children make it.
    view = node("model", "stg_orders", ["source.p.raw_orders"], "view", {PARTITION_META_KEY: False})
    m = manifest(view, node("model", "fct_orders", ["model.p.stg_orders"], "incremental"))
    assert partitioned_models(m, RAW) == {"model.p.stg_orders", "model.p.fct_orders"}


def test_a_snapshot_between_raw_and_the_incremental_model_is_walked_through():
    m = manifest(
        node("model", "stg_orders", ["source.p.raw_orders"]),
        node("snapshot", "snap_orders", ["model.p.stg_orders"]),
        node("model", "fct_orders", ["snapshot.p.snap_orders"], "incremental"),
    )
    assert partitioned_models(m, RAW) == {"model.p.stg_orders", "model.p.fct_orders"}


@pytest.mark.parametrize("value", ["yes", 1, "true", None])
def test_a_meta_value_that_is_not_a_boolean_names_the_model_and_file(value):
    bad = node("model", "fct_orders", [], "incremental", {PARTITION_META_KEY: value})
    named = r"partition_by_landing_date of dbt model fct_orders \(models/fct_orders.sql\)"
    with pytest.raises(ValueError, match=named):
        partition_opt_in(bad)
    assert partition_opt_in(node("model", "x", [])) is None
    assert partition_opt_in({**node("model", "x", []), "meta": {PARTITION_META_KEY: True}}) is True


def test_selection_names_exactly_the_nodes_by_fqn():
    m = manifest(node("model", "b", []), node("model", "a", []))
    assert dbt_selection(m, {"model.p.b", "model.p.a"}) == "p.a p.b"


def test_a_seed_feeds_the_source_naming_its_relation():
    assert relation_key('"Warehouse"."reference"."FX_rates"') == "warehouse.reference.fx_rates"
    seeds = {"seed.p.fx": '"w"."reference"."fx"', "seed.p.tiers": '"w"."main"."tiers"'}
    sources = {"source.p.reference.fx": '"w"."reference"."FX"', "source.p.raw.fx": '"w"."raw"."fx"', "source.x": None}
    assert seeds_feeding_sources(seeds, sources) == {"source.p.reference.fx": "seed.p.fx"}


def test_readers_of_a_seed_fed_source_depend_on_the_seed():
    def graph_node(kind: str, relation: str | None = None, deps: list[str] | None = None):
        depends_on = SimpleNamespace(nodes=deps) if deps is not None else SimpleNamespace(macros=[])
        return SimpleNamespace(resource_type=kind, relation_name=relation, depends_on=depends_on)

    reader = graph_node("model", deps=["source.p.reference.fx"])
    both = graph_node("model", deps=["source.p.reference.fx", "seed.p.fx"])  # also ref()s the seed
    test = graph_node("test", deps=["source.p.reference.fx"])
    other = graph_node("model", deps=["source.p.raw.orders"])
    parsed = SimpleNamespace(
        nodes={"seed.p.fx": graph_node("seed", '"w"."reference"."fx"'), "a": reader, "b": both, "c": test, "d": other},
        sources={
            "source.p.reference.fx": SimpleNamespace(relation_name='"w"."reference"."fx"'),
            "source.p.raw.orders": SimpleNamespace(relation_name='"w"."raw"."orders"'),
        },
    )
    assert order_seeds_before_sources(parsed) == 2
    assert reader.depends_on.nodes == ["source.p.reference.fx", "seed.p.fx"]
    assert both.depends_on.nodes == ["source.p.reference.fx", "seed.p.fx"]
    assert test.depends_on.nodes == ["source.p.reference.fx", "seed.p.fx"]
    assert other.depends_on.nodes == ["source.p.raw.orders"]


def test_the_parse_takes_the_options_of_the_command_it_stands_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["--no-use-colors", "build", "--log-format", "text", "--vars", '{"a": 1}', "--select", "x y"]
    args += ["--target", "t"]
    assert command_of(args) == ("build", {"use_colors": False, "log_format": "text", "vars": {"a": 1}, "target": "t"})
    assert command_of(["build", "--selector", "s", "--exclude", "z", "--full-refresh"]) == ("build", {})
    assert command_of(["not-a-command"]) == (None, {})


def test_the_dbt_stage_is_built_once_per_manifest(tmp_path, demo_manifest):
    """A run worker loads the code location twice; the second load shares the first one's dbt stage until the
    manifest file changes."""
    import os
    import shutil

    from pipeline.core.settings import REPO_ROOT, Settings
    from pipeline.ingestion.assets import raw_partitions
    from pipeline.transformation.assets import transformation_defs

    project = tmp_path / "dbt_project"
    shutil.copytree(REPO_ROOT / "dbt_project", project, ignore=shutil.ignore_patterns("logs"))
    settings = Settings.from_env({"DBT_PROJECT_DIR": str(project), "DUCKDB_PATH": str(tmp_path / "w.duckdb")})
    partitions = raw_partitions(settings)
    first = transformation_defs(settings, set(), partitions)
    assert transformation_defs(settings, set(), partitions) is first
    manifest = project / "target" / "manifest.json"
    stamp = manifest.stat().st_mtime_ns + 1_000_000_000
    os.utime(manifest, ns=(stamp, stamp))
    assert transformation_defs(settings, set(), partitions) is not first
