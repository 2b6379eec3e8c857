"""dbt Cloud as the engine, over real HTTP: the stand-in (devstack/dbt_cloud) speaks dbt Cloud's API and runs
`dbt build` with dbt Core behind it; the code location drives it through dagster-dbt's dbt Cloud integration.

The whole graph runs on it (raw -> dbt Cloud models -> CRM), each fault of the stand-in gives the behaviour the
README states, a failing test in the dbt Cloud run blocks the sync, the polling sensor records a run dbt Cloud
started by itself, and the importer turns the stand-in's scheduled jobs into schedules.
"""

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import httpx
import pytest
import yaml

from devstack import crm as crm_server
from devstack import webhook_receiver
from devstack.dbt_cloud.api import create_app
from devstack.demo_data import generate
from devstack.serve import ServerThread
from pipeline.core.resources import DbtArtifactsResource
from pipeline.core.settings import REPO_ROOT, Settings
from pipeline.transformation.cloud import dbt_cloud_multi_asset, dbt_cloud_workspace
from pipeline.transformation.cloud_jobs import load_schedules
from pipeline.transformation.translator import PipelineTranslator

pytestmark = [pytest.mark.integration, pytest.mark.once]

TOKEN = "dbtc_test_token"
CRM_TOKEN = "crm-token"
SECRET = "whsec-cloud"
SEED = dg.AssetKey("country_regions")
SYNC = dg.AssetKey("crm_contacts_sync")
DIM_CUSTOMERS = dg.AssetKey("dim_customers")
#: dbt Cloud jobs of the stand-in's account, as a team has them: two on a schedule, one CI job without
JOBS = [
    {"name": "Daily marts", "execute_steps": ["dbt source freshness", "dbt build --select marts"], "cron": "0 6 * * *"},
    {"name": "Seeds hourly", "execute_steps": ["dbt seed --select country_regions"], "cron": "15 * * * 1-5"},
    {
        "name": "CI",
        "execute_steps": ["dbt build --select state:modified+"],
        "cron": "0 0 * * *",
        "schedule_enabled": False,
    },
]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, module_env, demo_manifest):
    root = tmp_path_factory.mktemp("cloud")
    summary = generate(root / "landing", seed=11, days=2, customers=40, progress=False)
    warehouse = root / "warehouse.duckdb"
    cloud_app = create_app(
        REPO_ROOT / "dbt_project",
        REPO_ROOT / "dbt_project",
        root / "dbt_cloud",
        TOKEN,
        jobs=JOBS,
        env={"DUCKDB_PATH": str(warehouse)},  # the warehouse the raw loads write, as dbt Cloud's connection
    )
    with (
        ServerThread(cloud_app) as cloud,
        ServerThread(crm_server.create_app(root / "crm.sqlite", token=CRM_TOKEN)) as crm,
        ServerThread(webhook_receiver.create_app(secret=SECRET)) as hooks,
    ):
        env = {
            "LANDING_URL": str(root / "landing"),
            "DUCKDB_PATH": str(warehouse),
            "CRM_URL": crm.url,
            "CRM_TOKEN": CRM_TOKEN,
            "WEBHOOK_URL": f"{hooks.url}/hooks",
            "WEBHOOK_SECRET": SECRET,
            "DBT_CLOUD_ACCOUNT_ID": "1",
            "DBT_CLOUD_PROJECT_ID": "1",
            "DBT_CLOUD_ENVIRONMENT_ID": "1",
            "DBT_CLOUD_TOKEN": TOKEN,
            "DBT_CLOUD_URL": cloud.url,
            "DBT_CLOUD_POLL_INTERVAL_SECONDS": "0.5",
            "DBT_CLOUD_SCHEDULES_PATH": str(root / "dbt_cloud_schedules.yaml"),
        }
        for name, value in env.items():
            module_env.setenv(name, value)
        from pipeline.definitions import defs

        started = time.monotonic()
        loaded = defs()
        yield {
            "root": root,
            "summary": summary,
            "cloud": cloud.url,
            "app": cloud_app,
            "crm": crm.url,
            "defs": loaded,
            "load_seconds": time.monotonic() - started,
            "env": env,
        }


def api(stack, method: str, path: str, **kwargs) -> httpx.Response:
    response = httpx.request(
        method, f"{stack['cloud']}/api/v2/accounts/1/{path}", headers={"Authorization": f"Token {TOKEN}"}, **kwargs
    )
    response.raise_for_status()
    return response


def faults(stack, **config) -> None:
    response = httpx.put(f"{stack['cloud']}/_devstack/faults", json=config, headers={"Authorization": f"Token {TOKEN}"})
    response.raise_for_status()


