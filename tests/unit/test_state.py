"""The state-aware decision on a real (ephemeral) Dagster instance: materializations are reported as the dbt step
and the raw loads record them (data version, code version, the inputs' cursors)."""

import json

import dagster as dg
import pytest

from pipeline.transformation.state import (
    CODE_VERSION_TAG,
    DATA_VERSION_TAG,
    INPUTS,
    BuildAfter,
    Node,
    StateReader,
    applies,
    decide,
    opted_out,
)

RAW = dg.AssetKey(["raw", "customers"])
STG = dg.AssetKey("stg_customers")
DIM = dg.AssetKey("dim_customers")
SEED = dg.AssetKey("country_regions")


@pytest.fixture
def instance():
    with dg.instance_for_test() as instance:
        yield instance


def load_raw(instance, day: str, version: str) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(RAW, partition=day, tags={DATA_VERSION_TAG: version}))


def build(instance, key: dg.AssetKey, code: str, parents, version: str) -> None:
    """What the dbt step records for a node it built: its versions and the cursors of its parents."""
    reader = StateReader(instance)
    cursors = reader.latest_storage_ids(parents)
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            key,
            metadata={INPUTS: json.dumps({p.to_user_string(): cursors.get(p, 0) for p in parents})},
            tags={DATA_VERSION_TAG: version, CODE_VERSION_TAG: code},
        )
    )


def nodes(code_stg="s1", code_dim="d1", **dim):
    return [
        Node(STG, code_stg, frozenset({RAW})),
        Node(DIM, code_dim, frozenset({STG, SEED}), **dim),
    ]


@pytest.fixture
def built(instance):
    load_raw(instance, "2026-12-01", "a")
    load_raw(instance, "2026-12-02", "b")
    build(instance, SEED, "c1", [], "seed-v1")
    build(instance, STG, "s1", [RAW], "stg-v1")
    build(instance, DIM, "d1", [STG, SEED], "dim-v1")
    return instance


def verdicts(instance, nodes_, now=2e9):
    decision = decide(StateReader(instance), nodes_, None, now)
    return {k.to_user_string(): ("build", r) for k, r in decision.build.items()} | {
        k.to_user_string(): ("reuse", r) for k, r in decision.reuse.items()
    }


def test_unchanged_inputs_and_code_reuse_everything(built):
    got = verdicts(built, nodes())
    assert {k: v[0] for k, v in got.items()} == {"stg_customers": "reuse", "dim_customers": "reuse"}


def test_a_day_loaded_again_from_the_same_files_is_no_change_and_a_new_file_is(built):
    load_raw(built, "2026-12-01", "a")  # the daily build re-reads processed/: same version
    assert verdicts(built, nodes())["stg_customers"][0] == "reuse"
    load_raw(built, "2026-12-02", "b2")  # a new file that day
    got = verdicts(built, nodes())
    assert got["stg_customers"] == ("build", "new data in raw/customers")
    assert got["dim_customers"] == ("build", "input built in this run: stg_customers")


def test_a_code_change_builds_the_model_and_what_reads_it(built):
    got = verdicts(built, nodes(code_stg="s2"))
    assert got["stg_customers"] == ("build", "code changed (dbt checksum)")
    assert got["dim_customers"][0] == "build"


def test_a_model_reused_upstream_is_no_change_downstream(built):
    # The seed was reused by another run: a new materialization with its previous data version.
    build(built, SEED, "c1", [], "seed-v1")
    assert verdicts(built, nodes())["dim_customers"][0] == "reuse"
    build(built, SEED, "c2", [], "seed-v2")  # the CSV changed and it was rebuilt
    assert verdicts(built, nodes())["dim_customers"] == ("build", "new data in country_regions")


def test_opt_out_never_materialized_inputs_and_first_builds_build(built, instance):
    assert verdicts(built, nodes(opted_out=True))["dim_customers"][0] == "build"
    orphan = Node(dg.AssetKey("reads_external"), "x", frozenset({dg.AssetKey(["external", "crm_export"])}))
    reason = verdicts(built, [orphan])["reads_external"][1]
    assert reason.startswith("input never materialized in Dagster")
    assert verdicts(built, [Node(dg.AssetKey("brand_new"), "n", frozenset({RAW}))])["brand_new"] == (
        "build",
        "no earlier build",
    )


