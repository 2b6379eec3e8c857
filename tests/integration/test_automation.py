"""Schedules and event-driven chaining, evaluated against a real instance (no daemon, no clock waits)."""

from contextlib import ExitStack
from datetime import UTC, datetime

import dagster as dg
import pytest
from dagster._core.definitions.automation_tick_evaluation_context import build_run_requests

from pipeline.automation.conditions import AUTOMATION_SENSOR
from pipeline.automation.schedules import DAILY_BUILD_JOB

RAW = [dg.AssetKey(["raw", t]) for t in ("customers", "products", "orders", "order_items", "payments")]
SYNCS = {dg.AssetKey("crm_contacts_sync"), dg.AssetKey("segment_summary_webhook"), dg.AssetKey("slack_run_summary")}


@pytest.fixture(scope="module")
def load(module_env, demo_manifest, tmp_path_factory):
    root = tmp_path_factory.mktemp("automation")
    module_env.setenv("DUCKDB_PATH", str(root / "w.duckdb"))
    module_env.setenv("LANDING_URL", str(root / "landing"))

    def _load(**env):
        for name, value in env.items():
            module_env.setenv(name, value)
        from pipeline.definitions import defs

        return defs()

    return _load


@pytest.fixture
def stack():
    with ExitStack() as exit_stack:
        yield exit_stack


def loaded(instance, key, partition=None):
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key, partition=partition))


def built(defs):
    """An instance where the one-off "Materialize all" has run: every unpartitioned asset exists (partitioned ones
    are judged per partition, and automation never asks for all of theirs)."""
    instance = dg.DagsterInstance.ephemeral()
    graph = defs.resolve_asset_graph()
    for key in graph.materializable_asset_keys:
        if graph.get(key).partitions_def is None:
            loaded(instance, key)
    return instance


def test_nothing_runs_on_parents_that_were_never_built(load):
    """A fresh deployment where only the seed was built (by hand) and then a customers file loaded: the staging view
    over it runs, but not dim_customers, whose other parents do not exist yet (its dbt build would fail)."""
    defs = load()
    instance = dg.DagsterInstance.ephemeral()
    cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor
    loaded(instance, dg.AssetKey("country_regions"))
    loaded(instance, RAW[0], "2026-11-01")
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    requested = {k for k in defs.resolve_asset_graph().get_all_asset_keys() if result.get_requested_partitions(k)}
    assert dg.AssetKey("stg_shop__customers") in requested
    assert dg.AssetKey("dim_customers") not in requested and not SYNCS & requested


def runs_requested(defs, result):
    """The run requests the automation sensor would launch for this evaluation (its own grouping code, with its own
    choice of emitting backfills)."""
    graph = defs.resolve_asset_graph()
    return build_run_requests(
        result._requested_subsets,  # noqa: SLF001
        graph,
        run_tags=None,
        emit_backfills=AUTOMATION_SENSOR.emit_backfills,
    )


def runs_of(defs, request) -> list[tuple[str | None, set[dg.AssetKey]]]:
    """The runs a request becomes: a run request is one; an (automation) backfill request is one run per group of
    assets with the same partitions and single-run policy, launched in dependency order by the backfill daemon."""
    if request.asset_graph_subset is None:
        return [(request.partition_key, set(request.asset_selection))]
    graph = defs.resolve_asset_graph()
    groups: dict[tuple, set[dg.AssetKey]] = {}
    subset = request.asset_graph_subset
    for key in subset.asset_keys:
        node = graph.get(key)
        keys = subset.get_partitions_subset(key).get_partition_keys() if node.partitions_def else []
        span = (min(keys), max(keys)) if keys else None
        groups.setdefault((node.partitions_def is not None, span), set()).add(key)
    return [(f"{span[0]}...{span[1]}" if span else None, keys) for (_, span), keys in groups.items()]


def drain(defs, instance, cursor, max_ticks: int = 10):
    """Evaluate automation tick after tick, completing every requested run before the next tick (as if each had
    succeeded), until a tick requests nothing. Returns the runs, tick by tick."""
    graph = defs.resolve_asset_graph()
    ticks = []
    for _ in range(max_ticks):
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        cursor = result.cursor
        runs = [run for request in runs_requested(defs, result) for run in runs_of(defs, request)]
        if not runs:
            return ticks, cursor
        ticks.append(runs)
        for key in graph.materializable_asset_keys:
            partitions = result.get_requested_partitions(key)
            if graph.get(key).partitions_def is None:
                if partitions:
                    loaded(instance, key)
            else:
                for partition in sorted(p for p in partitions if p is not None):
                    loaded(instance, key, partition)
    raise AssertionError(f"automation still requests runs after {max_ticks} ticks: {ticks[-1]}")


