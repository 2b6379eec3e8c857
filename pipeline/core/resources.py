"""Resources the stages share: the warehouse (DuckDB), the landing store, dbt's artifact store and Slack. (Each sync
destination's resource comes with its destination type, see `pipeline.activation.destinations`.)

Each is a thin handle built from settings; the logic that uses them lives in pure helpers next to the assets.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
import httpx

from .objectstore import LandingStore, open_landing_store
from .settings import Settings, is_motherduck, secret


def connect_motherduck(path: str, read_only: bool) -> duckdb.DuckDBPyConnection:
    """A MotherDuck database (`md:<database>`) through DuckDB's motherduck extension, which DuckDB downloads on first
    use and which reads MOTHERDUCK_TOKEN itself; a failure says which setting and what to check."""
    try:
        return duckdb.connect(path, read_only=read_only)
    except duckdb.Error as exc:
        raise dg.Failure(
            f"Could not open the MotherDuck database DUCKDB_PATH={path}: {exc}. Check MOTHERDUCK_TOKEN, that this"
            " machine reaches MotherDuck (and, for the first use, DuckDB's extension repository to install the"
            " motherduck extension), or pre-install the extension in the image."
        ) from exc


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB file.

    DuckDB allows one writer process per file, and even a read-only connection fails while another process
    writes. So connections are opened per use and closed at the end of the `with` block — never held
    between steps — and every asset that touches the file runs in the `warehouse` pool (limit 1).
    """

    path: str
    #: where the syncs keep their delivery journals; None: beside the warehouse file (SYNC_JOURNAL_DIR)
    journal_dir: str | None = None

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        if is_motherduck(self.path):
            conn = connect_motherduck(self.path, read_only)
        else:
            path = Path(self.path)
            if not read_only:
                path.parent.mkdir(parents=True, exist_ok=True)
            conn = duckdb.connect(str(path), read_only=read_only)
        try:
            yield conn
        finally:
            conn.close()


class LandingResource(dg.ConfigurableResource):
    """Where source files land: a local folder (default) or an `s3://bucket/prefix` URL.

    `endpoint_url` points the S3 client at MinIO or any S3-compatible store; credentials always come from the
    standard AWS chain (environment, profile, instance role), never from here.
    """

    url: str
    endpoint_url: str | None = None
    region: str | None = None

    def store(self) -> LandingStore:
        return open_landing_store(self.url, endpoint_url=self.endpoint_url, region=self.region)


class DbtArtifactsResource(dg.ConfigurableResource):
    """Where every dbt invocation's manifest.json and run_results.json are kept (see transformation.artifacts): an
    object store, like the landing files'."""

    url: str
    endpoint_url: str | None = None
    region: str | None = None

    def store(self) -> LandingStore:
        return open_landing_store(self.url, endpoint_url=self.endpoint_url, region=self.region)


class SlackResource(dg.ConfigurableResource):
    """A Slack incoming webhook; when no URL is configured, notifications are skipped, not failed."""

    webhook_url: str | None = None
    timeout_seconds: float = 10.0

    @property
    def enabled(self) -> bool:
        return bool(self.webhook_url)

    def post(self, payload: dict) -> None:
        if not self.webhook_url:
            raise RuntimeError("SLACK_WEBHOOK_URL is not set")
        response = httpx.post(self.webhook_url, json=payload, timeout=self.timeout_seconds)
        response.raise_for_status()


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """The shared resources, from settings; secrets stay `dg.EnvVar`s resolved inside the run. The code location adds
    the destinations' resources (activation provides them)."""
    return {
        "warehouse": WarehouseResource(
            path=str(settings.warehouse_path),
            journal_dir=str(settings.sync_journal_dir) if settings.sync_journal_dir else None,
        ),
        "landing": LandingResource(
            url=settings.landing_url, endpoint_url=settings.landing_endpoint_url, region=settings.landing_region
        ),
        "slack": SlackResource(webhook_url=secret("SLACK_WEBHOOK_URL")),
        "dbt_artifacts": DbtArtifactsResource(
            url=settings.dbt_artifacts_url, endpoint_url=settings.landing_endpoint_url, region=settings.landing_region
        ),
    }
