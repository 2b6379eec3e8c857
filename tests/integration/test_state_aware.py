"""State-aware runs over the demo graph: a second build on unchanged data rebuilds nothing and the sync sends
nothing; a new file rebuilds only the models downstream of its table; a run launched by hand builds its selection."""

import shutil

import dagster as dg
import duckdb
import pytest

from devstack import crm as crm_server
from devstack import webhook_receiver
from devstack.demo_data import generate
from devstack.serve import ServerThread
from pipeline.transformation.state import RUN_TAG, STATE

pytestmark = pytest.mark.integration

TOKEN = "t"
SYNC = dg.AssetKey("crm_contacts_sync")


@pytest.fixture(scope="module")
def stack(tmp_path_factory, module_env, demo_manifest):
    root = tmp_path_factory.mktemp("state")
    summary = generate(root / "export", seed=11, days=3, customers=40, progress=False)
    shutil.copytree(root / "export", root / "landing")
    with (
        ServerThread(crm_server.create_app(root / "crm.sqlite", token=TOKEN)) as crm,
        ServerThread(webhook_receiver.create_app(secret="s")) as hooks,
    ):
        module_env.setenv("WEBHOOK_URL", f"{hooks.url}/hooks")
        module_env.setenv("WEBHOOK_SECRET", "s")
        module_env.setenv("LANDING_URL", str(root / "landing"))
        module_env.setenv("DUCKDB_PATH", str(root / "warehouse.duckdb"))
        module_env.setenv("CRM_URL", crm.url)
        module_env.setenv("CRM_TOKEN", TOKEN)
        module_env.delenv("SLACK_WEBHOOK_URL", raising=False)
        from pipeline.definitions import defs

        yield {"root": root, "summary": summary, "defs": defs(), "instance": dg.DagsterInstance.ephemeral()}


def build_all(stack, **tags):
    """The daily build's shape over the demo's days: every asset, the raw partitions of the range."""
    first, last = stack["summary"]["first_day"], stack["summary"]["last_day"]
    result = (
        stack["defs"]
        .resolve_implicit_global_asset_job_def()
        .execute_in_process(
            instance=stack["instance"],
            tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last, **tags},
        )
    )
    assert result.success
    return result


def dbt_states(result, why: bool = False) -> dict[str, str]:
    """dbt node -> built / reused (with `why`: and the reason), from the run's materializations."""
    states = {}
    for event in result.get_asset_materialization_events():
        meta = event.materialization.metadata
        if STATE in meta:
            state = meta[STATE].value + (f": {meta['dbt_state_reason'].value}" if why else "")
            states[event.materialization.asset_key.to_user_string()] = state
    return states


def sync_meta(result) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.materialization.asset_key == SYNC]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_an_unchanged_build_rebuilds_nothing_and_a_new_file_only_its_cone(stack):
    first = build_all(stack, **{RUN_TAG: "on"})
    built = dbt_states(first)
    assert built and set(built.values()) == {"built"}, "a first build has nothing to reuse"
    assert sync_meta(first)["sent"] > 0

    # The same files loaded again (the daily build re-reads processed/): same data versions, nothing to rebuild.
    second = build_all(stack, **{RUN_TAG: "on"})
    states = dbt_states(second)
    assert set(states) == set(built) and set(states.values()) == {"reused"}, dbt_states(second, why=True)
    assert sync_meta(second)["sent"] == 0 and sync_meta(second)["planned"] == 0
    reused = {
        e.materialization.asset_key: e.materialization.metadata for e in second.get_asset_materialization_events()
    }[dg.AssetKey("dim_customers")]
    assert reused["dbt_state_built_in_run"].value == first.run_id, "a reused node names the run that built it"
    logs = [e.user_message for e in stack["instance"].all_logs(second.run_id) if "State-aware:" in e.user_message]
    assert len(logs) == 2 and all("0 to build" in line for line in logs), logs  # the two dbt steps
    assert any("Nothing to build" in e.user_message for e in stack["instance"].all_logs(second.run_id))

    # One new customers file on the last day: only what reads raw.customers is rebuilt.
    last_day = stack["summary"]["last_day"]
    export = next(p for p in (stack["root"] / "export" / "shop" / last_day).glob("customers.*"))
    landed = stack["root"] / "landing" / "shop" / last_day / export.name
    lines = export.read_text().splitlines()
    row = lines[1].split(",")
    row[0], row[1] = "999999", "new.customer@example.com"
    landed.write_text("\n".join([*lines, ",".join(row)]) + "\n")  # the day's file again, with one customer more
    third = build_all(stack, **{RUN_TAG: "on"})
    states = dbt_states(third)
    rebuilt = {k for k, v in states.items() if v == "built"}
    graph = stack["defs"].resolve_asset_graph()
    cone = {k.to_user_string() for k in dg.AssetSelection.assets(["raw", "customers"]).downstream().resolve(graph)}
    assert rebuilt and rebuilt <= cone, rebuilt - cone
    assert {"stg_shop__customers", "dim_customers"} <= rebuilt
    assert {k for k, v in states.items() if v == "reused"} == set(states) - rebuilt
    assert sync_meta(third)["sent"] == 1, "the new customer, and nothing else"
    with duckdb.connect(str(stack["root"] / "warehouse.duckdb"), read_only=True) as conn:
        assert conn.execute("select count(*) from dim_customers where customer_id = 999999").fetchone()[0] == 1


def test_a_run_launched_by_hand_builds_its_selection(stack):
    job = (
        stack["defs"].resolve_implicit_global_asset_job_def().get_subset(asset_selection={dg.AssetKey("dim_customers")})
    )
    result = job.execute_in_process(instance=stack["instance"])
    assert result.success
    assert dbt_states(result) == {"dim_customers": "built"}
    reasons = [e.materialization.metadata["dbt_state_reason"].value for e in result.get_asset_materialization_events()]
    assert reasons == ["a run launched by hand builds its selection"]
