"""dbt Cloud jobs as schedules: what is read from a job's commands, what the YAML holds, what a bad file says."""

from __future__ import annotations

import json

import dagster as dg
import pytest
import yaml

from pipeline.core.config_files import ConfigFileError
from pipeline.core.settings import REPO_ROOT, Settings
from pipeline.transformation.cloud_jobs import import_jobs, load_schedules, schedules_document, selection_of
from pipeline.transformation.translator import PipelineTranslator


def job(job_id: int, name: str, steps: list[str], cron: str | None = "0 6 * * *", on: bool = True) -> dict:
    """A job as dbt Cloud's API lists it (the fields the importer reads)."""
    return {
        "id": job_id,
        "name": name,
        "execute_steps": steps,
        "triggers": {"schedule": on, "github_webhook": False},
        "schedule": {"cron": cron, "date": {"type": "custom_cron", "cron": cron}} if cron else {},
    }


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("dbt build", ("build", [], [])),
        ("dbt build --select marts+ --exclude tag:slow", ("build", ["marts+"], ["tag:slow"])),
        ("dbt run -s stg_orders fct_orders", ("run", ["stg_orders", "fct_orders"], [])),
        ("dbt --warn-error test --select=dim_customers", ("test", ["dim_customers"], [])),
        ("dbt source freshness", None),
        ("dbt docs generate", None),
        ("dbt run-operation grant_select", None),
        ("dbt build --select 'unclosed", None),
    ],
)
def test_a_command_s_selection(command, expected):
    assert selection_of(command) == expected


def test_jobs_with_a_cron_and_a_building_command_become_schedules():
    imported = import_jobs(
        [
            job(12, "Daily marts", ["dbt source freshness", "dbt build --select marts+"]),
            job(13, "Hourly orders", ["dbt run -s fct_orders", "dbt test -s fct_orders"], cron="0 * * * *"),
            job(14, "CI", ["dbt build --select state:modified+"], cron=None),
            job(15, "Docs", ["dbt docs generate"]),
            job(16, "DAGSTER_ADHOC_JOB__1__1", ["dbt build"], cron=None),
            job(17, "Bad cron", ["dbt build"], cron="0 25 * * *"),
            job(18, "Paused", ["dbt build"], on=False),
            job(19, "Seeds", ["dbt seed"]),
            job(20, "Tests only", ["dbt test --select marts"]),
            job(21, "Snapshots and marts", ["dbt snapshot", "dbt run --select marts+ stg_orders"]),
        ],
        skip_job_ids={16},
    )
    by_id = {i.job_id: i for i in imported}
    assert by_id[12].schedule_name == "dbt_cloud_daily_marts"
    assert (by_id[12].select, by_id[12].not_imported, by_id[12].schedule_on) == (
        ["marts+"],
        ["dbt source freshness"],
        True,
    )
    # `dbt run` builds models only; its `dbt test` step adds nothing (a build here tests what it builds)
    assert by_id[13].select == ["fct_orders,resource_type:model"]
    assert by_id[13].not_imported == ["dbt test -s fct_orders"]
    assert by_id[19].select == ["resource_type:seed"], "a seed job does not become a build of the whole project"
    assert by_id[20].reasons == ["no command that builds nodes (dbt build/run/seed/snapshot)"]
    assert by_id[21].select == [
        "resource_type:snapshot",
        "marts+,resource_type:model stg_orders,resource_type:model",
    ]
    assert by_id[14].reasons == ["no cron schedule"]
    assert by_id[15].reasons == ["no command that builds nodes (dbt build/run/seed/snapshot)"]
    assert by_id[16].reasons == ["the job Dagster triggers (DBT_CLOUD_JOB_NAME)"]
    assert by_id[17].reasons == ["its cron '0 25 * * *' is not one Dagster accepts"]
    assert by_id[18].reasons == ["its schedule is off in dbt Cloud"]

    document = yaml.safe_load(schedules_document(imported, "dbt Cloud account 1"))
    assert document["timezone"] == "UTC"
    assert set(document["schedules"]) == {
        "dbt_cloud_daily_marts",
        "dbt_cloud_hourly_orders",
        "dbt_cloud_seeds",
        "dbt_cloud_snapshots_and_marts",
    }
    assert {name: document["schedules"][name] for name in ("dbt_cloud_daily_marts", "dbt_cloud_hourly_orders")} == {
        "dbt_cloud_daily_marts": {
            "dbt_cloud_job_id": 12,
            "dbt_cloud_job_name": "Daily marts",
            "cron": "0 6 * * *",
            "timezone": "UTC",
            "select": "marts+",
            "exclude": "",
            "commands": ["dbt source freshness", "dbt build --select marts+"],
            "not_imported": ["dbt source freshness"],
        },
        "dbt_cloud_hourly_orders": {
            "dbt_cloud_job_id": 13,
            "dbt_cloud_job_name": "Hourly orders",
            "cron": "0 * * * *",
            "timezone": "UTC",
            "select": "fct_orders,resource_type:model",
            "exclude": "",
            "commands": ["dbt run -s fct_orders", "dbt test -s fct_orders"],
            "not_imported": ["dbt test -s fct_orders"],
        },
    }