def test_one_arrival_gives_one_downstream_run_and_no_storm(load):
    defs = load()
    instance = built(defs)
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert first.total_requested == 0, "a fresh deployment waits for data instead of building everything"

    loaded(instance, RAW[0], "2026-11-01")  # the landing sensor's run loaded one file
    second = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    requested = {k for k in defs.resolve_asset_graph().get_all_asset_keys() if second.get_requested_partitions(k)}
    assert dg.AssetKey("stg_shop__customers") in requested and dg.AssetKey("dim_customers") in requested
    assert requested >= SYNCS, "dbt and the syncs downstream of the load are requested together"
    assert not requested & set(RAW), "raw tables load on arrival, not on automation"
    assert dg.AssetKey("stg_billing__payments") not in requested, "nothing outside the load's downstream"
    [run] = runs_requested(defs, second)
    assert set(run.asset_selection) >= SYNCS

    third = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=second.cursor)
    assert third.total_requested == 0, "requested once: the next tick does not ask again"


def test_a_fresh_deployment_builds_its_seed_and_nothing_else_until_data_lands(load):
    defs = load()
    instance = dg.DagsterInstance.ephemeral()
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    requested = {k for k in defs.resolve_asset_graph().get_all_asset_keys() if first.get_requested_partitions(k)}
    assert requested == {dg.AssetKey("country_regions")}, "only the seed: everything else waits for data"
    loaded(instance, dg.AssetKey("country_regions"))
    second = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    assert second.total_requested == 0, "built once, not again"


def test_landing_files_alone_carry_a_fresh_deployment_to_the_crm_in_few_runs(load):
    """Issue 13: the demo's two-week backlog of every table lands on a new deployment (the arrival sensor loads it
    in one run). Automation builds the seed, the partitioned chain for all fourteen days as one run (one backfill,
    single-run policy), and everything else including the syncs, without anybody materializing by hand."""
    defs = load()
    instance = dg.DagsterInstance.ephemeral()
    ticks, cursor = drain(defs, instance, None)  # a fresh deployment: the seed
    assert [[keys for _, keys in runs] for runs in ticks] == [[{dg.AssetKey("country_regions")}]]
    days = [f"2026-11-{d:02d}" for d in range(1, 15)]
    for key in RAW:
        for day in days:
            loaded(instance, key, day)

    ticks, _ = drain(defs, instance, cursor)

    runs = [run for tick in ticks for run in tick]
    # The chain's backfill run, the unpartitioned staging of customers (requested in the same tick), then the marts
    # and syncs once the chain has landed: 3 runs, where one run per day and table went before (57 for the demo).
    assert len(runs) == 3, runs
    [chain] = [keys for span, keys in runs if span is not None]
    assert [span for span, _ in runs if span is not None] == ["2026-11-01...2026-11-14"]
    assert dg.AssetKey("fct_orders") in chain
    built_keys = {key for _, keys in runs for key in keys}
    assert built_keys >= SYNCS | {dg.AssetKey("dim_customers"), dg.AssetKey("mart_customer_segments")}


def names(keys):
    return sorted(k.to_user_string() for k in keys)


def test_an_orders_file_flows_through_its_day_then_the_marts_in_two_ordered_runs(load):
    """fct_orders is incremental, so it and the models upstream of it are daily-partitioned like the raw tables. An
    orders file for a past day gives one run of that day's partition of the chain, and once it has finished, one
    run of everything unpartitioned downstream (marts, syncs); then nothing more."""
    defs = load()
    graph = defs.resolve_asset_graph()
    partitioned = {k for k in graph.get_all_asset_keys() if graph.get(k).partitions_def and k.path[0] != "raw"}
    assert names(partitioned) == [
        "fct_orders",
        "int_order_items__enriched",
        "int_orders__items_summarised",
        "int_orders__payments_summarised",
        "stg_billing__payments",
        "stg_shop__order_items",
        "stg_shop__orders",
        "stg_shop__products",
    ]
    instance = built(defs)
    cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor
    loaded(instance, RAW[2], "2026-11-03")  # an orders file, landed late
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    [run] = runs_requested(defs, first)
    assert run.partition_key == "2026-11-03"
    assert names(run.asset_selection) == [
        "fct_orders",
        "int_order_items__enriched",
        "int_orders__items_summarised",
        "stg_shop__orders",
    ]
    for key in run.asset_selection:  # that run finished
        loaded(instance, key, "2026-11-03")
    second = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    [run] = runs_requested(defs, second)
    assert run.partition_key is None and set(run.asset_selection) >= SYNCS
    assert {dg.AssetKey("fct_daily_revenue"), dg.AssetKey("dim_customers")} <= set(run.asset_selection)
    for key in run.asset_selection:
        loaded(instance, key)
    third = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=second.cursor)
    assert third.total_requested == 0, "every asset once per arrival"


