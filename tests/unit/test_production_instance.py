"""deploy/dagster.production.yaml is a valid Dagster instance config with what production needs."""

import yaml
from dagster._core.instance.config import dagster_instance_config

from pipeline.settings import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"


def test_production_instance_config_is_valid_and_complete(monkeypatch):
    for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_DB", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD"):
        monkeypatch.setenv(name, f"value-of-{name}")
    config, _ = dagster_instance_config(str(DEPLOY), "dagster.production.yaml")  # Dagster's own schema check
    assert config["storage"]["postgres"]["postgres_db"]["password"] == {"env": "DAGSTER_PG_PASSWORD"}
    assert config["concurrency"]["pools"]["default_limit"] == 1, "one warehouse writer"
    assert config["concurrency"]["runs"]["max_concurrent_runs"] >= 1
    assert config["run_retries"]["enabled"] is True
    assert config["run_monitoring"]["enabled"] is True
    database = yaml.safe_load((DEPLOY / "dagster.production.yaml").read_text())["storage"]["postgres"]["postgres_db"]
    assert all(isinstance(database[k], dict) for k in ("hostname", "username", "password")), "secrets from env only"