def crm_contacts(stack) -> int:
    response = httpx.get(f"{stack['crm']}/_devstack/stats", headers={"Authorization": f"Bearer {CRM_TOKEN}"})
    return response.json()["contacts"]


def test_the_graph_is_the_one_dbt_core_builds(stack, module_env):
    """Same keys, checks, groups, owners and lineage as with dbt Core: the syncs, gates and freshness checks need no
    change. (The project was parsed in the stand-in, by a `dbt parse` run, once for the load.)"""
    cloud_graph = stack["defs"].resolve_asset_graph()
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DBT_CLOUD_ACCOUNT_ID")
        for name in ("DBT_CLOUD_PROJECT_ID", "DBT_CLOUD_ENVIRONMENT_ID", "DBT_CLOUD_URL", "DBT_CLOUD_SCHEDULES_PATH"):
            mp.delenv(name)
        mp.delenv("DBT_CLOUD_POLL_INTERVAL_SECONDS")
        from pipeline.definitions import build_defs

        core_graph = build_defs().resolve_asset_graph()
    keys = core_graph.get_all_asset_keys()
    assert cloud_graph.get_all_asset_keys() == keys
    # Every dbt Core check, plus the relationships tests dbt Core's two steps (partitioned by landing day or not)
    # split between them, which one dbt Cloud build holds.
    assert core_graph.asset_check_keys <= cloud_graph.asset_check_keys
    extra = cloud_graph.asset_check_keys - core_graph.asset_check_keys
    assert all(k.name.startswith("relationships_") and k.name.endswith("ref_fct_orders_") for k in extra)
    for key in keys:
        cloud, core = cloud_graph.get(key), core_graph.get(key)
        assert (cloud.parent_keys, cloud.group_name, cloud.owners) == (core.parent_keys, core.group_name, core.owners)
    assert cloud_graph.get(dg.AssetKey("stg_shop__orders")).parent_keys == {dg.AssetKey(["raw", "orders"])}
    assert "dbtcloud" in cloud_graph.get(DIM_CUSTOMERS).kinds
    runs = api(stack, "GET", "runs", params={"limit": 100, "include_related": "trigger"}).json()["data"]
    assert [r["trigger"]["steps_override"] for r in runs] == [["dbt parse"]], "one parse run for the load"


def test_materialize_all_runs_raw_then_dbt_cloud_then_the_crm_sync(stack):
    summary = stack["summary"]
    result = (
        stack["defs"]
        .resolve_implicit_global_asset_job_def()
        .execute_in_process(
            instance=dg.DagsterInstance.ephemeral(),
            tags={
                "dagster/asset_partition_range_start": summary["first_day"],
                "dagster/asset_partition_range_end": summary["last_day"],
            },
        )
    )
    assert result.success
    mats = {e.asset_key: e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert mats[dg.AssetKey(["raw", "orders"])]["rows_loaded"].value == summary["rows"]["orders"]
    dim = mats[DIM_CUSTOMERS]
    assert dim["run_url"].value.startswith(stack["cloud"]) and dim["status"].value == "success"
    with duckdb.connect(str(stack["root"] / "warehouse.duckdb"), read_only=True) as conn:
        customers = conn.execute("select count(*) from dim_customers").fetchone()[0]
    assert customers == conn_count(stack, "select count(distinct customer_id) from raw.customers")
    assert mats[SYNC]["sent"].value == customers and crm_contacts(stack) == customers
    # Every blocking dbt test ran in the dbt Cloud run and came back as a passed check.
    evaluations = [e for e in result.get_asset_check_evaluations() if "freshness" not in e.check_name]
    graph = stack["defs"].resolve_asset_graph()
    dbt_checks = {
        k for k in graph.asset_check_keys if "dbtcloud" in graph.get(k.asset_key).kinds and "freshness" not in k.name
    }
    assert dbt_checks <= {dg.AssetCheckKey(e.asset_key, e.check_name) for e in evaluations}
    assert all(e.passed for e in evaluations if e.severity == dg.AssetCheckSeverity.ERROR)
    # The run's artifacts are kept like dbt Core's: by Dagster run and attempt, and as the latest state.
    artifacts = Path(os.environ["DBT_ARTIFACTS_URL"])
    for name in ("manifest.json", "run_results.json"):
        assert (artifacts / "runs" / result.run_id / "dbt_cloud_build" / "attempt-0" / name).exists()
        assert (artifacts / "latest" / name).exists()
    run_results = json.loads((artifacts / "latest" / "run_results.json").read_text())
    assert run_results["metadata"]["env"]["DBT_CLOUD_RUN_ID"]


def conn_count(stack, sql: str) -> int:
    with duckdb.connect(str(stack["root"] / "warehouse.duckdb"), read_only=True) as conn:
        return conn.execute(sql).fetchone()[0]


#: the step's retry policy, without its delay
RETRY_AT_ONCE = dg.RetryPolicy(max_retries=1)


def build_seed(stack, tmp_path: Path, **overrides) -> dg.ExecuteInProcessResult:
    """Materialize the seed alone (a cheap `dbt build`) through the dbt Cloud step with these settings."""
    cloud = dataclasses.replace(Settings.from_env().dbt_cloud, **overrides)
    asset = dbt_cloud_multi_asset(dbt_cloud_workspace(cloud), cloud, PipelineTranslator(), RETRY_AT_ONCE)
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [asset],
        selection=[SEED],
        resources={"dbt_artifacts": DbtArtifactsResource(url=str(tmp_path / "artifacts"))},
        instance=instance,
        raise_on_error=False,
    )
    LOGS[result.run_id] = "\n".join(entry.user_message for entry in instance.all_logs(result.run_id))
    return result