def test_build_after_holds_new_data_back_until_due(built):
    build(built, SEED, "c2", [], "seed-v2")
    last = built.get_latest_materialization_event(DIM).timestamp
    hourly = BuildAfter(3600)
    early = verdicts(built, nodes(build_after=hourly), now=last + 600)["dim_customers"]
    assert early[0] == "reuse" and "build_after" in early[1] and "due in 0:50:00" in early[1]
    assert verdicts(built, nodes(build_after=hourly), now=last + 3601)["dim_customers"][0] == "build"
    # updates_on: all waits for every input, whatever the time.
    every = verdicts(built, nodes(build_after=BuildAfter(0, all_parents=True)), now=last + 3601)["dim_customers"]
    assert every[0] == "reuse" and "waiting for every input" in every[1]
    # ...but a code change builds at once.
    assert verdicts(built, nodes(code_dim="d2", build_after=hourly), now=last + 1)["dim_customers"][0] == "build"


def test_build_after_and_opt_out_from_the_manifest():
    node = {"unique_id": "model.p.m", "config": {"freshness": {"build_after": {"count": 4, "period": "hour"}}}}
    assert BuildAfter.of(node) == BuildAfter(4 * 3600)
    assert BuildAfter.of({"config": {"meta": {"build_after": {"count": 1, "period": "day", "updates_on": "all"}}}}) == (
        BuildAfter(86400, all_parents=True)
    )
    assert BuildAfter.of({"config": {}}) is None
    with pytest.raises(ValueError, match=r"model\.p\.m: freshness.build_after must have"):
        BuildAfter.of({"unique_id": "model.p.m", "config": {"freshness": {"build_after": {"period": "week"}}}})
    assert opted_out({"config": {"meta": {"state_aware": False}}}) and not opted_out({"meta": {}})


def test_which_runs_are_state_aware():
    assert applies(True, {"dagster/schedule_name": "daily_build_schedule"}, retry=False)
    assert applies(True, {"dagster/backfill": "abc"}, retry=False)
    assert applies(True, {"dagster/sensor_name": "downstream_automation"}, retry=False)
    assert not applies(True, {}, retry=False), "launched by hand: builds what was selected"
    assert applies(True, {"pipeline/state_aware": "on"}, retry=False)
    assert not applies(True, {"dagster/backfill": "abc", "pipeline/state_aware": "off"}, retry=False)
    assert not applies(True, {"dagster/backfill": "abc"}, retry=True), "a retry rebuilds what failed"
    assert not applies(False, {"dagster/backfill": "abc"}, retry=False)


def test_parents_built_earlier_in_the_nodes_own_run_were_seen_and_a_later_run_changes_them(instance):
    """A node built in the same run as its parents, after them, saw them (without asking the event log again); a
    parent materialized by a later run with a new data version is new data."""

    def run(seed_version: str, with_dim: bool) -> None:
        @dg.asset(key=SEED, code_version="c1")
        def seed():
            return dg.MaterializeResult(data_version=dg.DataVersion(seed_version))

        @dg.asset(key=DIM, deps=[SEED], code_version="d1")
        def dim():
            inputs = json.dumps({SEED.to_user_string(): 0})  # what the run's decision read: nothing yet
            return dg.MaterializeResult(metadata={INPUTS: inputs}, data_version=dg.DataVersion("dim-v1"))

        assert dg.materialize([seed, dim] if with_dim else [seed], instance=instance).success

    run("seed-v1", with_dim=True)
    dim_node = [Node(DIM, "d1", frozenset({SEED}))]
    assert verdicts(instance, dim_node)["dim_customers"][0] == "reuse"
    run("seed-v1", with_dim=False)  # materialized again, same version: no change
    assert verdicts(instance, dim_node)["dim_customers"][0] == "reuse"
    run("seed-v2", with_dim=False)
    assert verdicts(instance, dim_node)["dim_customers"] == ("build", "new data in country_regions")