def test_customers_and_orders_together_build_dim_customers_after_the_orders_partition(load):
    """Both files of a day loaded at once: the orders partition's run is requested, and dim_customers (which reads
    it) waits for that run to finish instead of racing it in a run of its own (on a fresh warehouse that run fails:
    the partitioned views do not exist yet)."""
    defs = load()
    instance = built(defs)
    cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor
    loaded(instance, RAW[0], "2026-11-04")  # customers
    loaded(instance, RAW[2], "2026-11-04")  # orders
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    runs = runs_requested(defs, first)
    [partitioned] = [run for run in runs if run.partition_key == "2026-11-04"]
    assert dg.AssetKey("fct_orders") in partitioned.asset_selection
    requested = {key for run in runs for key in run.asset_selection}
    assert dg.AssetKey("stg_shop__customers") in requested
    assert dg.AssetKey("dim_customers") not in requested and not SYNCS & requested
    for run in runs:  # those runs finished
        for key in run.asset_selection:
            loaded(instance, key, run.partition_key)
    second = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    [run] = runs_requested(defs, second)
    assert dg.AssetKey("dim_customers") in run.asset_selection and set(run.asset_selection) >= SYNCS
    for key in run.asset_selection:
        loaded(instance, key)
    third = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=second.cursor)
    assert third.total_requested == 0


def test_partitioned_dbt_models_can_be_switched_off(load):
    defs = load(DBT_PARTITION_INCREMENTAL="0")
    graph = defs.resolve_asset_graph()
    assert not [k for k in graph.get_all_asset_keys() if graph.get(k).partitions_def and k.path[0] != "raw"]
    load(DBT_PARTITION_INCREMENTAL="1")


def test_a_burst_of_arrivals_waits_for_the_last_load_and_gives_one_run(load):
    defs = load()
    instance = built(defs)
    cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor
    # Four tables loaded; the fifth load is still running (a run that planned raw/payments has started).
    for key in RAW[:4]:
        loaded(instance, key, "2026-11-02")
    job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection={RAW[4]})
    instance.create_run_for_job(
        job, status=dg.DagsterRunStatus.STARTED, tags={"dagster/partition": "2026-11-02"}, asset_selection={RAW[4]}
    )
    waiting = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    held = {dg.AssetKey("stg_billing__payments"), dg.AssetKey("fct_payments"), dg.AssetKey("dim_customers")}
    assert not any(waiting.get_requested_partitions(k) for k in held), "waits while an upstream load runs"


def test_daily_build_covers_the_graph_by_selection_in_the_configured_zone(load, stack):
    defs = load(PIPELINE_TIMEZONE="America/New_York", DAILY_BUILD_CRON="30 5 * * *")
    schedule = defs.resolve_schedule_def("daily_build_schedule")
    repo = defs.get_repository_def()
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("30 5 * * *", "America/New_York")
    job = defs.resolve_job_def(DAILY_BUILD_JOB)
    graph_keys = {k for k in defs.resolve_asset_graph().materializable_asset_keys}
    assert set(job.asset_layer.executable_asset_keys) == graph_keys, "every materializable asset, by selection"

    instance = stack.enter_context(dg.instance_for_test())  # schedule contexts need a persistent instance
    # 05:30 in New York on Nov 24 is 10:30 UTC: the build loads New York's yesterday, Nov 23.
    tick = datetime(2026, 11, 24, 10, 30, tzinfo=UTC)
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=tick, repository_def=repo) as context:
        request = schedule.evaluate_tick(context).run_requests[0]
    assert request.partition_key == "2026-11-23"
    assert request.tags["pipeline/timezone"] == "America/New_York"
    # Just after midnight UTC it is still the evening before in New York: yesterday there is Nov 22.
    late = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=late, repository_def=repo) as context:
        assert schedule.evaluate_tick(context).run_requests[0].partition_key == "2026-11-22"


def test_a_tick_is_skipped_while_the_previous_daily_build_runs(load, stack):
    defs = load()
    schedule = defs.resolve_schedule_def("daily_build_schedule")
    repo = defs.get_repository_def()
    instance = stack.enter_context(dg.instance_for_test())
    running = instance.create_run_for_job(defs.resolve_job_def(DAILY_BUILD_JOB), status=dg.DagsterRunStatus.STARTED)
    with dg.build_schedule_context(
        instance=instance, scheduled_execution_time=datetime.now(UTC), repository_def=repo
    ) as context:
        result = schedule.evaluate_tick(context)
    assert not result.run_requests
    assert running.run_id in result.skip_message and "still started" in result.skip_message

    instance.report_run_failed(running)
    with dg.build_schedule_context(
        instance=instance, scheduled_execution_time=datetime.now(UTC), repository_def=repo
    ) as context:
        assert len(schedule.evaluate_tick(context).run_requests) == 1, "runs again once the previous one ended"
