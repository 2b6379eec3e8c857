"""Every setting of the code location, typed, read from the environment when asked (never at import time).

Local development needs no environment at all: each default points inside the repository (`.data/`), so
`make dev` works on a laptop. Production sets the same names to an `s3://` landing URL, a real CRM API and a
Slack webhook. Secrets (`CRM_TOKEN`, `SLACK_WEBHOOK_URL`) never become plain values here: `secret()` hands
Dagster a `dg.EnvVar`, so the value is resolved inside the run and never lands in config, logs or metadata.

Every setting is checked when the definitions load (`Settings.from_env`): a bad value stops the load with one
message naming each bad variable, its value (never a secret's) and the form it accepts, rather than surfacing
later as a Python parse error in a run, or not at all (a misspelt boolean, an unsupported URL scheme).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dagster as dg

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = REPO_ROOT / ".data"
#: the landing-file contracts the code location ships with (the demo's systems); LANDING_CONTRACTS_PATH replaces it
CONTRACTS_PATH = REPO_ROOT / "pipeline" / "ingestion" / "contracts.yaml"

#: The DuckDB file allows one writer process: every asset that writes the warehouse sits in this pool,
#: whose limit is 1 in the instance config (devstack/dagster.yaml, deploy/dagster.production.yaml).
WAREHOUSE_POOL = "warehouse"

SECRET_NAMES = ("CRM_TOKEN", "SLACK_WEBHOOK_URL", "WEBHOOK_SECRET", "DBT_CLOUD_TOKEN")

#: dbt Cloud's multi-tenant US address; other regions and single-tenant accounts set DBT_CLOUD_URL
DBT_CLOUD_DEFAULT_URL = "https://cloud.getdbt.com"
#: what a Dagster run does when the dbt Cloud job it would trigger already has a run in progress
DBT_CLOUD_IF_RUNNING = ("wait", "skip")
#: the dbt Cloud jobs' schedules, imported (`python -m pipeline.transformation.cloud_jobs`)
DBT_CLOUD_SCHEDULES_PATH = REPO_ROOT / "pipeline" / "automation" / "dbt_cloud_schedules.yaml"


#: What happens to a landing file after its load (pipeline.ingestion.quarantine.ProcessedAction).
PROCESSED_ACTIONS = ("move", "tag", "leave")
CRON = "a cron expression of 5 fields (minute hour day-of-month month day-of-week) such as '0 6 * * *', or @daily"
ALERT_ROUTES_FORM = 'a JSON object of owner -> http(s) webhook URL, e.g. {"team:finance_data": "https://hooks..."}'

STORE_URL_FORM = "a local folder, file:///path or s3://bucket/prefix"

T = TypeVar("T")


class ConfigurationError(ValueError):
    """A setting or a declared file (contracts.yaml, syncs.yaml) the code location cannot load with.

    Its message is everything a user needs (which variable or file:line, the value, the accepted form), so the
    definitions loader shows it without a traceback (`pipeline.definitions`).
    """


class SettingsError(ConfigurationError):
    """Every invalid setting at once, one line each: fixing them one load at a time would be slow."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        count = f"{len(problems)} settings are" if len(problems) > 1 else "A setting is"
        super().__init__(
            f"{count} invalid (environment variables; the README's settings table lists each one):\n"
            + "\n".join(f"  {p}" for p in problems)
        )


#: Values a boolean setting accepts, case-insensitively.
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
#: S3's bucket naming rules (3-63 characters: lower-case letters, digits, dots, hyphens; a letter or digit at
#: both ends)
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


