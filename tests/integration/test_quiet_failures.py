"""A quarantined file reads as what it is, an expected data error: the UI (through Dagster's GraphQL API, which is
what it reads, served from the code location running in its own code server) shows the failed step's message and
metadata without a stack trace and `landing_contract` failed with its metadata — also when the file re-delivers a
day loaded before and later days have loaded since — and the run-failure alert quotes the message, no traceback.
"""

import json

import dagster as dg
import httpx
import pytest
from dagster_graphql.test.utils import define_out_of_process_workspace, execute_dagster_graphql

from devstack import webhook_receiver
from devstack.serve import ServerThread
from pipeline import fastpaths
from pipeline.core.settings import REPO_ROOT

RAW_CUSTOMERS = dg.AssetKey(["raw", "customers"])
HEADER = "customer_id,email,first_name,last_name,country_code,signup_channel,marketing_opt_in,created_at,updated_at"
CHECK_QUERY = """
{
  assetNodeOrError(assetKey: {path: ["raw", "customers"]}) {
    ... on AssetNode {
      assetChecksOrError {
        ... on AssetChecks {
          checks {
            name
            executionForLatestMaterialization {
              status runId
              evaluation { success description metadataEntries { label ... on IntMetadataEntry { intValue } } }
            }
          }
        }
      }
    }
  }
}
"""
FAILURE_QUERY = """
query ($runId: ID!) {
  logsForRun(runId: $runId) {
    ... on EventConnection {
      events {
        __typename
        ... on ExecutionStepFailureEvent {
          message errorSource
          error { message stack errorChain { error { message } } }
          failureMetadata { metadataEntries { label } }
        }
      }
    }
  }
}
"""


def customers(*ids: int) -> str:
    rows = [f"{i},c{i}@example.com,Ann,Lee,US,organic,true,2026-11-01 10:00:00,2026-11-01 10:00:00" for i in ids]
    return "\n".join([HEADER, *rows]) + "\n"


@pytest.fixture(scope="module")
def stack(module_env, demo_manifest, tmp_path_factory):
    root = tmp_path_factory.mktemp("quiet_failures")
    (root / "landing").mkdir()
    (root / "home").mkdir()
    workspace = root / "workspace.yaml"
    workspace.write_text(
        json.dumps(
            {
                "load_from": [
                    {
                        "python_module": {
                            "module_name": "pipeline.definitions",
                            "working_directory": str(REPO_ROOT),
                            "location_name": "analytics_pipeline",
                        }
                    }
                ]
            }
        )
    )
    with ServerThread(webhook_receiver.create_app()) as hooks:
        module_env.setenv("LANDING_URL", str(root / "landing"))
        module_env.setenv("DUCKDB_PATH", str(root / "w.duckdb"))
        module_env.setenv("ALERT_WEBHOOK_URL", f"{hooks.url}/alerts")
        from pipeline.definitions import defs

        with (
            dg.instance_for_test(temp_dir=str(root / "home")) as instance,
            define_out_of_process_workspace(str(workspace), None, instance) as workspace_context,
        ):

            def graphql(query: str, **variables) -> dict:
                """One request, as the UI makes it (a fresh request context: nothing cached between requests)."""
                result = execute_dagster_graphql(workspace_context.create_request_context(), query, variables)
                assert not result.errors, result.errors
                return result.data

            yield type(
                "Stack", (), {"defs": defs(), "instance": instance, "root": root, "hooks": hooks.url, "gql": graphql}
            )


def land(stack, day: str, body: str) -> None:
    path = stack.root / "landing" / "shop" / day / "customers.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)


def load(stack, day: str) -> dg.ExecuteInProcessResult:
    job = stack.defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection={RAW_CUSTOMERS})
    return job.execute_in_process(instance=stack.instance, partition_key=day, raise_on_error=False)


def test_a_quarantine_is_an_expected_error_in_the_ui_and_in_the_alert(stack):
    # Three good days, then day 2 is delivered again, broken: the re-delivery is quarantined.
    for day, ids in (("2026-11-01", (1,)), ("2026-11-02", (2,)), ("2026-11-03", (3,))):
        land(stack, day, customers(*ids))
        assert load(stack, day).success
    land(stack, "2026-11-02", HEADER.replace(",email", "") + "\n2,Ann,Lee,US,organic,true,2026-11-01,2026-11-01\n")
    result = load(stack, "2026-11-02")
    assert not result.success

    checks = stack.gql(CHECK_QUERY)["assetNodeOrError"]["assetChecksOrError"]
    failures = stack.gql(FAILURE_QUERY, runId=result.run_id)

    # The Checks tab: landing_contract failed, in this run, with what was wrong and where the file went.
    [check] = [c for c in checks["checks"] if c["name"] == "landing_contract"]
    execution = check["executionForLatestMaterialization"]
    assert execution is not None, "the UI would show 'Not evaluated'"
    assert execution["status"] == "FAILED" and execution["runId"] == result.run_id
    evaluation = execution["evaluation"]
    assert not evaluation["success"]
    assert "shop/2026-11-02/customers.csv" in evaluation["description"]
    assert "quarantine/2026-11-02/shop/customers.csv" in evaluation["description"]
    entries = {e["label"]: e.get("intValue") for e in evaluation["metadataEntries"]}
    assert entries["files_checked"] == 1 and entries["rejected_files"] == 1
    assert {"rejections", "quarantined"} <= set(entries)

    # The run's failed step: the message and the failure's metadata, no stack trace to print.
    [failure] = [e for e in failures["logsForRun"]["events"] if e["__typename"] == "ExecutionStepFailureEvent"]
    if fastpaths.enabled():  # off: Dagster records the Failure with its stack, as any exception
        assert failure["error"]["stack"] == [] and failure["error"]["errorChain"] == []
        assert failure["error"]["message"].startswith("shop/2026-11-02/customers.csv: ")
    assert "shop/2026-11-02/customers.csv: " in failure["error"]["message"]
    assert "quarantined at quarantine/2026-11-02/shop/customers.csv" in failure["error"]["message"]
    assert "quarantined" in {e["label"] for e in failure["failureMetadata"]["metadataEntries"]}

    # The run-failure alert quotes the message, no traceback.
    run = stack.instance.get_run_by_id(result.run_id)
    event = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
    sensor = stack.defs.resolve_sensor_def("run_failure_alert")
    sensor(
        dg.build_run_status_sensor_context(
            sensor_name=sensor.name, dagster_instance=stack.instance, dagster_run=run, dagster_event=event
        ).for_run_failure()
    )
    [alert] = httpx.get(f"{stack.hooks}/_devstack/received").json()
    text = alert["json"]["text"]
    assert "*Failed step*: `raw__customers`" in text
    assert "shop/2026-11-02/customers.csv: " in text and "quarantined at quarantine/2026-11-02/shop/" in text
    assert "Stack Trace" not in text and "Traceback" not in text and 'File "' not in text

    # The corrected file loads again; the check passes on that load.
    land(stack, "2026-11-02", customers(2, 4))
    assert load(stack, "2026-11-02").success
    checks = stack.gql(CHECK_QUERY)["assetNodeOrError"]["assetChecksOrError"]
    [check] = [c for c in checks["checks"] if c["name"] == "landing_contract"]
    assert check["executionForLatestMaterialization"]["status"] == "SUCCEEDED"