@pytest.fixture(scope="module")
def manifest() -> dict:
    settings = Settings.from_env({})
    return json.loads((settings.dbt_project_dir / "target" / "manifest.json").read_text())


def test_the_imported_file_loads_as_jobs_over_the_dbt_assets_and_stopped_schedules(tmp_path, manifest):
    path = tmp_path / "dbt_cloud_schedules.yaml"
    imported = import_jobs(
        [
            job(12, "Daily marts", ["dbt build --select dim_customers"], cron="30 5 * * 1-5"),
            job(13, "Seeds", ["dbt seed"]),
            job(14, "Staging models", ["dbt run --select staging"]),
        ]
    )
    path.write_text(schedules_document(imported, "test"))
    translator = PipelineTranslator()
    jobs, schedules = load_schedules(path, manifest, translator)
    assert [j.name for j in jobs] == ["dbt_cloud_daily_marts", "dbt_cloud_seeds", "dbt_cloud_staging_models"]
    schedule = schedules[0]
    assert (schedule.cron_schedule, schedule.execution_timezone) == ("30 5 * * 1-5", "UTC")
    assert all(s.default_status == dg.DefaultScheduleStatus.STOPPED for s in schedules)
    marts, seeds, staging = (j.selection.resolve_inner(None, allow_missing=True) for j in jobs)
    assert marts and all(k.path[-1] == "dim_customers" for k in marts)
    assert {k.path[-1] for k in seeds} == {"country_regions"}, "the seed job selects the seeds alone"
    assert staging and all(k.path[-1].startswith("stg_") for k in staging), staging


def test_no_file_no_schedules(tmp_path, manifest):
    assert load_schedules(tmp_path / "absent.yaml", manifest, PipelineTranslator()) == ([], [])


def test_a_bad_file_names_each_bad_line(tmp_path, manifest):
    path = tmp_path / "dbt_cloud_schedules.yaml"
    path.write_text(
        "timezone: UTC\n"
        "schedules:\n"
        "  dbt_cloud_daily:\n"
        "    cron: 0 25 * * *\n"
        "    select: dim_customers\n"
        "  dbt_cloud_nothing:\n"
        "    cron: 0 6 * * *\n"
        "    select: no_such_model\n"
        "  dbt_cloud_typo:\n"
        "    cron: 0 6 * * *\n"
        "    selct: dim_customers\n"
        "  dbt_cloud_zone:\n"
        "    cron: 0 6 * * *\n"
        "    timezone: Mars/Olympus\n"
        "    select: dim_customers\n"
    )
    with pytest.raises(ConfigFileError) as raised:
        load_schedules(path, manifest, PipelineTranslator())
    message = str(raised.value)
    assert f"{path}:4: schedule dbt_cloud_daily: `cron` '0 25 * * *' is not a cron expression" in message
    assert f"{path}:8: schedule dbt_cloud_nothing: the selection 'no_such_model' names no node" in message
    assert f"{path}:11: schedule dbt_cloud_typo: unknown key 'selct' (did you mean 'select'?)" in message
    assert f"{path}:9: schedule dbt_cloud_typo: `select` is required" in message
    assert f"{path}:14: schedule dbt_cloud_zone: `timezone` 'Mars/Olympus' is not an IANA time zone" in message
    assert "make dbt-cloud-import" in message


def test_the_default_file_is_absent_in_the_repository():
    """Imported schedules are the team's: the repository ships none (the demo has no dbt Cloud account)."""
    assert not (REPO_ROOT / "pipeline" / "automation" / "dbt_cloud_schedules.yaml").exists()


def test_an_unreachable_dbt_cloud_is_an_error_naming_the_address_and_the_setting():
    """Connection refused (a wrong DBT_CLOUD_URL, the stand-in not started): once retried, the error says where and
    what to check, not the library's `Max retries (0) exceeded`."""
    from devstack.serve import free_port
    from pipeline.transformation.cloud import DbtCloudApiError, RetryingDbtCloudClient

    url = f"http://127.0.0.1:{free_port()}"
    client = RetryingDbtCloudClient(
        account_id=1,
        token="t",
        access_url=url,
        request_max_retries=0,
        request_retry_delay=0,
        request_timeout=5,
        retries=1,
        backoff_seconds=0.01,
    )
    with pytest.raises(DbtCloudApiError) as raised:
        client.list_jobs(project_id=1, environment_id=1)
    message = raised.value.description
    assert f"dbt Cloud could not be reached at {url}/api/v2/accounts/1/jobs" in message
    assert "Connection refused" in message and "check DBT_CLOUD_URL" in message