def _path(value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (Path.cwd() / path).resolve()


def _choice(allowed: tuple[str, ...]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in allowed:
            raise ValueError("")
        return value

    return parse


def _one_of(allowed: tuple[str, ...]) -> str:
    return "one of " + ", ".join(allowed)


def _region(value: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9\-]*", value):
        raise ValueError("")
    return value


def _property_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_\-]+", value):
        raise ValueError("")
    return value


#: DUCKDB_PATH's form for a MotherDuck database (dbt-duckdb and DuckDB open it through the motherduck extension)
MOTHERDUCK_PREFIX = "md:"
MOTHERDUCK_FORM = "a file path (not a folder), or md:<database> for a MotherDuck database (e.g. md:analytics)"


def is_motherduck(warehouse: Path | str) -> bool:
    return isinstance(warehouse, str) and warehouse.startswith(MOTHERDUCK_PREFIX)


def _warehouse_path(read: _Reader) -> Path | str:
    """DUCKDB_PATH: a DuckDB file, or `md:<database>`. A token inside the path (`?motherduck_token=...`) is refused
    without showing it: it belongs in MOTHERDUCK_TOKEN, a secret, not in a setting that is logged and shown."""
    raw = (read.env.get("DUCKDB_PATH") or "").strip()
    if raw.startswith(MOTHERDUCK_PREFIX) and ("?" in raw or "token" in raw.lower()):
        read.problems.append(
            "DUCKDB_PATH (value not shown: it holds a token): expected md:<database> alone; put the MotherDuck token"
            " in MOTHERDUCK_TOKEN (a secret)"
        )
        return raw.split("?", 1)[0]
    return read("DUCKDB_PATH", DATA_DIR / "warehouse.duckdb", _warehouse, MOTHERDUCK_FORM)


def _warehouse(value: str) -> Path | str:
    if value.startswith(MOTHERDUCK_PREFIX):
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value[len(MOTHERDUCK_PREFIX) :]):
            raise ValueError("a MotherDuck database name: letters, digits and _")
        return value
    return _file_path(value)


def _motherduck_needs(read: _Reader, settings: Settings) -> None:
    """What a MotherDuck warehouse needs besides its path: the token (read by DuckDB's motherduck extension itself,
    in the code location's processes and dbt's), and a local folder for the syncs' journals (no warehouse file to
    keep them beside)."""
    if not is_motherduck(settings.warehouse_path):
        return
    where = f"DUCKDB_PATH={settings.warehouse_path}"
    if not any((read.env.get(name) or "").strip() for name in ("MOTHERDUCK_TOKEN", "motherduck_token")):
        read.problems.append(
            f"MOTHERDUCK_TOKEN is not set: {where} is a MotherDuck database, and DuckDB and dbt sign in with it"
            " (an access token from MotherDuck's settings; keep it a secret)"
        )
    if settings.sync_journal_dir is None:
        read.problems.append(
            f"SYNC_JOURNAL_DIR is not set: {where} has no local folder to keep the syncs' delivery journals in;"
            " set it to a persistent folder (e.g. /data/journals on deploy/compose.yaml's data volume)"
        )


def _folder_path(value: str) -> Path:
    path = _path(value)
    if path.is_file():
        raise ValueError("")
    return path


def _file_path(value: str) -> Path:
    path = _path(value)
    if path.is_dir():
        raise ValueError("")
    return path


def _existing_file(value: str) -> Path:
    path = _path(value)
    if not path.is_file():
        raise ValueError(f"no file at {path}")
    return path


def _integer(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(value: str) -> int:
        number = int(value)  # ValueError for "abc", "1.5"; the expected form says all there is to say
        if number < low or (high is not None and number > high):
            raise ValueError("")
        return number

    return parse


def _number(low: float, high: float) -> Callable[[str], float]:
    """A finite number above `low` (exclusive) and at most `high`."""

    def parse(value: str) -> float:
        number = float(value)
        if not math.isfinite(number) or not low < number <= high:
            raise ValueError("")
        return number

    return parse


def _boolean(value: str) -> bool:
    if value.lower() in TRUE_WORDS:
        return True
    if value.lower() in FALSE_WORDS:
        return False
    raise ValueError("")


def _landing_start(value: str) -> str:
    """An ISO date no later than today: the first daily partition of the raw tables."""
    day = date.fromisoformat(value) if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value) else None
    if day is None:
        raise ValueError("")
    today = datetime.now(UTC).date()
    if day > today:
        raise ValueError(f"it is after today ({today}): no landing day would have a partition")
    return value