#: what each run's steps logged (context.log), as the UI shows it
LOGS: dict[str, str] = {}


def status_of(evaluation: dg.AssetCheckEvaluation) -> str:
    """dbt's status of the test a check result comes from (`pass`, `fail`, ..., `skipped`)."""
    status = evaluation.metadata["status"]
    return getattr(status, "value", status)


def failure_of(result: dg.ExecuteInProcessResult) -> str:
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    return failure.step_failure_data.user_failure_data.description


def logs_of(result: dg.ExecuteInProcessResult) -> str:
    return LOGS[result.run_id]


def test_a_run_that_errors_before_dbt_fails_the_attempt_with_its_url_and_step_and_is_retried(stack, tmp_path):
    faults(stack, run_error=1)
    result = build_seed(stack, tmp_path)
    assert result.success and [e.asset_key for e in result.get_asset_materialization_events()] == [SEED]
    (retry,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    message = retry.event_specific_data.error.to_string()
    assert "dbt Cloud run " in message and "ended Error" in message
    assert f"{stack['cloud']}/" in message
    assert "No run_results.json: the run ended before dbt built anything." in message
    assert "Clone git repository" in message


def test_a_run_cancelled_in_dbt_cloud_fails_without_retry(stack, tmp_path):
    faults(stack, cancel_runs=1)
    message = failure_of(build_seed(stack, tmp_path))
    assert "ended Cancelled" in message and "Cancelled in dbt Cloud: not retried." in message


def test_a_run_past_the_timeout_is_cancelled(stack, tmp_path):
    faults(stack, slow_seconds=30)
    try:
        started = time.monotonic()
        message = failure_of(build_seed(stack, tmp_path, timeout_seconds=3.0))
        assert time.monotonic() - started < 20
    finally:
        faults(stack)
    assert "did not end within 3 s (DBT_CLOUD_TIMEOUT_SECONDS), so it was cancelled" in message
    run_id = int(message.split("dbt Cloud run ")[1].split()[0])
    assert api(stack, "GET", f"runs/{run_id}").json()["data"]["status"] == 30


def test_transient_api_errors_are_retried(stack, tmp_path):
    faults(stack, poll_500=2, rate_limit=2)
    result = build_seed(stack, tmp_path)
    assert result.success
    assert [e.asset_key for e in result.get_asset_materialization_events()] == [SEED]


def test_a_refused_token_fails_at_once_naming_the_setting(stack, tmp_path):
    faults(stack, unauthorized=True)
    try:
        started = time.monotonic()
        message = failure_of(build_seed(stack, tmp_path))
        elapsed = time.monotonic() - started
    finally:
        faults(stack)
    assert "dbt Cloud refused the token (401" in message and "set DBT_CLOUD_TOKEN" in message
    assert "Not retried." in message and elapsed < 5


def start_slow_run_of_dagster_s_job(stack, seconds: float) -> int:
    """A run of the job Dagster triggers, started by someone else (in dbt Cloud's UI, say) and still running."""
    faults(stack, slow_seconds=seconds)
    jobs = api(stack, "GET", "jobs", params={"project_id": 1, "environment_id": 1}).json()["data"]
    job_id = next(j["id"] for j in jobs if j["name"].startswith("DAGSTER_ADHOC_JOB__"))
    body = {"cause": "Started by a person in dbt Cloud", "steps_override": ["dbt seed --select country_regions"]}
    run = api(stack, "POST", f"jobs/{job_id}/run", json=body).json()["data"]
    faults(stack)
    return run["id"]


def wait_for_run(stack, run_id: int) -> dict:
    deadline = time.monotonic() + 90
    while (run := api(stack, "GET", f"runs/{run_id}").json()["data"])["status"] < 10:
        assert time.monotonic() < deadline, f"run {run_id} did not end"
        time.sleep(0.5)
    return run


def test_a_run_already_in_progress_is_skipped_with_the_reason(stack, tmp_path):
    other = start_slow_run_of_dagster_s_job(stack, 4)
    result = build_seed(stack, tmp_path, if_running="skip")
    assert result.success and not result.get_asset_materialization_events()
    assert "already has a run in progress, and DBT_CLOUD_IF_RUNNING=skip" in logs_of(result)
    runs = api(stack, "GET", "runs", params={"order_by": "-id", "limit": 1}).json()["data"]
    assert runs[0]["id"] == other, "no second run was queued"
    assert wait_for_run(stack, other)["status"] == 10


def test_a_run_already_in_progress_is_waited_for(stack, tmp_path):
    other = start_slow_run_of_dagster_s_job(stack, 3)
    result = build_seed(stack, tmp_path, if_running="wait")
    assert result.success and [e.asset_key for e in result.get_asset_materialization_events()] == [SEED]
    assert "already has a run in progress: waiting for it to end before triggering" in logs_of(result)
    assert api(stack, "GET", f"runs/{other}").json()["data"]["status"] == 10, "it ended before ours started"


def land_orders_with_an_unknown_channel(stack) -> str:
    day = stack["summary"]["last_day"]
    target = stack["root"] / "landing" / "shop" / day / "orders.jsonl"
    loaded = [*(stack["root"] / "landing" / "processed").rglob(f"shop/{day}/orders.jsonl"), target]
    rows = [json.loads(line) for line in next(p for p in loaded if p.exists()).read_text().splitlines()]
    rows[0] = {**rows[0], "sales_channel": "fax", "updated_at": f"{day} 23:59:00"}
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return day


def test_a_failing_test_in_the_dbt_cloud_run_blocks_the_sync(stack):
    day = land_orders_with_an_unknown_channel(stack)
    defs, instance = stack["defs"], dg.DagsterInstance.ephemeral()
    job = defs.resolve_implicit_global_asset_job_def()
    before = crm_contacts(stack)
    graph = defs.resolve_asset_graph()
    dbt_keys = {k for k in graph.materializable_asset_keys if "dbtcloud" in graph.get(k).kinds}
    keys = {dg.AssetKey(["raw", "orders"]), *dbt_keys, SYNC}
    result = job.get_subset(asset_selection=keys).execute_in_process(
        instance=instance, partition_key=day, raise_on_error=False
    )
    message = failure_of(result)
    assert "test.tidewater.accepted_values_stg_shop__orders_sales_channel__web__mobile_app__marketplace" in message
    assert "(fail): Got 1 result, configured to fail if != 0" in message
    assert "Only dbt tests failed: not retried, the data has to change first." in message
    started = {e.step_key for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START}
    assert not any(step.startswith("crm_contacts_sync") for step in started), "the sync did not start"
    evaluations = result.get_asset_check_evaluations()
    failed = [e for e in evaluations if not e.passed]
    assert any(e.check_name.startswith("accepted_values_stg_shop__orders_sales_channel") for e in failed)
    # The tests dbt skipped (their models were skipped) are not recorded, as on dbt Core: not as failed checks.
    dbt_tests = [e for e in evaluations if "status" in e.metadata]  # not the landing contract, not freshness
    assert len(dbt_tests) > 10
    assert {status_of(e) for e in dbt_tests} <= {"pass", "fail", "warn", "error"}
    assert not any(e.asset_key == DIM_CUSTOMERS for e in evaluations), "dim_customers was not built: no results"
    # A run of the sync alone is refused by its gate: the failed check is upstream of dim_customers.
    alone = job.get_subset(asset_selection={SYNC}).execute_in_process(instance=instance, raise_on_error=False)
    assert "blocking check(s) failed on dim_customers or upstream" in failure_of(alone)
    assert crm_contacts(stack) == before


def test_the_polling_sensor_records_a_run_dbt_cloud_started(stack):
    jobs = api(stack, "GET", "jobs", params={"project_id": 1, "environment_id": 1}).json()["data"]
    seeds_job = next(j["id"] for j in jobs if j["name"] == "Seeds hourly")
    run = api(stack, "POST", f"jobs/{seeds_job}/run", json={"cause": "Scheduled"}).json()["data"]
    assert wait_for_run(stack, run["id"])["status"] == 10
    defs = stack["defs"]
    (sensor,) = [s for s in defs.sensors if s.name.startswith("dbt_cloud_1_1_1")]
    instance = dg.DagsterInstance.ephemeral()
    context = dg.build_sensor_context(instance=instance, repository_def=defs.get_repository_def())
    result = sensor(context)
    built = [e for e in result.asset_events if isinstance(e, dg.AssetMaterialization)]
    assert [e.asset_key for e in built] == [SEED]
    assert f"/runs/{run['id']}" in built[0].metadata["run_url"].value


def test_a_test_failing_in_a_run_dbt_cloud_started_reaches_the_sync_s_gate(stack):
    """The polling sensor records the run's test results as well as its materializations (dagster-dbt's records
    only the latter): a test that failed in a run dbt Cloud's scheduler started blocks the sync."""
    day = land_orders_with_an_unknown_channel(stack)
    defs, instance = stack["defs"], dg.DagsterInstance.ephemeral()
    job = defs.resolve_implicit_global_asset_job_def()
    raw = job.get_subset(asset_selection={dg.AssetKey(["raw", "orders"])})
    assert raw.execute_in_process(instance=instance, partition_key=day).success
    jobs = api(stack, "GET", "jobs", params={"project_id": 1, "environment_id": 1}).json()["data"]
    daily = next(j["id"] for j in jobs if j["name"] == "Daily marts")
    body = {"cause": "Scheduled", "steps_override": ["dbt build --select stg_shop__orders+"]}
    run = api(stack, "POST", f"jobs/{daily}/run", json=body).json()["data"]
    assert wait_for_run(stack, run["id"])["status"] == 20, "the run errors: a test failed"
    (sensor,) = [s for s in defs.sensors if s.name.startswith("dbt_cloud_1_1_1")]
    result = sensor(dg.build_sensor_context(instance=instance, repository_def=defs.get_repository_def()))
    built = [e.asset_key for e in result.asset_events if isinstance(e, dg.AssetMaterialization)]
    assert any(k.path[-1] == "stg_shop__orders" for k in built), built
    checks = [e for e in result.asset_events if isinstance(e, dg.AssetCheckEvaluation)]
    failed = [e.check_name for e in checks if not e.passed]
    assert any(name.startswith("accepted_values_stg_shop__orders_sales_channel") for name in failed), failed
    assert len(checks) > len(failed), "the passing tests are recorded too"
    assert {status_of(e) for e in checks} <= {"pass", "fail", "warn", "error"}, "none dbt skipped"
    last_build = max(i for i, e in enumerate(result.asset_events) if isinstance(e, dg.AssetMaterialization))
    assert all(isinstance(e, dg.AssetCheckEvaluation) for e in result.asset_events[last_build + 1 :])
    for event in result.asset_events:  # as the sensor daemon stores them
        instance.report_runless_asset_event(event)
    before = crm_contacts(stack)
    alone = job.get_subset(asset_selection={SYNC}).execute_in_process(instance=instance, raise_on_error=False)
    assert "blocking check(s) failed on dim_customers or upstream" in failure_of(alone)
    assert crm_contacts(stack) == before


def test_the_importer_turns_the_scheduled_jobs_into_schedules(stack, demo_manifest):
    output = stack["root"] / "dbt_cloud_schedules.yaml"
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.transformation.cloud_jobs", "--output", str(output)],
        env={**os.environ, **stack["env"]},
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=True,
    )
    assert "Wrote 2 schedules" in done.stdout, done.stdout
    assert "'CI' (0 0 * * *) not imported: its schedule is off in dbt Cloud" in done.stdout
    assert "not imported: the job Dagster triggers" in done.stdout
    assert "(left out: dbt source freshness); its schedule is ON in dbt Cloud: turn it off there" in done.stdout
    schedules = yaml.safe_load(output.read_text())["schedules"]
    assert sorted(schedules) == ["dbt_cloud_daily_marts", "dbt_cloud_seeds_hourly"]
    assert schedules["dbt_cloud_daily_marts"]["select"] == "marts"
    manifest = json.loads(demo_manifest.read_text())
    jobs, loaded = load_schedules(output, manifest, PipelineTranslator())
    by_name = {s.name: s for s in loaded}
    assert by_name["dbt_cloud_daily_marts_schedule"].cron_schedule == "0 6 * * *"
    assert by_name["dbt_cloud_seeds_hourly_schedule"].execution_timezone == "UTC"
