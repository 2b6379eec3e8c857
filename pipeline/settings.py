"""Every setting of the code location, typed, read from the environment when asked (never at import time).

Local development needs no environment at all: each default points inside the repository (`.data/`), so
`make dev` works on a laptop. Production sets the same names to an `s3://` landing URL, a real CRM API and a
Slack webhook. Secrets (`CRM_TOKEN`, `SLACK_WEBHOOK_URL`) never become plain values here: `secret()` hands
Dagster a `dg.EnvVar`, so the value is resolved inside the run and never lands in config, logs or metadata.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dagster as dg
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = REPO_ROOT / ".data"

#: The DuckDB file allows one writer process: every asset that writes the warehouse sits in this pool,
#: whose limit is 1 in the instance config (devstack/dagster.yaml, deploy/dagster.production.yaml).
WAREHOUSE_POOL = "warehouse"

SECRET_NAMES = ("CRM_TOKEN", "SLACK_WEBHOOK_URL", "WEBHOOK_SECRET")


#: libyaml's parser when PyYAML was built with it (the wheels are): ~5x faster than the pure-Python one
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_yaml(path: Path) -> object:
    """A YAML file's document, parsed as `yaml.safe_load` does (the code location reads its YAML at every load)."""
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER)  # noqa: S506 - a safe loader


def _path(value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (Path.cwd() / path).resolve()


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name) or default
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def _timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"PIPELINE_TIMEZONE must be an IANA time zone such as Europe/Berlin, got {name!r}") from exc
    return name


@dataclass(frozen=True)
class Settings:
    """Non-secret settings. Build with `Settings.from_env()` inside a definitions loader or a run."""

    landing_url: str
    landing_endpoint_url: str | None
    landing_region: str | None
    landing_start_date: str
    landing_processed_action: str
    sensor_interval_seconds: int
    sensor_overlap_seconds: int
    sensor_lookback_days: int
    #: how often, at most, a tick lists every landing day when the days before the lookback hold many files
    sensor_sweep_minutes: float
    warehouse_path: Path
    dbt_project_dir: Path
    dbt_profiles_dir: Path
    dbt_target: str | None
    #: run incremental dbt models (and the models upstream of them) as daily partitions, the window as vars
    dbt_partition_incremental: bool
    #: incremental dbt models re-read this many landing days before their partition (late files)
    dbt_window_lookback_days: int
    crm_url: str
    crm_id_property: str
    crm_batch_size: int
    crm_timeout_seconds: float
    webhook_url: str
    sync_concurrency: int
    ui_base_url: str
    #: IANA zone the schedules and freshness deadlines are read in
    timezone: str
    daily_build_cron: str
    #: raw files of a landing day are expected by this cron tick (in `timezone`)
    raw_freshness_deadline_cron: str
    #: marts must have been rebuilt within this many hours
    mart_freshness_hours: float
    #: where each dbt invocation's manifest.json / run_results.json are kept: a folder or an s3:// prefix
    dbt_artifacts_url: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        dbt_project_dir = _path(env.get("DBT_PROJECT_DIR") or str(REPO_ROOT / "dbt_project"))
        batch_size = int(env.get("CRM_BATCH_SIZE", "100"))
        if not 1 <= batch_size <= 100:
            raise ValueError(f"CRM_BATCH_SIZE must be between 1 and 100 (HubSpot's batch limit), got {batch_size}")
        return cls(
            landing_url=env.get("LANDING_URL") or str(DATA_DIR / "landing"),
            landing_endpoint_url=env.get("LANDING_ENDPOINT_URL") or None,
            landing_region=env.get("LANDING_REGION") or None,
            landing_start_date=env.get("LANDING_START_DATE") or "2026-01-01",
            landing_processed_action=_choice(env, "LANDING_PROCESSED_ACTION", "move", ("move", "tag", "leave")),
            sensor_interval_seconds=int(env.get("LANDING_SENSOR_INTERVAL_SECONDS", "30")),
            sensor_overlap_seconds=int(env.get("LANDING_SENSOR_OVERLAP_SECONDS", "300")),
            sensor_lookback_days=int(env.get("LANDING_SENSOR_LOOKBACK_DAYS", "7")),
            sensor_sweep_minutes=float(env.get("LANDING_SENSOR_SWEEP_MINUTES", "10")),
            warehouse_path=_path(env.get("DUCKDB_PATH") or str(DATA_DIR / "warehouse.duckdb")),
            dbt_project_dir=dbt_project_dir,
            dbt_profiles_dir=_path(env.get("DBT_PROFILES_DIR") or str(dbt_project_dir)),
            dbt_target=env.get("DBT_TARGET") or None,
            dbt_partition_incremental=(env.get("DBT_PARTITION_INCREMENTAL") or "1").lower() in ("1", "true", "yes"),
            dbt_window_lookback_days=int(env.get("DBT_WINDOW_LOOKBACK_DAYS", "3")),
            crm_url=(env.get("CRM_URL") or "http://127.0.0.1:8765").rstrip("/"),
            crm_id_property=env.get("CRM_ID_PROPERTY") or "tidewater_customer_id",
            crm_batch_size=batch_size,
            crm_timeout_seconds=float(env.get("CRM_TIMEOUT_SECONDS", "30")),
            webhook_url=(env.get("WEBHOOK_URL") or "http://127.0.0.1:8766/hooks").rstrip("/"),
            sync_concurrency=int(env.get("SYNC_CONCURRENCY", "4")),
            ui_base_url=(env.get("DAGSTER_UI_BASE_URL") or "http://127.0.0.1:3000").rstrip("/"),
            timezone=_timezone(env.get("PIPELINE_TIMEZONE") or "UTC"),
            daily_build_cron=env.get("DAILY_BUILD_CRON") or "0 6 * * *",
            raw_freshness_deadline_cron=env.get("RAW_FRESHNESS_DEADLINE_CRON") or "0 9 * * *",
            mart_freshness_hours=float(env.get("MART_FRESHNESS_HOURS", "26")),
            dbt_artifacts_url=env.get("DBT_ARTIFACTS_URL") or str(DATA_DIR / "dbt_artifacts"),
        )


def secret(name: str, environ: Mapping[str, str] | None = None) -> dg.EnvVar | None:
    """A `dg.EnvVar` for a secret that is set, or None when it is not (the feature it enables is then off)."""
    if name not in SECRET_NAMES:
        raise KeyError(f"{name} is not a known secret: {SECRET_NAMES}")
    env = os.environ if environ is None else environ
    return dg.EnvVar(name) if env.get(name) else None