def cron_expression(value: str) -> str:
    """What Dagster's schedules accept, checked by Dagster itself (5 fields or @daily-style, no Feb 30)."""
    try:
        dg.ScheduleDefinition(name="setting_check", cron_schedule=value, job_name="setting_check")
    except dg.DagsterInvalidDefinitionError:
        raise ValueError("") from None
    return value


def time_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError("") from None
    return value


def _http_url(value: str) -> str:
    """An http(s) URL with a host. Raises with no detail: the value may be a secret (a webhook URL)."""
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise ValueError("") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("")
    return value.rstrip("/")


def store_url(value: str) -> str:
    """A local folder (a path or file://...) or s3://bucket[/prefix]; any other scheme is a mistake, not a folder."""
    scheme = _SCHEME.match(value)
    if scheme is None or scheme.group(1) == "file":
        path = _path(value.removeprefix("file://"))
        if path.exists() and not path.is_dir():
            raise ValueError("it is a file")
        return value
    if scheme.group(1) != "s3":
        raise ValueError(f"{scheme.group(1)}:// is not supported")
    bucket = value.removeprefix("s3://").split("/", 1)[0]
    if not _BUCKET.match(bucket):
        raise ValueError(f"{bucket!r} is not a valid bucket name")
    return value


def _folder_holding(filename: str) -> Callable[[str], Path]:
    def parse(value: str) -> Path:
        path = _path(value)
        if not (path / filename).is_file():
            raise ValueError(f"no {filename} in {path}")
        return path

    return parse


def _alert_routes(value: str) -> dict[str, str]:
    """Owner -> webhook URL. The URLs are secrets: a problem names the owner, never the URL."""
    try:
        routes = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(routes, dict):
        raise ValueError(f"a JSON {type(routes).__name__}, not an object")
    bad = [str(owner) for owner, url in routes.items() if not isinstance(url, str) or not _is_http_url(url)]
    if bad:
        raise ValueError(f"the route of {', '.join(map(repr, bad))} is not an http(s) URL")
    return routes


def _is_http_url(value: str) -> bool:
    try:
        _http_url(value)
    except ValueError:
        return False
    return True


class _Reader:
    """Reads settings from an environment, collecting every problem instead of stopping at the first."""

    def __init__(self, env: Mapping[str, str]):
        self.env = env
        self.problems: list[str] = []

    def __call__(self, name: str, default: T, parse: Callable[[str], T], accepted: str, secret: bool = False) -> T:
        """The parsed value of `name`, or `default` when it is unset or blank (`NAME=` in a .env file)."""
        raw = self.env.get(name)
        if raw is None or not raw.strip():
            return default
        try:
            return parse(raw.strip())
        except ValueError as exc:
            # int() and float() explain nothing the expected form does not; the parsers of secret settings put
            # nothing of the value in their own messages.
            detail = "" if str(exc).startswith(("invalid literal", "could not convert")) else str(exc)
            shown = f"{name} (value not shown: a secret)" if secret else f"{name}={raw!r}"
            self.problems.append(f"{shown}: expected {accepted}" + (f" ({detail})" if detail else ""))
            return default


@dataclass(frozen=True)
class DbtCloudSettings:
    """The dbt Cloud engine (pipeline/transformation/cloud.py): set DBT_CLOUD_ACCOUNT_ID and the transformation stage
    runs the project's `dbt build` as dbt Cloud runs instead of dbt Core. The token stays a secret: its variable's
    name is kept here, its value is read where the client is built."""

    account_id: int
    project_id: int
    environment_id: int
    url: str
    #: the dbt Cloud job Dagster triggers (with its commands overridden by the selection); created when absent.
    #: None: dagster-dbt's own name for it, DAGSTER_ADHOC_JOB__<project>__<environment>
    job_name: str | None
    #: dbt selection of the project's nodes that become assets (dbt's --select / --exclude syntax)
    select: str
    exclude: str
    poll_interval_seconds: float
    timeout_seconds: float
    #: wait: for a run of the job already in progress to end first; skip: end the step with the reason, build nothing
    if_running: str
    #: the imported dbt Cloud job schedules (loaded when the file exists)
    schedules_path: Path
    #: how often the polling sensor asks dbt Cloud for runs its own scheduler (or a person) started
    sensor_interval_seconds: int
    token_variable: str = "DBT_CLOUD_TOKEN"


