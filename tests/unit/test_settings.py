import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.settings import REPO_ROOT, Settings, SettingsError, alert_routes, secret, slim_ci_paths, store_url


def dbt_project(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dbt_project.yml").write_text("name: p\n")
    (root / "profiles.yml").write_text("p: {}\n")
    return root


def problems(env: dict[str, str]) -> list[str]:
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    assert str(info.value).count("\n") == len(info.value.problems), "one line per problem under the heading"
    return info.value.problems


def test_defaults_point_inside_the_repository():
    s = Settings.from_env({})
    assert s.warehouse_path == REPO_ROOT / ".data" / "warehouse.duckdb"
    assert s.landing_url == str(REPO_ROOT / ".data" / "landing")
    assert s.dbt_project_dir == REPO_ROOT / "dbt_project"
    assert s.dbt_profiles_dir == s.dbt_project_dir
    assert s.dbt_target is None
    assert s.crm_url == "http://127.0.0.1:8765"
    assert s.crm_batch_size == 100
    assert s.dbt_partition_incremental is True
    assert s.landing_contracts_path == REPO_ROOT / "pipeline" / "ingestion" / "contracts.yaml"


def test_environment_overrides(tmp_path: Path):
    contracts = tmp_path / "contracts.yaml"
    contracts.write_text("systems: {}\n")
    s = Settings.from_env(
        {
            "DUCKDB_PATH": str(tmp_path / "w.duckdb"),
            "LANDING_URL": "s3://bucket/prefix",
            "DBT_PROJECT_DIR": str(dbt_project(tmp_path / "proj")),
            "DBT_TARGET": "prod",
            "CRM_URL": "https://api.hubapi.com/",
            "CRM_BATCH_SIZE": " 50 ",
            "DBT_PARTITION_INCREMENTAL": "Off",
            "MART_FRESHNESS_HOURS": "0.5",
            "PIPELINE_TIMEZONE": "Europe/Berlin",
            "DAILY_BUILD_CRON": "@daily",
            "LANDING_CONTRACTS_PATH": str(contracts),
        }
    )
    assert s.warehouse_path == tmp_path / "w.duckdb"
    assert s.landing_url == "s3://bucket/prefix"
    assert s.dbt_profiles_dir == tmp_path / "proj"
    assert s.dbt_target == "prod"
    assert s.crm_url == "https://api.hubapi.com"
    assert s.crm_batch_size == 50
    assert s.dbt_partition_incremental is False
    assert s.mart_freshness_hours == 0.5
    assert (s.timezone, s.daily_build_cron) == ("Europe/Berlin", "@daily")
    assert s.landing_contracts_path == contracts


def test_a_blank_value_means_the_default():
    """`NAME=` in a .env file is unset, not an error (and not an empty URL)."""
    s = Settings.from_env({"CRM_BATCH_SIZE": "", "CRM_URL": "  ", "DBT_PARTITION_INCREMENTAL": ""})
    assert (s.crm_batch_size, s.crm_url, s.dbt_partition_incremental) == (100, "http://127.0.0.1:8765", True)


@pytest.mark.parametrize(
    ("name", "value", "accepted"),
    [
        ("CRM_BATCH_SIZE", "abc", "a whole number from 1 to 100"),
        ("CRM_BATCH_SIZE", "101", "a whole number from 1 to 100"),
        ("CRM_BATCH_SIZE", "0", "a whole number from 1 to 100"),
        ("CRM_BATCH_SIZE", "1.5", "a whole number from 1 to 100"),
        ("SYNC_CONCURRENCY", "-1", "a whole number from 1 to 64"),
        ("LANDING_SENSOR_INTERVAL_SECONDS", "0", "a whole number of seconds, 1 to 86400"),
        ("LANDING_SENSOR_OVERLAP_SECONDS", "5m", "a whole number of seconds, 0 to 86400"),
        ("LANDING_SENSOR_LOOKBACK_DAYS", "-3", "a whole number of days"),
        ("LANDING_SENSOR_SWEEP_MINUTES", "0", "a number of minutes above 0, at most 10080"),
        ("LANDING_SENSOR_SWEEP_MINUTES", "ten", "a number of minutes above 0, at most 10080"),
        ("DBT_WINDOW_LOOKBACK_DAYS", "three", "a whole number of days, 0 to 366"),
        ("DBT_THREADS", "0", "a whole number of threads"),
        ("CRM_TIMEOUT_SECONDS", "0", "a number of seconds above 0"),
        ("CRM_TIMEOUT_SECONDS", "inf", "a number of seconds above 0"),
        ("MART_FRESHNESS_HOURS", "nan", "a number of hours above 0"),
        ("MART_FRESHNESS_HOURS", "26h", "a number of hours above 0"),
        ("LANDING_START_DATE", "2026-13-01", "a date as YYYY-MM-DD"),
        ("LANDING_START_DATE", "01/11/2026", "a date as YYYY-MM-DD"),
        ("LANDING_START_DATE", "20261101", "a date as YYYY-MM-DD"),
        ("LANDING_PROCESSED_ACTION", "delete", "one of move, tag, leave"),
        ("DBT_PARTITION_INCREMENTAL", "ture", "one of 1, true, yes, on, 0, false, no, off"),
        ("DAILY_BUILD_CRON", "0 6 * *", "a cron expression of 5 fields"),
        ("DAILY_BUILD_CRON", "0 0 30 2 *", "a cron expression of 5 fields"),
        ("RAW_FRESHNESS_DEADLINE_CRON", "61 9 * * *", "a cron expression of 5 fields"),
        ("PIPELINE_TIMEZONE", "Europe/Berlín", "an IANA time zone"),
        ("PIPELINE_TIMEZONE", "CEST", "an IANA time zone"),
        ("LANDING_URL", "ftp://files.example.com/landing", "a local folder, file:///path or s3://bucket/prefix"),
        ("LANDING_URL", "s3://Not_A_Bucket/x", "a local folder, file:///path or s3://bucket/prefix"),
        ("LANDING_URL", "gs://bucket/x", "a local folder, file:///path or s3://bucket/prefix"),
        ("DBT_ARTIFACTS_URL", "https://example.com/artifacts", "a local folder, file:///path or s3://bucket/prefix"),
        ("CRM_URL", "api.hubapi.com", "an http(s) URL"),
        ("WEBHOOK_URL", "ftp://hooks.example.com", "an http(s) URL"),
        ("DAGSTER_UI_BASE_URL", "http://:3000", "an http(s) URL"),
        ("LANDING_ENDPOINT_URL", "http://minio:port", "an http(s) URL"),
        ("LANDING_REGION", "EU West", "an AWS region name"),
        ("CRM_ID_PROPERTY", "customer id", "a CRM property name"),
        ("DBT_PROJECT_DIR", "/nonexistent/project", "the folder of a dbt project (holding dbt_project.yml)"),
        ("DBT_PROFILES_DIR", "/nonexistent/profiles", "the folder holding dbt's profiles.yml"),
        ("DUCKDB_PATH", "/tmp", "a file path (not a folder)"),
        ("LANDING_CONTRACTS_PATH", "/nonexistent/contracts.yaml", "the path of a contracts YAML file"),
        ("LANDING_CONTRACTS_PATH", "/tmp", "the path of a contracts YAML file"),
    ],
)
def test_a_bad_setting_names_the_variable_the_value_and_the_accepted_form(name, value, accepted):
    [problem] = problems({name: value})
    assert problem.startswith(f"{name}={value!r}: expected {accepted}"), problem


def test_every_bad_setting_is_reported_at_once():
    found = problems(
        {
            "CRM_BATCH_SIZE": "abc",
            "LANDING_START_DATE": "2026-13-01",
            "LANDING_URL": "ftp://x/y",
            "PIPELINE_TIMEZONE": "Nowhere/Land",
            "DBT_PARTITION_INCREMENTAL": "maybe",
        }
    )
    assert [p.split("=")[0] for p in found] == [
        "LANDING_URL",
        "LANDING_START_DATE",
        "DBT_PARTITION_INCREMENTAL",
        "CRM_BATCH_SIZE",
        "PIPELINE_TIMEZONE",
    ]


def test_details_that_help_are_kept():
    [scheme_problem, date_problem] = problems({"LANDING_START_DATE": "2026-13-01", "LANDING_URL": "ftp://x/y"})
    assert "month must be in 1..12" in date_problem
    assert "ftp:// is not supported" in scheme_problem


def test_landing_start_date_cannot_be_after_today():
    tomorrow = (datetime.now(UTC).date() + timedelta(days=2)).isoformat()
    [problem] = problems({"LANDING_START_DATE": tomorrow})
    assert "no landing day would have a partition" in problem


@pytest.mark.parametrize(
    "url", ["relative/landing", "/abs/landing", "file:///abs/landing", "s3://acme-landing", "s3://acme.landing/a/b"]
)
def test_store_urls_accepted(url):
    assert store_url(url) == url


def test_a_store_url_that_is_a_file_is_refused(tmp_path: Path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="it is a file"):
        store_url(str(tmp_path / "f"))


@given(st.integers(min_value=1, max_value=100))
def test_any_batch_size_within_hubspots_limit_is_accepted(size):
    assert Settings.from_env({"CRM_BATCH_SIZE": str(size)}).crm_batch_size == size


@given(st.integers().filter(lambda n: not 1 <= n <= 100))
def test_any_batch_size_outside_hubspots_limit_is_refused(size):
    [problem] = problems({"CRM_BATCH_SIZE": str(size)})
    assert problem.startswith(f"CRM_BATCH_SIZE='{size}'")


@given(st.sampled_from(["1", "true", "yes", "on", "0", "false", "no", "off"]), st.data())
def test_booleans_in_any_case(word, data):
    spelled = "".join(data.draw(st.sampled_from([c.lower(), c.upper()])) for c in word)
    assert Settings.from_env({"DBT_PARTITION_INCREMENTAL": spelled}).dbt_partition_incremental is (
        word in ("1", "true", "yes", "on")
    )


@given(
    st.text(min_size=1).filter(
        lambda t: t.strip() and t.strip().lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off")
    )
)
def test_anything_else_is_not_a_boolean(text):
    [problem] = problems({"DBT_PARTITION_INCREMENTAL": text})
    assert problem.startswith("DBT_PARTITION_INCREMENTAL=")


@given(st.dates(min_value=date(1000, 1, 1), max_value=datetime.now(UTC).date()))
def test_any_iso_date_up_to_today_is_a_start_date(day):
    assert Settings.from_env({"LANDING_START_DATE": day.isoformat()}).landing_start_date == day.isoformat()


@given(
    st.text(alphabet=st.characters(categories=["L", "N"]), min_size=8, max_size=40),
    st.sampled_from(["SLACK_WEBHOOK_URL", "ALERT_WEBHOOK_URL", "ALERT_ROUTES"]),
)
def test_a_secret_is_named_but_its_value_never_shown(token, name):
    value = f"hooks.example.com/{token}" if name != "ALERT_ROUTES" else '{"team:a": "hooks.example.com/' + token
    [problem] = problems({name: value})
    assert problem.startswith(f"{name} (value not shown: a secret): expected")
    assert token not in problem


def test_alert_routes():
    routes = {"team:finance_data": "https://hooks.example.com/a", "ops@example.com": "http://127.0.0.1:9/b"}
    assert alert_routes({"ALERT_ROUTES": json.dumps(routes)}) == routes
    assert alert_routes({}) == {}
    with pytest.raises(SettingsError, match="the route of 'team:x' is not an http"):
        alert_routes({"ALERT_ROUTES": '{"team:x": "nope", "team:y": "https://ok.example.com"}'})
    with pytest.raises(SettingsError, match="a JSON list, not an object"):
        alert_routes({"ALERT_ROUTES": '["https://hooks.example.com"]'})
    with pytest.raises(SettingsError, match="not JSON: Expecting"):
        alert_routes({"ALERT_ROUTES": "{team: x}"})


def test_secrets_are_env_vars_never_values():
    token = secret("CRM_TOKEN", {"CRM_TOKEN": "s3cr3t"})
    assert isinstance(token, dg.EnvVar)
    assert "s3cr3t" not in repr(token)
    assert secret("SLACK_WEBHOOK_URL", {}) is None
    with pytest.raises(KeyError):
        secret("DUCKDB_PATH", {})


def test_slim_ci_paths(tmp_path: Path):
    production = tmp_path / "prod" / "lake.duckdb"
    ci, copied = slim_ci_paths(production, {})
    assert copied == production, "production's own file unless a snapshot is named"
    assert ci == REPO_ROOT / ".data" / "ci" / "lake.duckdb", "production's file name: its catalog name"
    snapshot, own = tmp_path / "snap" / "lake.duckdb", tmp_path / "ci" / "lake.duckdb"
    env = {"SLIM_CI_PRODUCTION_DUCKDB_PATH": str(snapshot), "SLIM_CI_DUCKDB_PATH": str(own)}
    assert slim_ci_paths(production, env) == (own, snapshot)
    with pytest.raises(SettingsError, match=r"SLIM_CI_DUCKDB_PATH='.*': expected a file path \(not a folder\)"):
        slim_ci_paths(production, {"SLIM_CI_DUCKDB_PATH": str(tmp_path)})


CLOUD = {
    "DBT_CLOUD_ACCOUNT_ID": "7",
    "DBT_CLOUD_PROJECT_ID": "8",
    "DBT_CLOUD_ENVIRONMENT_ID": "9",
    "DBT_CLOUD_TOKEN": "t",
}


def test_dbt_core_runs_the_project_unless_a_dbt_cloud_account_is_set():
    assert Settings.from_env({}).dbt_engine == "core"
    assert Settings.from_env({"DBT_CLOUD_TOKEN": "for-another-tool"}).dbt_cloud is None
    cloud = Settings.from_env(CLOUD).dbt_cloud
    assert cloud is not None and (cloud.account_id, cloud.project_id, cloud.environment_id) == (7, 8, 9)
    assert (cloud.url, cloud.select, cloud.if_running, cloud.timeout_seconds) == (
        "https://cloud.getdbt.com",
        "fqn:*",
        "wait",
        3600.0,
    )
    emea = Settings.from_env({**CLOUD, "DBT_CLOUD_URL": "https://emea.dbt.com/", "DBT_CLOUD_IF_RUNNING": "skip"})
    assert emea.dbt_cloud is not None and (emea.dbt_cloud.url, emea.dbt_cloud.if_running) == (
        "https://emea.dbt.com",
        "skip",
    )


def test_dbt_cloud_settings_name_what_is_missing_or_wrong():
    assert problems({"DBT_CLOUD_ACCOUNT_ID": "7"}) == [
        f"{name} is not set: DBT_CLOUD_ACCOUNT_ID is, so dbt Cloud runs dbt and needs it"
        for name in ("DBT_CLOUD_PROJECT_ID", "DBT_CLOUD_ENVIRONMENT_ID", "DBT_CLOUD_TOKEN")
    ]
    assert problems({"DBT_CLOUD_PROJECT_ID": "8", "DBT_CLOUD_URL": "https://emea.dbt.com"}) == [
        "DBT_CLOUD_PROJECT_ID, DBT_CLOUD_URL set without DBT_CLOUD_ACCOUNT_ID: set it to run dbt on dbt Cloud, or"
        " unset them to run it with dbt Core"
    ]
    bad = problems({**CLOUD, "DBT_CLOUD_ACCOUNT_ID": "acme", "DBT_CLOUD_IF_RUNNING": "queue", "DBT_CLOUD_TOKEN": "a b"})
    assert bad[0].startswith("DBT_CLOUD_ACCOUNT_ID='acme': expected a dbt Cloud id: a whole number")
    assert "DBT_CLOUD_IF_RUNNING='queue': expected one of wait, skip" in bad
    assert "DBT_CLOUD_TOKEN (value not shown: a secret): expected an API token" in "\n".join(bad)
    assert "a b" not in "\n".join(bad)


class _Recording(dict):
    """An environment that records every variable the settings ask for."""

    def __init__(self, values: dict[str, str]):
        super().__init__(values)
        self.asked: set[str] = set()

    def get(self, name, default=None):
        self.asked.add(name)
        return super().get(name, default)


def test_every_setting_is_in_the_readme_table_and_in_env_example():
    """A new setting is documented where a user looks: a row of the README's settings table and .env.example."""
    env = _Recording({"DBT_CLOUD_ACCOUNT_ID": "1", "DBT_CLOUD_PROJECT_ID": "1", "DBT_CLOUD_ENVIRONMENT_ID": "1"})
    env["DBT_CLOUD_TOKEN"] = "dev-token"
    Settings.from_env(env)
    names = {name for name in env.asked if name.isupper() and not name.startswith(("AWS_", "DAGSTER_HOME"))}
    assert {"LANDING_URL", "DBT_CLOUD_TIMEOUT_SECONDS", "PIPELINE_FAST_PATHS"} <= names  # the recording works
    readme_rows = [line for line in (REPO_ROOT / "README.md").read_text().splitlines() if line.startswith("| `")]
    example = (REPO_ROOT / ".env.example").read_text()
    undocumented = sorted(name for name in names if not any(f"`{name}`" in row for row in readme_rows))
    assert not undocumented, f"settings missing from the README's settings table: {undocumented}"
    missing = sorted(name for name in names if f"# {name}=" not in example)
    assert not missing, f"settings missing from .env.example: {missing}"


def test_a_motherduck_warehouse_is_accepted_with_its_token_and_a_journal_folder(tmp_path: Path):
    s = Settings.from_env(
        {"DUCKDB_PATH": "md:analytics", "MOTHERDUCK_TOKEN": "t0ken", "SYNC_JOURNAL_DIR": str(tmp_path / "journals")}
    )
    assert s.warehouse_path == "md:analytics"
    assert s.sync_journal_dir == tmp_path / "journals"
    from pipeline.activation.journal import journal_path
    from pipeline.core.resources import build_resources

    warehouse = build_resources(s)["warehouse"]
    assert warehouse.path == "md:analytics"
    assert journal_path(warehouse.path, "crm_contacts_sync", warehouse.journal_dir) == (
        tmp_path / "journals" / "analytics.crm_contacts_sync.journal.sqlite"
    )


def test_a_motherduck_warehouse_names_what_it_lacks():
    found = problems({"DUCKDB_PATH": "md:analytics"})
    assert any(p.startswith("MOTHERDUCK_TOKEN is not set: DUCKDB_PATH=md:analytics") for p in found), found
    assert any(p.startswith("SYNC_JOURNAL_DIR is not set") for p in found), found
    [bad] = problems({"DUCKDB_PATH": "md:my-db", "MOTHERDUCK_TOKEN": "t", "SYNC_JOURNAL_DIR": "/tmp"})
    assert bad.startswith("DUCKDB_PATH='md:my-db': expected a file path (not a folder), or md:<database>"), bad


def test_a_token_inside_a_motherduck_path_is_refused_and_never_shown():
    found = problems({"DUCKDB_PATH": "md:analytics?motherduck_token=s3cr3t", "SYNC_JOURNAL_DIR": "/tmp"})
    assert "s3cr3t" not in "\n".join(found), found
    assert any(p.startswith("DUCKDB_PATH (value not shown: it holds a token)") for p in found), found


def test_slim_ci_needs_a_local_copy_of_a_motherduck_production(tmp_path: Path):
    with pytest.raises(SettingsError, match="SLIM_CI_PRODUCTION_DUCKDB_PATH is not set: DUCKDB_PATH=md:analytics"):
        slim_ci_paths("md:analytics", {})
    copy = tmp_path / "analytics.duckdb"
    assert slim_ci_paths("md:analytics", {"SLIM_CI_PRODUCTION_DUCKDB_PATH": str(copy)})[1] == copy


def test_a_motherduck_path_reaches_dbts_profile(tmp_path: Path):
    """dbt-duckdb takes the md: path from the profile as it is: the manifest's relations are in that database."""
    import shutil
    import subprocess
    import sys

    project = tmp_path / "dbt_project"
    shutil.copytree(REPO_ROOT / "dbt_project", project, ignore=shutil.ignore_patterns("target", "logs"))
    env = {"PATH": str(Path(sys.executable).parent), "DUCKDB_PATH": "md:analytics", "MOTHERDUCK_TOKEN": "unused"}
    dbt = str(Path(sys.executable).with_name("dbt"))
    command = [
        dbt,
        "parse",
        "--quiet",
        "--project-dir",
        str(project),
        "--profiles-dir",
        str(project),
        "--target",
        "prod",
    ]
    subprocess.run(command, check=True, env=env, cwd=project)
    manifest = json.loads((project / "target" / "manifest.json").read_text())
    node = next(n for uid, n in manifest["nodes"].items() if uid.endswith(".dim_customers"))
    assert node["relation_name"] == '"analytics"."main"."dim_customers"'
