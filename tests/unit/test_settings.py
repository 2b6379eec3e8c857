from pathlib import Path

import dagster as dg
import pytest

from pipeline.settings import REPO_ROOT, Settings, secret


def test_defaults_point_inside_the_repository():
    s = Settings.from_env({})
    assert s.warehouse_path == REPO_ROOT / ".data" / "warehouse.duckdb"
    assert s.landing_url == str(REPO_ROOT / ".data" / "landing")
    assert s.dbt_project_dir == REPO_ROOT / "dbt_project"
    assert s.dbt_profiles_dir == s.dbt_project_dir
    assert s.dbt_target is None
    assert s.crm_url == "http://127.0.0.1:8765"
    assert s.crm_batch_size == 100


def test_environment_overrides(tmp_path: Path):
    s = Settings.from_env(
        {
            "DUCKDB_PATH": str(tmp_path / "w.duckdb"),
            "LANDING_URL": "s3://bucket/prefix",
            "DBT_PROJECT_DIR": str(tmp_path / "proj"),
            "DBT_TARGET": "prod",
            "CRM_URL": "https://api.hubapi.com/",
            "CRM_BATCH_SIZE": "50",
        }
    )
    assert s.warehouse_path == tmp_path / "w.duckdb"
    assert s.landing_url == "s3://bucket/prefix"
    assert s.dbt_profiles_dir == tmp_path / "proj"
    assert s.dbt_target == "prod"
    assert s.crm_url == "https://api.hubapi.com"
    assert s.crm_batch_size == 50


def test_batch_size_respects_hubspot_limit():
    with pytest.raises(ValueError, match="between 1 and 100"):
        Settings.from_env({"CRM_BATCH_SIZE": "101"})


def test_secrets_are_env_vars_never_values():
    token = secret("CRM_TOKEN", {"CRM_TOKEN": "s3cr3t"})
    assert isinstance(token, dg.EnvVar)
    assert "s3cr3t" not in repr(token)
    assert secret("SLACK_WEBHOOK_URL", {}) is None
    with pytest.raises(KeyError):
        secret("DUCKDB_PATH", {})