@dataclass(frozen=True)
class Settings:
    """Non-secret settings. Build with `Settings.from_env()` inside a definitions loader or a run.

    `from_env` checks every setting, and the form of the secrets, so a mistake stops the code location from
    loading with one message naming each bad variable, instead of failing a run later (or silently, as a
    misspelt boolean would).
    """

    landing_url: str
    landing_endpoint_url: str | None
    landing_region: str | None
    landing_start_date: str
    landing_processed_action: str
    #: the landing-file contracts (contracts.yaml): which systems deliver which files into which raw tables
    landing_contracts_path: Path
    sensor_interval_seconds: int
    sensor_overlap_seconds: int
    sensor_lookback_days: int
    #: how often, at most, a tick lists every landing day when the days before the lookback hold many files
    sensor_sweep_minutes: float
    #: the DuckDB file, or a MotherDuck database (`md:<database>`, a str: no local file)
    warehouse_path: Path | str
    #: where the syncs keep their delivery journals (SQLite); None: beside the warehouse file
    sync_journal_dir: Path | None
    dbt_project_dir: Path
    dbt_profiles_dir: Path
    dbt_target: str | None
    #: run incremental dbt models (and the models upstream of them) as daily partitions, the window as vars
    dbt_partition_incremental: bool
    #: incremental dbt models re-read this many landing days before their partition (late files)
    dbt_window_lookback_days: int
    #: scheduled, automated and backfill runs build only the dbt nodes whose code or inputs changed
    dbt_state_aware: bool
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
    #: the speed-ups that rely on Dagster's, dagster-dbt's or dbt-duckdb's internals (pipeline/fastpaths/):
    #: auto (on with the versions they were verified against), on, off
    fast_paths: str = "auto"
    #: None: dbt Core runs the project (the default); set: dbt Cloud does (DBT_CLOUD_ACCOUNT_ID and the rest)
    dbt_cloud: DbtCloudSettings | None = None

    @property
    def dbt_engine(self) -> str:
        return "cloud" if self.dbt_cloud is not None else "core"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Every setting from the environment; raises SettingsError listing each invalid one."""
        read = _Reader(os.environ if environ is None else environ)
        http = "an http(s) URL such as https://api.example.com"
        dbt_project_dir = read(
            "DBT_PROJECT_DIR",
            REPO_ROOT / "dbt_project",
            _folder_holding("dbt_project.yml"),
            "the folder of a dbt project (holding dbt_project.yml)",
        )
        settings = cls(
            landing_url=read("LANDING_URL", str(DATA_DIR / "landing"), store_url, STORE_URL_FORM),
            landing_endpoint_url=read("LANDING_ENDPOINT_URL", None, _http_url, http),
            landing_region=read("LANDING_REGION", None, _region, "an AWS region name such as eu-west-1"),
            landing_start_date=read(
                "LANDING_START_DATE", "2026-01-01", _landing_start, "a date as YYYY-MM-DD, no later than today"
            ),
            landing_processed_action=read(
                "LANDING_PROCESSED_ACTION", "move", _choice(PROCESSED_ACTIONS), _one_of(PROCESSED_ACTIONS)
            ),
            landing_contracts_path=read(
                "LANDING_CONTRACTS_PATH",
                CONTRACTS_PATH,
                _existing_file,
                "the path of a contracts YAML file (see pipeline/ingestion/contracts.yaml)",
            ),
            sensor_interval_seconds=read(
                "LANDING_SENSOR_INTERVAL_SECONDS", 30, _integer(1, 86_400), "a whole number of seconds, 1 to 86400"
            ),
            sensor_overlap_seconds=read(
                "LANDING_SENSOR_OVERLAP_SECONDS", 300, _integer(0, 86_400), "a whole number of seconds, 0 to 86400"
            ),
            sensor_lookback_days=read(
                "LANDING_SENSOR_LOOKBACK_DAYS", 7, _integer(0, 3_660), "a whole number of days, 0 to 3660"
            ),
            sensor_sweep_minutes=read(
                "LANDING_SENSOR_SWEEP_MINUTES", 10.0, _number(0, 10_080), "a number of minutes above 0, at most 10080"
            ),
            warehouse_path=_warehouse_path(read),
            sync_journal_dir=read("SYNC_JOURNAL_DIR", None, _folder_path, "a folder path (not a file)"),
            dbt_project_dir=dbt_project_dir,
            dbt_profiles_dir=read(
                "DBT_PROFILES_DIR",
                dbt_project_dir,
                _folder_holding("profiles.yml"),
                "the folder holding dbt's profiles.yml",
            ),
            dbt_target=read("DBT_TARGET", None, str, "a target name of the dbt profile"),
            dbt_partition_incremental=read(
                "DBT_PARTITION_INCREMENTAL", True, _boolean, f"one of {', '.join(TRUE_WORDS + FALSE_WORDS)}"
            ),
            dbt_window_lookback_days=read(
                "DBT_WINDOW_LOOKBACK_DAYS", 3, _integer(0, 366), "a whole number of days, 0 to 366"
            ),
            dbt_state_aware=read("DBT_STATE_AWARE", True, _boolean, f"one of {', '.join(TRUE_WORDS + FALSE_WORDS)}"),
            crm_url=read("CRM_URL", "http://127.0.0.1:8765", _http_url, http),
            crm_id_property=read(
                "CRM_ID_PROPERTY", "tidewater_customer_id", _property_name, "a CRM property name such as customer_id"
            ),
            crm_batch_size=read(
                "CRM_BATCH_SIZE", 100, _integer(1, 100), "a whole number from 1 to 100 (HubSpot's batch limit)"
            ),
            crm_timeout_seconds=read(
                "CRM_TIMEOUT_SECONDS", 30.0, _number(0, 3_600), "a number of seconds above 0, at most 3600"
            ),
            webhook_url=read("WEBHOOK_URL", "http://127.0.0.1:8766/hooks", _http_url, http),
            sync_concurrency=read("SYNC_CONCURRENCY", 4, _integer(1, 64), "a whole number from 1 to 64"),
            ui_base_url=read("DAGSTER_UI_BASE_URL", "http://127.0.0.1:3000", _http_url, http),
            timezone=read("PIPELINE_TIMEZONE", "UTC", time_zone, "an IANA time zone such as Europe/Berlin or UTC"),
            daily_build_cron=read("DAILY_BUILD_CRON", "0 6 * * *", cron_expression, CRON),
            raw_freshness_deadline_cron=read("RAW_FRESHNESS_DEADLINE_CRON", "0 9 * * *", cron_expression, CRON),
            mart_freshness_hours=read(
                "MART_FRESHNESS_HOURS", 26.0, _number(0, 8_784), "a number of hours above 0, at most 8784 (a year)"
            ),
            dbt_artifacts_url=read("DBT_ARTIFACTS_URL", str(DATA_DIR / "dbt_artifacts"), store_url, STORE_URL_FORM),
            fast_paths=read(FAST_PATHS_SETTING, "auto", _choice(FAST_PATHS_MODES), _one_of(FAST_PATHS_MODES)),
            dbt_cloud=_dbt_cloud_settings(read),
        )
        _motherduck_needs(read, settings)
        # Read by dbt's profile and by the alert sensors, not kept here; their form is checked all the same.
        read("DBT_THREADS", 4, _integer(1, 256), "a whole number of threads, 1 to 256")
        read("ALERT_ROUTES", {}, _alert_routes, ALERT_ROUTES_FORM, secret=True)  # as alert_routes() reads it
        for name in ("ALERT_WEBHOOK_URL", "SLACK_WEBHOOK_URL"):
            read(name, None, _http_url, "an http(s) webhook URL", secret=True)
        if read.problems:
            raise SettingsError(read.problems)
        return settings


def _dbt_cloud_settings(read: _Reader) -> DbtCloudSettings | None:
    """DBT_CLOUD_*: None unless DBT_CLOUD_ACCOUNT_ID is set; then the project, the environment and the token are
    required too (each missing one is a problem of its own)."""
    ident = "a dbt Cloud id: a whole number (from the dbt Cloud URL, e.g. .../deploy/<account>/projects/<project>)"
    account = read("DBT_CLOUD_ACCOUNT_ID", None, _integer(1), ident)
    others = [  # the token alone may be set for other tools
        name
        for name in read.env
        if name.startswith("DBT_CLOUD_") and name != "DBT_CLOUD_TOKEN" and (read.env.get(name) or "").strip()
    ]
    account_set = bool((read.env.get("DBT_CLOUD_ACCOUNT_ID") or "").strip())
    if account is None and not account_set:
        if others:
            read.problems.append(
                f"{', '.join(sorted(others))} set without DBT_CLOUD_ACCOUNT_ID: set it to run dbt on dbt Cloud, or"
                " unset them to run it with dbt Core"
            )
        return None
    required = [name for name in ("DBT_CLOUD_PROJECT_ID", "DBT_CLOUD_ENVIRONMENT_ID") if not read.env.get(name)]
    if not (read.env.get("DBT_CLOUD_TOKEN") or "").strip():
        required.append("DBT_CLOUD_TOKEN")
    for name in required:
        read.problems.append(f"{name} is not set: DBT_CLOUD_ACCOUNT_ID is, so dbt Cloud runs dbt and needs it")
    seconds = "a number of seconds above 0, at most {}"
    read("DBT_CLOUD_TOKEN", None, _token, "an API token (a service token, dbtc_...) without spaces", secret=True)
    cloud = DbtCloudSettings(
        account_id=account or 0,
        project_id=read("DBT_CLOUD_PROJECT_ID", 0, _integer(1), ident),
        environment_id=read("DBT_CLOUD_ENVIRONMENT_ID", 0, _integer(1), ident),
        url=read(
            "DBT_CLOUD_URL",
            DBT_CLOUD_DEFAULT_URL,
            _http_url,
            "the https URL of your dbt Cloud account, e.g. https://emea.dbt.com or https://ab123.us1.dbt.com",
        ),
        job_name=read("DBT_CLOUD_JOB_NAME", None, _job_name, "a dbt Cloud job name (one line, at most 255 characters)"),
        select=read("DBT_CLOUD_SELECT", "fqn:*", str, "a dbt selection such as `fqn:*` or `tag:nightly+`"),
        exclude=read("DBT_CLOUD_EXCLUDE", "", str, "a dbt selection such as `tag:deprecated`"),
        poll_interval_seconds=read("DBT_CLOUD_POLL_INTERVAL_SECONDS", 10.0, _number(0, 3_600), seconds.format(3600)),
        timeout_seconds=read("DBT_CLOUD_TIMEOUT_SECONDS", 3_600.0, _number(0, 86_400), seconds.format(86400)),
        if_running=read("DBT_CLOUD_IF_RUNNING", "wait", _choice(DBT_CLOUD_IF_RUNNING), _one_of(DBT_CLOUD_IF_RUNNING)),
        schedules_path=read(
            "DBT_CLOUD_SCHEDULES_PATH", DBT_CLOUD_SCHEDULES_PATH, _file_path, "a file path (not a folder)"
        ),
        sensor_interval_seconds=read(
            "DBT_CLOUD_SENSOR_INTERVAL_SECONDS", 30, _integer(1, 86_400), "a whole number of seconds, 1 to 86400"
        ),
    )
    return cloud if account is not None else None  # a bad account id is a problem already: the load stops


def _token(value: str) -> str:
    if any(c.isspace() for c in value):
        raise ValueError("")
    return value


def _job_name(value: str) -> str:
    if "\n" in value or len(value) > 255:
        raise ValueError("")
    return value


#: The one switch of the fast paths (pipeline/fastpaths/): off, every one of them steps aside for the public path;
#: auto (the default), they are on with the library versions they were verified against and off with any other.
FAST_PATHS_SETTING = "PIPELINE_FAST_PATHS"
FAST_PATHS_MODES = ("auto", "on", "off")


def fast_paths_mode(environ: Mapping[str, str] | None = None) -> str:
    """PIPELINE_FAST_PATHS, read where it is used: in the code location, a run worker and the instance's storage
    (which Dagster builds outside any code location); see `pipeline.fastpaths.enabled`. A bad value fails as
    `Settings.from_env` fails on it."""
    read = _Reader(os.environ if environ is None else environ)
    mode = read(FAST_PATHS_SETTING, "auto", _choice(FAST_PATHS_MODES), _one_of(FAST_PATHS_MODES))
    if read.problems:
        raise SettingsError(read.problems)
    return mode


def alert_routes(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """ALERT_ROUTES (owner -> webhook URL), read when an alert sensor evaluates; `Settings.from_env` already
    checked its form when the definitions loaded."""
    read = _Reader(os.environ if environ is None else environ)
    routes = read("ALERT_ROUTES", {}, _alert_routes, ALERT_ROUTES_FORM, secret=True)
    if read.problems:
        raise SettingsError(read.problems)
    return routes


def secret(name: str, environ: Mapping[str, str] | None = None) -> dg.EnvVar | None:
    """A `dg.EnvVar` for a secret that is set, or None when it is not (the feature it enables is then off)."""
    if name not in SECRET_NAMES:
        raise KeyError(f"{name} is not a known secret: {SECRET_NAMES}")
    env = os.environ if environ is None else environ
    return dg.EnvVar(name) if env.get(name) else None


#: The slim CI command's warehouses (pipeline/slim_ci.py), read there only: the code location never opens them.
SLIM_CI_DUCKDB_PATH = "SLIM_CI_DUCKDB_PATH"
SLIM_CI_PRODUCTION_DUCKDB_PATH = "SLIM_CI_PRODUCTION_DUCKDB_PATH"
#: where the CI warehouse and the report go by default
CI_DIR = DATA_DIR / "ci"


def slim_ci_paths(warehouse_path: Path | str, environ: Mapping[str, str] | None = None) -> tuple[Path, Path]:
    """(CI warehouse, production warehouse) of the slim CI command.

    Production is SLIM_CI_PRODUCTION_DUCKDB_PATH (production's file, or a snapshot of it), else DUCKDB_PATH
    (`warehouse_path`). The CI warehouse is SLIM_CI_DUCKDB_PATH, else a file of DUCKDB_PATH's name in `.data/ci/`:
    the same base name as production's, since dbt-duckdb names the catalog after the file and `--defer` resolves
    unbuilt models to production's relation names (`warehouse.main.dim_customers`).
    """
    read = _Reader(os.environ if environ is None else environ)
    if is_motherduck(warehouse_path) and not (read.env.get(SLIM_CI_PRODUCTION_DUCKDB_PATH) or "").strip():
        raise SettingsError(
            [
                f"{SLIM_CI_PRODUCTION_DUCKDB_PATH} is not set: DUCKDB_PATH={warehouse_path} is a MotherDuck database,"
                " and slim CI copies a DuckDB file; point it at a local copy of production (e.g. from MotherDuck's"
                " `COPY FROM DATABASE` into a file)"
            ]
        )
    default = Path(str(warehouse_path))
    production = read(SLIM_CI_PRODUCTION_DUCKDB_PATH, default, _file_path, "a file path (not a folder)")
    ci = read(SLIM_CI_DUCKDB_PATH, CI_DIR / production.name, _file_path, "a file path (not a folder)")
    if read.problems:
        raise SettingsError(read.problems)
    return ci, production
