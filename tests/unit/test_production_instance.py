"""deploy/dagster.production.yaml and devstack/dagster.yaml are valid Dagster instance configs with what each needs."""

import yaml
from dagster._core.instance.config import dagster_instance_config

from devstack import INSTANCE_YAML
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


def test_local_instance_config_is_valid_and_outside_the_folder_dagster_dev_runs_in():
    config, _ = dagster_instance_config(str(INSTANCE_YAML.parent), INSTANCE_YAML.name)
    assert config["concurrency"]["pools"]["default_limit"] == 1, "one warehouse writer"
    assert not (REPO_ROOT / "dagster.yaml").exists(), "`dagster dev` warns about a dagster.yaml where it runs"
