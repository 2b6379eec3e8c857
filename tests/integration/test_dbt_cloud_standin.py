"""The dbt Cloud stand-in (devstack.dbt_cloud) over real HTTP, driven by dagster-dbt's own dbt Cloud client.

One module-scoped server runs a tiny dbt project (a seed, a model, a passing and a failing test) on a temp DuckDB
file; dbt invocations cost seconds, so only a few tests run dbt, and the fault, queueing and cancel tests use
runs that never reach it (a failing preamble, a slow "dbt deps" step, a cancel).
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from dagster import Failure
from dagster_dbt.cloud_v2.client import DbtCloudWorkspaceClient
from dagster_dbt.cloud_v2.run_handler import DbtCloudJobRunHandler, DbtCloudJobRunResults
from dagster_dbt.cloud_v2.types import DbtCloudRun

from devstack import dbt_cloud
from devstack.serve import ServerThread, server_process
from pipeline.core.settings import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.once]

TOKEN = "dbt-cloud-test-token"
ACCOUNT, PROJECT, ENVIRONMENT = 1, 1, 1
API = f"/api/v2/accounts/{ACCOUNT}"
RUN_DETAIL_ROUTE = "GET /api/v2/accounts/{account_id:int}/runs/{run_id:int}"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d+)?\+00:00$")
SEEDED_JOB = {"name": "nightly build", "execute_steps": ["dbt build"], "cron": "0 6 * * *", "schedule_enabled": True}

TINY_PROJECT = {
    "dbt_project.yml": "name: tiny\nversion: '1.0'\nconfig-version: 2\nprofile: tiny\n",
    "profiles.yml": (
        "tiny:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n"
        "      path: \"{{ env_var('DUCKDB_PATH') }}\"\n      threads: 1\n"
    ),
    "seeds/people.csv": "id,name\n1,ada\n2,bob\n",
    "models/people_upper.sql": "select id, upper(name) as name from {{ ref('people') }}\n",
    "models/schema.yml": (
        "version: 2\nmodels:\n  - name: people_upper\n    columns:\n      - name: id\n"
        "        data_tests: [unique, not_null]\n"
    ),
    # Fails whenever it runs: bob is there. Tagged so a build can leave it out.
    "tests/no_bob.sql": "{{ config(tags=['failing']) }}\nselect * from {{ ref('people_upper') }} where name = 'BOB'\n",
}


def write_tiny_project(folder: Path) -> Path:
    for relative, text in TINY_PROJECT.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(text)
    return folder


def workspace_client(
    url: str, *, account_id: int = ACCOUNT, token: str = TOKEN, retries: int = 3
) -> DbtCloudWorkspaceClient:
    return DbtCloudWorkspaceClient(
        account_id=account_id,
        token=token,
        access_url=url,
        request_max_retries=retries,
        request_retry_delay=0.1,
        request_timeout=15,
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("dbt_cloud")
    project = write_tiny_project(root / "tiny")
    app = dbt_cloud.create_app(
        project, project, root / "data", TOKEN, jobs=[SEEDED_JOB], env={"DUCKDB_PATH": str(root / "tiny.duckdb")}
    )
    with ServerThread(app) as thread:
        yield thread


@pytest.fixture(scope="module")
def http(server: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Token {TOKEN}"}, timeout=30) as client:
        yield client


@pytest.fixture
def client(server: ServerThread, http: httpx.Client) -> Iterator[DbtCloudWorkspaceClient]:
    """dagster-dbt's client for the module's server; every fault is off again after the test."""
    yield workspace_client(server.url)
    assert http.put("/_devstack/faults", json={}).status_code == 200


@pytest.fixture
def job(client: DbtCloudWorkspaceClient) -> int:
    return client.create_job(project_id=PROJECT, environment_id=ENVIRONMENT, job_name="test job")["id"]


def arm(http: httpx.Client, **faults: Any) -> None:
    response = http.put("/_devstack/faults", json=faults)
    assert response.status_code == 200, response.text


def stats(http: httpx.Client) -> dict[str, Any]:
    return http.get("/_devstack/stats").json()


def poll(client: DbtCloudWorkspaceClient, run_id: int) -> dict[str, Any]:
    return dict(client.poll_run(run_id, poll_interval=0.1, poll_timeout=60))


def wait_for_status(client: DbtCloudWorkspaceClient, run_id: int, status: int, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (run := client.get_run_details(run_id))["status"] != status:
        assert time.monotonic() < deadline, f"run {run_id} still has status {run['status']}, expected {status}"
        time.sleep(0.05)
    return dict(run)


def step_names_and_statuses(client: DbtCloudWorkspaceClient, run_id: int) -> list[tuple[str, str]]:
    run = client.get_run_details(run_id, include_related=["run_steps"])
    return [(step["name"], step["status_humanized"]) for step in run["run_steps"]]


PREAMBLE_OK = [
    ("Clone git repository", "Success"),
    ("Create profile from connection", "Success"),
    ("Invoke dbt deps", "Success"),
]


def test_account_project_and_environment_are_the_seeded_ones(
    server: ServerThread, client: DbtCloudWorkspaceClient, http: httpx.Client
) -> None:
    client.verify_connection()
    assert client.get_account_details()["id"] == ACCOUNT
    assert client.get_project_details(PROJECT)["id"] == PROJECT
    environment = client.get_environment_details(ENVIRONMENT)
    assert (environment["project_id"], environment["type"]) == (PROJECT, "deployment")
    assert http.get(f"{API}/").json()["data"]["id"] == ACCOUNT  # a trailing slash is fine too

    missing = http.get("/api/v2/accounts/99/jobs")
    assert missing.status_code == 404
    assert missing.json()["status"]["is_success"] is False
    assert missing.json()["data"] is None
    with pytest.raises(Failure):
        workspace_client(server.url, account_id=99, retries=0).get_account_details()
    assert http.get(f"{API}/environments/2").status_code == 404


def test_jobs_are_created_listed_paged_read_and_deleted(client: DbtCloudWorkspaceClient, http: httpx.Client) -> None:
    seeded = next(job for job in client.list_jobs(PROJECT, ENVIRONMENT) if job["name"] == SEEDED_JOB["name"])
    assert seeded["schedule"]["cron"] == "0 6 * * *"
    assert seeded["triggers"]["schedule"] is True
    assert seeded["execute_steps"] == ["dbt build"]

    created = [
        client.create_job(project_id=PROJECT, environment_id=ENVIRONMENT, job_name=f"paging {i}") for i in range(3)
    ]
    assert created[0]["job_type"] == "other"
    assert created[0]["state"] == 1
    listed = {job["id"] for job in client.list_jobs(PROJECT, ENVIRONMENT)}
    assert {job["id"] for job in created} <= listed

    page = http.get(f"{API}/jobs", params={"project_id": PROJECT, "limit": 2, "offset": 1}).json()
    assert len(page["data"]) == 2
    assert page["extra"]["pagination"] == {"count": 2, "total_count": len(listed)}

    assert client.get_job_details(created[0]["id"])["name"] == "paging 0"
    assert client.destroy_job(created[0]["id"])["state"] == 2
    assert client.destroy_job(created[0]["id"]) is None  # dagster-dbt takes the 404 as "already gone"
    assert http.get(f"{API}/jobs/{created[0]['id']}").status_code == 404

    wrong_environment = http.post(f"{API}/jobs", json={"name": "x", "project_id": PROJECT, "environment_id": 2})
    assert wrong_environment.status_code == 400


def test_command_line_serves_jobs_from_a_yaml_file(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(
        "- name: hourly\n  execute_steps: ['dbt build --select tag:hourly']\n  cron: '0 * * * *'\n"
        "- name: ad hoc\n  schedule_enabled: false\n"
    )
    project = write_tiny_project(tmp_path / "tiny")
    args = ["--project-dir", str(project), "--data", str(tmp_path / "data"), "--jobs", str(jobs)]
    with server_process("devstack.dbt_cloud", *args, "--token", TOKEN, "--account-id", "7") as url:
        listed = workspace_client(url, account_id=7).list_jobs(PROJECT, ENVIRONMENT)
    assert [(job["name"], job["schedule"]["cron"], job["triggers"]["schedule"]) for job in listed] == [
        ("hourly", "0 * * * *", True),
        ("ad hoc", "0 6 * * *", False),
    ]
    assert listed[0]["execute_steps"] == ["dbt build --select tag:hourly"]


def test_parse_run_of_the_repository_project_as_dagster_dbt_starts_it(tmp_path: Path) -> None:
    """What DbtCloudWorkspace.fetch_workspace_data does: trigger `dbt parse`, wait, read the manifest."""
    project = tmp_path / "dbt_project"
    shutil.copytree(REPO_ROOT / "dbt_project", project, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    app = dbt_cloud.create_app(project, project, tmp_path / "data", TOKEN, env={"DUCKDB_PATH": str(tmp_path / "w.db")})
    with ServerThread(app) as server:
        client = workspace_client(server.url)
        job_id = client.create_job(project_id=PROJECT, environment_id=ENVIRONMENT, job_name="dagster adhoc")["id"]
        handler = DbtCloudJobRunHandler.run(job_id=job_id, args=["parse"], client=client)
        run = handler.wait(timeout=60)
        run.raise_for_status()
        manifest = handler.get_manifest()
        artifacts = handler.list_run_artifacts()
        logs = handler.get_run_logs()
        details = client.get_run_details(run.id, include_related=["trigger"])
    assert run.url == f"{server.url}/deploy/{ACCOUNT}/projects/{PROJECT}/runs/{run.id}"
    assert "manifest.json" in artifacts
    assert any(node.startswith("model.tidewater.") for node in manifest["nodes"])
    assert manifest["metadata"]["env"]["DBT_CLOUD_RUN_ID"] == str(run.id)
    assert details["trigger"]["steps_override"] == ["dbt parse"]
    assert "=== Step: Invoke dbt with `dbt parse` ===" in logs


def test_build_run_succeeds_and_its_run_results_name_the_run(
    client: DbtCloudWorkspaceClient, http: httpx.Client
) -> None:
    job_id = http.post(
        f"{API}/jobs",
        json={
            "name": "build without the failing test",
            "project_id": PROJECT,
            "environment_id": ENVIRONMENT,
            "execute_steps": ["dbt build --exclude tag:failing"],
        },
    ).json()["data"]["id"]
    triggered = client.trigger_job_run(job_id)  # no steps_override: the job's execute_steps
    assert (triggered["status"], triggered["status_humanized"]) == (1, "Queued")
    assert triggered["trigger"]["cause"] == "Triggered by dagster."

    run = poll(client, triggered["id"])
    assert (run["status"], run["is_success"], run["in_progress"]) == (10, True, False)
    for name in ("created_at", "started_at", "finished_at"):
        assert TIMESTAMP.match(run[name]), run[name]
    steps = step_names_and_statuses(client, run["id"])
    assert steps == [*PREAMBLE_OK, ("Invoke dbt with `dbt build --exclude tag:failing`", "Success")]
    detail = client.get_run_details(run["id"], include_related=["run_steps", "job", "trigger"])
    assert detail["job"]["id"] == job_id
    assert "Completed successfully" in detail["run_steps"][-1]["logs"]

    assert {"manifest.json", "run_results.json"} <= set(client.list_run_artifacts(run["id"]))
    run_results = client.get_run_results_json(run["id"])
    assert run_results["metadata"]["env"]["DBT_CLOUD_RUN_ID"] == str(run["id"])
    assert run_results["metadata"]["env"]["DBT_CLOUD_JOB_ID"] == str(job_id)
    assert DbtCloudJobRunResults.from_run_results_json(run_results).run_id == run["id"]
    assert {result["status"] for result in run_results["results"]} == {"success", "pass"}
    assert http.get(f"{API}/runs/{run['id']}/artifacts/nothing.json").status_code == 404
    assert http.get(f"{API}/runs/{run['id']}/artifacts/../../../etc/passwd").status_code == 404


def test_failing_test_ends_the_run_in_error_with_run_results(client: DbtCloudWorkspaceClient, job: int) -> None:
    run = poll(client, client.trigger_job_run(job, steps_override=["dbt build"])["id"])
    assert (run["status"], run["is_error"]) == (20, True)
    assert "dbt build" in run["status_message"]
    with pytest.raises(Failure):
        DbtCloudRun.from_run_details(run).raise_for_status()
    results = {result["unique_id"]: result["status"] for result in client.get_run_results_json(run["id"])["results"]}
    assert results["test.tiny.no_bob"] == "fail"
    assert results["model.tiny.people_upper"] == "success"
    assert step_names_and_statuses(client, run["id"])[-1] == ("Invoke dbt with `dbt build`", "Error")
    # The run's link (what Dagster logs) opens in a browser, without the API token, on the run and its steps' logs.
    page = httpx.get(run["href"])
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert f"Run #{run['id']}: Error" in page.text and "Invoke dbt with `dbt build`" in page.text
    assert "no_bob" in page.text, "the failing step's log"
    assert httpx.get(run["href"].replace(f"/runs/{run['id']}", "/runs/999999")).status_code == 404


def test_second_trigger_of_a_job_queues_until_the_first_ends_and_cancel_interrupts_it(
    client: DbtCloudWorkspaceClient, http: httpx.Client, job: int
) -> None:
    other_job = client.create_job(project_id=PROJECT, environment_id=ENVIRONMENT, job_name="idle")["id"]
    arm(http, slow_seconds=120)  # every run waits in "Invoke dbt deps" until cancelled
    first = client.trigger_job_run(job, steps_override=["dbt parse"])["id"]
    wait_for_status(client, first, 3)
    second = client.trigger_job_run(job, steps_override=["dbt parse"])["id"]
    time.sleep(0.3)
    assert client.get_run_details(second)["status"] == 1  # one run of a job at a time
    assert client.get_active_job_ids(PROJECT, ENVIRONMENT, [job, other_job]) == {job}
    queued = http.get(f"{API}/runs", params={"job_definition_id": job, "status__in": "[1]"}).json()
    assert [run["id"] for run in queued["data"]] == [second]

    cancelled = client.cancel_run(first)
    assert (cancelled["status"], cancelled["is_cancelled"]) == (30, True)
    # The second run starts only once the first one's worker has stopped: the cancel ended its 120 s wait.
    wait_for_status(client, second, 3)
    assert step_names_and_statuses(client, first)[-1] == ("Invoke dbt deps", "Cancelled")
    client.cancel_run(second)
    assert poll(client, second)["status"] == 30
    assert client.get_active_job_ids(PROJECT, ENVIRONMENT, [job, other_job]) == set()


def test_cancel_stops_a_running_dbt_command(client: DbtCloudWorkspaceClient, http: httpx.Client, job: int) -> None:
    run_id = client.trigger_job_run(job, steps_override=["dbt build"])["id"]
    deadline = time.monotonic() + 10
    while len(step_names_and_statuses(client, run_id)) < 4:  # the dbt step has started
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert client.cancel_run(run_id)["status"] == 30
    # The job's next run starts only once the cancelled run's worker has stopped dbt's process group.
    arm(http, run_error=1)
    assert poll(client, client.trigger_job_run(job)["id"])["status"] == 20
    assert step_names_and_statuses(client, run_id)[-1] == ("Invoke dbt with `dbt build`", "Cancelled")


def test_get_runs_batch_filters_on_finished_at_and_counts(
    client: DbtCloudWorkspaceClient, http: httpx.Client, job: int
) -> None:
    arm(http, run_error=3)  # three quick runs that never reach dbt
    lower = dt.datetime.now(dt.UTC)
    run_ids = [client.trigger_job_run(job)["id"] for _ in range(3)]
    for run_id in run_ids:
        poll(client, run_id)
    upper = dt.datetime.now(dt.UTC)

    runs, total = client.get_runs_batch(PROJECT, ENVIRONMENT, lower, upper)
    assert total == 3
    assert [run["id"] for run in runs] == run_ids  # ordered by finished_at; one job's runs finish in order
    rest, total = client.get_runs_batch(PROJECT, ENVIRONMENT, lower, upper, offset=2)
    assert ([run["id"] for run in rest], total) == ([run_ids[2]], 3)
    day = dt.timedelta(days=1)
    none, total = client.get_runs_batch(PROJECT, ENVIRONMENT, lower - 2 * day, lower - day)
    assert (none, total) == ([], 0)

    newest_first = http.get(f"{API}/runs", params={"job_definition_id": job, "order_by": "-id", "limit": 2}).json()
    assert [run["id"] for run in newest_first["data"]] == run_ids[:0:-1]
    assert newest_first["extra"]["pagination"]["total_count"] == 3


def test_run_error_fault_fails_the_run_before_dbt(
    server: ServerThread, client: DbtCloudWorkspaceClient, http: httpx.Client, job: int
) -> None:
    invocations = stats(http).get("dbt_invocations", 0)
    arm(http, run_error=1)
    run = poll(client, client.trigger_job_run(job, steps_override=["dbt build"])["id"])
    assert run["status"] == 20
    assert "Clone git repository" in run["status_message"]
    assert step_names_and_statuses(client, run["id"]) == [("Clone git repository", "Error")]
    assert client.list_run_artifacts(run["id"]) == []
    with pytest.raises(Failure):
        workspace_client(server.url, retries=0).get_run_results_json(run["id"])
    assert stats(http).get("dbt_invocations", 0) == invocations
    assert http.get("/_devstack/faults").json()["run_error"] == 0


def test_cancel_runs_fault_cancels_after_the_preamble(
    client: DbtCloudWorkspaceClient, http: httpx.Client, job: int
) -> None:
    invocations = stats(http).get("dbt_invocations", 0)
    arm(http, cancel_runs=1)
    run = poll(client, client.trigger_job_run(job, steps_override=["dbt build"])["id"])
    assert (run["status"], run["is_cancelled"]) == (30, True)
    assert "Cancelled by a user in dbt Cloud" in run["status_message"]
    assert step_names_and_statuses(client, run["id"]) == PREAMBLE_OK
    assert stats(http).get("dbt_invocations", 0) == invocations


def test_poll_500_fault_the_client_retries_through(
    server: ServerThread, client: DbtCloudWorkspaceClient, http: httpx.Client, job: int
) -> None:
    arm(http, run_error=1)
    run_id = poll(client, client.trigger_job_run(job)["id"])["id"]
    before = stats(http)["requests"][RUN_DETAIL_ROUTE]
    arm(http, poll_500=2)
    assert http.get(f"{API}/runs/{run_id}").status_code == 500
    assert client.get_run_details(run_id)["id"] == run_id  # one more 500, then the run
    assert stats(http)["requests"][RUN_DETAIL_ROUTE] == before + 3
    arm(http, poll_500=2)
    with pytest.raises(Failure):
        workspace_client(server.url, retries=1).get_run_details(run_id)


def test_rate_limit_fault_answers_429_with_retry_after(client: DbtCloudWorkspaceClient, http: httpx.Client) -> None:
    arm(http, rate_limit=2)
    limited = http.get(f"{API}/jobs")
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "1"
    assert limited.json()["status"]["code"] == 429
    assert client.list_jobs(PROJECT, ENVIRONMENT)  # after one more 429
    assert http.get("/_devstack/faults").json()["rate_limit"] == 0


def test_tokens_are_checked_and_the_unauthorized_fault_refuses_all(
    server: ServerThread, client: DbtCloudWorkspaceClient, http: httpx.Client
) -> None:
    url = f"{server.url}{API}"
    assert httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    for headers in ({}, {"Authorization": "Token wrong"}, {"Authorization": TOKEN}):
        refused = httpx.get(url, headers=headers)
        assert refused.status_code == 401
        assert refused.json()["status"]["is_success"] is False
    assert httpx.get(f"{server.url}/healthz").status_code == 200
    with pytest.raises(Exception, match="Failed to verify connection"):
        workspace_client(server.url, token="wrong", retries=0).verify_connection()

    arm(http, unauthorized=True)
    assert http.get(API).status_code == 401
    assert http.get("/_devstack/stats").status_code == 200  # the switches stay reachable


def test_faults_endpoint_rejects_unknown_and_invalid_settings(http: httpx.Client) -> None:
    assert http.put("/_devstack/faults", json={"bogus": 1}).status_code == 400
    assert http.put("/_devstack/faults", json={"poll_500": -1}).status_code == 400
    assert http.put("/_devstack/faults", json=[1]).status_code == 400
    assert http.get("/_devstack/faults").json() == dbt_cloud.FaultConfig().to_json()
