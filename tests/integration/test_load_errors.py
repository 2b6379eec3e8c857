"""A bad setting, contract or sync stops the code location's load with its message (variable or file:line, what
to do), not a page of traceback: through `dagster definitions validate` (what `dg check defs` and CI run) and
through a gRPC code server, whose load error is what the UI shows on the code location."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from dagster_shared.cli import WorkspaceOpts

from pipeline.core.settings import REPO_ROOT
from tests.conftest import dbt_parse

pytestmark = pytest.mark.integration

DAGSTER = str(Path(sys.executable).with_name("dagster"))
FIXTURE = REPO_ROOT / "tests" / "fixtures" / "harbor_ledger"
SYNCS_FILE = "pipeline/activation/syncs.yaml"
#: Everything the pipeline reads is set by each test; nothing of the developer's shell leaks in.
PIPELINE_PREFIXES = ("LANDING_", "DBT_", "CRM_", "WEBHOOK_", "SLACK_", "ALERT_", "DUCKDB_", "SYNC_", "DAGSTER_")
PIPELINE_NAMES = ("PIPELINE_TIMEZONE", "DAILY_BUILD_CRON", "RAW_FRESHNESS_DEADLINE_CRON", "MART_FRESHNESS_HOURS")


def clean_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(PIPELINE_PREFIXES) and k not in PIPELINE_NAMES}
    return env | {
        "DAGSTER_HOME": str(home),
        "DUCKDB_PATH": str(tmp_path / "w.duckdb"),
        "LANDING_URL": str(tmp_path / "landing"),
        "DBT_ARTIFACTS_URL": str(tmp_path / "artifacts"),
        **settings,
    }


def validate(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [DAGSTER, "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # Dagster logs to stdout, Python's warnings go to stderr: one stream to read
        text=True,
        timeout=600,
    )


def assert_no_traceback(output: str) -> None:
    assert "Traceback" not in output
    assert "DagsterUserCodeLoadError" not in output
    assert "The above exception" not in output
    # The one frame left is the line that raised the message (definitions.py); none of the checks' own frames.
    assert re.findall(r'File "[^"]*/pipeline/[^"]*"', output) == [f'File "{REPO_ROOT}/pipeline/definitions.py"']


def test_bad_settings_fail_the_load_each_named_without_a_traceback(tmp_path):
    done = validate(
        clean_env(
            tmp_path, CRM_BATCH_SIZE="abc", LANDING_START_DATE="2026-13-01", LANDING_URL="ftp://files.example.com/x"
        )
    )
    assert done.returncode == 1, done.stdout
    out = done.stdout
    assert "DagsterInvalidDefinitionError: 3 settings are invalid (environment variables; the README's" in out
    assert "  LANDING_URL='ftp://files.example.com/x': expected a local folder, file:///path or s3://" in out
    assert "  LANDING_START_DATE='2026-13-01': expected a date as YYYY-MM-DD" in out
    assert "  CRM_BATCH_SIZE='abc': expected a whole number from 1 to 100" in out
    assert_no_traceback(out)


@pytest.fixture
def project_copy(tmp_path):
    """The second fixture project, in a temp folder, to rename and parse."""
    project = tmp_path / "project"
    shutil.copytree(FIXTURE, project)
    return project


def test_a_sync_whose_model_the_project_lacks_fails_the_load_at_its_line(tmp_path, project_copy):
    """syncs.yaml is written for `tidewater`: a project of that name without dim_customers is a mistake."""
    yml = project_copy / "dbt_project.yml"
    yml.write_text(
        yml.read_text().replace("name: harbor_ledger", "name: tidewater").replace("harbor_ledger:", "tidewater:")
    )
    dbt_parse(project_copy)
    done = validate(clean_env(tmp_path, DBT_PROJECT_DIR=str(project_copy)))
    assert done.returncode == 1, done.stdout
    line = next(
        i for i, text in enumerate((REPO_ROOT / SYNCS_FILE).read_text().splitlines(), 1) if "model: dim_" in text
    )
    assert f"problems in {SYNCS_FILE}" in done.stdout
    assert (
        f"  {SYNCS_FILE}:{line}: sync crm_contacts_sync reads model 'dim_customers', which dbt project 'tidewater'"
        " lacks" in done.stdout
    )
    assert_no_traceback(done.stdout)


def test_syncs_written_for_another_project_are_left_out_visibly(tmp_path, project_copy):
    dbt_parse(project_copy)
    done = validate(clean_env(tmp_path, DBT_PROJECT_DIR=str(project_copy)))
    assert done.returncode == 0, done.stdout
    assert (
        f"{SYNCS_FILE} is written for dbt project 'tidewater' and the loaded one is 'harbor_ledger' (DBT_PROJECT_DIR):"
        " its syncs crm_contacts_sync, segment_summary_webhook are left out" in done.stdout
    )


def test_a_bad_contract_fails_the_load_with_its_line(tmp_path, monkeypatch, demo_manifest):
    bad = tmp_path / "contracts.yaml"
    bad.write_text(
        (REPO_ROOT / "pipeline/ingestion/contracts.yaml")
        .read_text()
        .replace("marketing_opt_in: BOOLEAN", "marketing_opt_in: BOOLEN")
    )
    for name, value in clean_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("LANDING_CONTRACTS_PATH", str(bad))
    from pipeline.definitions import defs

    with pytest.raises(dg.DagsterInvalidDefinitionError) as info:
        defs()
    line = next(i for i, text in enumerate(bad.read_text().splitlines(), 1) if "BOOLEN" in text)
    assert str(info.value).splitlines()[1] == (
        f"  {bad}:{line}: shop.customers.marketing_opt_in: 'BOOLEN' is not a DuckDB type (Type with name BOOLEN"
        " does not exist!; did you mean BOOLEAN?)"
    )
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_the_code_servers_load_error_is_the_message_itself(tmp_path, monkeypatch):
    """What the UI shows for the code location: our message first, no wrapped error and no chain of causes (the
    frames of Dagster's own loader stay in its stack: they come before the definitions are ever called)."""
    from dagster import __version__
    from dagster._cli.workspace.cli_target import get_workspace_from_cli_opts

    for name, value in clean_env(tmp_path, CRM_BATCH_SIZE="abc").items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(REPO_ROOT)
    with (
        dg.instance_for_test() as instance,
        get_workspace_from_cli_opts(
            instance=instance,
            version=__version__,
            workspace_opts=WorkspaceOpts(workspace=("workspace.yaml",)),
            allow_in_process=False,
            log_level="warning",
        ) as workspace,
    ):
        [entry] = workspace.get_code_location_entries().values()
    error = entry.load_error
    assert error.message.startswith("dagster._core.errors.DagsterInvalidDefinitionError: A setting is invalid")
    assert "  CRM_BATCH_SIZE='abc': expected a whole number from 1 to 100" in error.message
    assert error.cause is None and error.context is None
    ours = [frame for frame in error.stack if "site-packages" not in frame]
    assert len(ours) == 1 and "pipeline/definitions.py" in ours[0]
