"""Resources: the warehouse (DuckDB), the landing store and the HTTP destinations.

Each is a thin handle built from settings; the logic that uses them lives in pure helpers next to the assets.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
import httpx

from .objectstore import LandingStore, open_landing_store
from .settings import Settings, secret
from .transport import RetryPolicy


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB file.

    DuckDB allows one writer process per file, and even a read-only connection fails while another process
    writes. So connections are opened per use and closed at the end of the `with` block — never held
    between steps — and every asset that touches the file runs in the `warehouse` pool (limit 1).
    """

    path: str

    @contextmanager
    def connect(self, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
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


class HttpDestinationResource(dg.ConfigurableResource):
    """What every HTTP destination of a sync shares: timeouts, retries and how many batches are in flight."""

    timeout_seconds: float = 30.0
    max_attempts: int = 6
    backoff_base_seconds: float = 0.5
    #: batches sent at once (each on its own pooled keep-alive connection); 1 sends them one after another
    max_concurrency: int = 4

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(max_attempts=self.max_attempts, base_delay_seconds=self.backoff_base_seconds)

    def _client(self, **kwargs) -> httpx.Client:
        """One pooled client per sync run (keep-alive connections, enough for the concurrency), with a timeout on
        every request. httpx clients are thread-safe."""
        limits = httpx.Limits(
            max_connections=max(1, self.max_concurrency), max_keepalive_connections=self.max_concurrency
        )
        return httpx.Client(timeout=self.timeout_seconds, limits=limits, **kwargs)


class CrmResource(HttpDestinationResource):
    """A HubSpot-CRM-v3-shaped API: the local devstack server in development, HubSpot (or alike) in production."""

    base_url: str
    token: str | None = None
    id_property: str = "tidewater_customer_id"
    batch_size: int = 100

    def client(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return self._client(base_url=self.base_url, headers=headers)


class WebhookResource(HttpDestinationResource):
    """A generic HTTP endpoint that receives signed JSON batches (see `pipeline.activation.signing`).

    `secret` may hold two comma-separated secrets while one is rotated: each request then carries both signatures.
    """

    base_url: str
    secret: str | None = None
    batch_size: int = 100

    def secrets(self) -> list[str]:
        return [part.strip() for part in (self.secret or "").split(",") if part.strip()]

    def client(self) -> httpx.Client:
        return self._client(base_url=self.base_url)


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
    """The shared resources, from settings; secrets stay `dg.EnvVar`s resolved inside the run."""
    return {
        "warehouse": WarehouseResource(path=str(settings.warehouse_path)),
        "landing": LandingResource(
            url=settings.landing_url, endpoint_url=settings.landing_endpoint_url, region=settings.landing_region
        ),
        "crm": CrmResource(
            base_url=settings.crm_url,
            token=secret("CRM_TOKEN"),
            id_property=settings.crm_id_property,
            batch_size=settings.crm_batch_size,
            timeout_seconds=settings.crm_timeout_seconds,
            max_concurrency=settings.sync_concurrency,
        ),
        "webhook": WebhookResource(
            base_url=settings.webhook_url, secret=secret("WEBHOOK_SECRET"), max_concurrency=settings.sync_concurrency
        ),
        "slack": SlackResource(webhook_url=secret("SLACK_WEBHOOK_URL")),
        "dbt_artifacts": DbtArtifactsResource(
            url=settings.dbt_artifacts_url, endpoint_url=settings.landing_endpoint_url, region=settings.landing_region
        ),
    }
