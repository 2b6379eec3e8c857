"""deploy/dagster.production.yaml and devstack/dagster.yaml are valid Dagster instance configs with what each needs,
above all that a run whose worker died cannot hold the `warehouse` pool slot for good."""

import yaml
from dagster._core.instance.config import dagster_instance_config

from devstack import INSTANCE_YAML
from pipeline.core.settings import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"


def assert_dead_runs_free_their_slots(monitoring: dict, *, within: int) -> None:
    """Run monitoring on, freeing the slots of ended runs, the whole path bounded by `within` seconds."""
    assert monitoring["enabled"] is True, "the daemon's run monitoring (and slot release) is off"
    assert monitoring["free_slots_after_run_end_seconds"] > 0, "slots of dead runs would never be freed"
    freed_after = monitoring["free_slots_after_run_end_seconds"] + monitoring["poll_interval_seconds"]
    assert freed_after <= within
    assert monitoring["start_timeout_seconds"] > 0 and monitoring["cancel_timeout_seconds"] > 0


def test_production_instance_config_is_valid_and_complete(monkeypatch):
    for name in ("DAGSTER_PG_HOST", "DAGSTER_PG_DB", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD"):
        monkeypatch.setenv(name, f"value-of-{name}")
    config, _ = dagster_instance_config(str(DEPLOY), "dagster.production.yaml")  # Dagster's own schema check
    assert config["storage"]["postgres"]["postgres_db"]["password"] == {"env": "DAGSTER_PG_PASSWORD"}
    assert config["concurrency"]["pools"]["default_limit"] == 1, "one warehouse writer"
    assert config["concurrency"]["runs"]["max_concurrent_runs"] >= 1
    assert config["run_retries"]["enabled"] is True
    assert_dead_runs_free_their_slots(config["run_monitoring"], within=120)
    # The default run launcher cannot check a worker's health: a run whose worker vanished with its code server is
    # bounded by the maximum runtime only (hours, not forever), and nothing else replaced the launcher silently.
    assert 3600 <= config["run_monitoring"]["max_runtime_seconds"] <= 24 * 3600
    assert "run_launcher" not in config
    database = yaml.safe_load((DEPLOY / "dagster.production.yaml").read_text())["storage"]["postgres"]["postgres_db"]
    assert all(isinstance(database[k], dict) for k in ("hostname", "username", "password")), "secrets from env only"


def test_local_instance_config_is_valid_and_notices_dead_workers():
    config, _ = dagster_instance_config(str(INSTANCE_YAML.parent), INSTANCE_YAML.name)
    assert config["concurrency"]["pools"]["default_limit"] == 1, "one warehouse writer"
    assert_dead_runs_free_their_slots(config["run_monitoring"], within=30)
    assert config["run_launcher"] == {"module": "pipeline.run_launcher", "class": "LocalRunLauncher"}
    assert not (REPO_ROOT / "dagster.yaml").exists(), "`dagster dev` warns about a dagster.yaml where it runs"
