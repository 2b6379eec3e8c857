"""`webhook`: any HTTP endpoint; JSON batches signed with HMAC-SHA256 (see `signing`), one `Idempotency-Key` per
batch that a receiver uses to apply each batch once.

Its own sync key: `path`, where under WEBHOOK_URL the sync's batches are posted (default: /<sync name>); the object
it writes is the asset `webhook/<path>` (slashes inside the path as `__`).

Settings: WEBHOOK_URL, WEBHOOK_SECRET, SYNC_CONCURRENCY.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import dagster as dg
import httpx

from ...core.settings import Settings, secret
from ...core.sql import quote_literal
from ...core.transport import Delivery, RetryingSender, raise_for_error
from .. import shape
from ..outbox import Batch
from ..signing import json_body, sign
from ..syncs import SyncSpec
from . import DestinationType, HttpDestinationResource, register

PATH = re.compile(r"/[A-Za-z0-9_\-./~]*")


class WebhookResource(HttpDestinationResource):
    """A generic HTTP endpoint that receives signed JSON batches (see `pipeline.activation.signing`).

    `secret` may hold two comma-separated secrets while one is rotated: each request then carries both signatures.
    """

    secret: str | None = None

    def secrets(self) -> list[str]:
        return [part.strip() for part in (self.secret or "").split(",") if part.strip()]


@dataclass
class WebhookDestination:
    """POSTs `{"batch", "sync", "op", "records" | "keys"}` to `path`, signed with `secrets` (two while rotating).

    `batch` is the batch's idempotency key (also sent as `Idempotency-Key`): a receiver applies each batch once.
    Records carry the primary key and the mapped fields: numbers and booleans as JSON, decimals and timestamps as
    strings (ISO 8601).
    """

    client: httpx.Client | None
    sender: RetryingSender | None
    spec: SyncSpec
    path: str
    secrets: list[str]
    batch_size: int = 100
    concurrency: int = 1

    def record_sql(self, types: dict[str, str]) -> str:
        key = self.spec.primary_key
        values = {key: shape.json_value(key, types[key])}
        values |= {name: shape.json_value(col, types[col]) for col, name in self.spec.fields.items()}
        return shape.json_object(values)

    def batch_sql(self, records: str, key: str) -> str:
        sync = quote_literal(json.dumps(self.spec.name))
        parts = ['\'{"batch":"\'', key, '\'","op":"upsert","records":\'', records, "',\"sync\":'", sync, "'}'"]
        return " || ".join(parts)

    def delete_body(self, keys: list[str], key: str) -> str:
        return json_body({"batch": key, "op": "delete", "keys": keys, "sync": self.spec.name}).decode()

    def deliver(self, batch: Batch) -> Delivery:
        assert self.client is not None and self.sender is not None
        if not self.secrets:
            raise ValueError("WEBHOOK_SECRET is not set: webhook batches are always signed (see .env.example)")
        body = batch.body.encode()

        def post() -> httpx.Response:  # signed per attempt, so a retry after a Retry-After wait is not stale
            headers = {**sign(self.secrets, body), "Content-Type": "application/json"}
            headers["Idempotency-Key"] = batch.idempotency_key
            return self.client.post(self.path, content=body, headers=headers)

        response = self.sender.send(post)
        raise_for_error(
            response,
            f"webhook {self.path} answered {response.status_code} to a batch of {len(batch.record_keys)}:"
            f" {response.text[:300]}",
        )
        count = len(batch.record_keys)
        return Delivery(accepted=count, deleted=count if batch.op == "delete" else 0)


def check_path(value: Any) -> str | None:
    if value is None or isinstance(value, str) and PATH.fullmatch(value):
        return None  # absent: /<sync name>
    return "must start with / and hold only letters, digits and _ - . / ~"


def path_of(spec: SyncSpec) -> str:
    """Where under WEBHOOK_URL the sync posts: its `path`, by default /<sync name>."""
    return spec.options.get("path") or f"/{spec.name}"


class Webhook(DestinationType[WebhookResource]):
    name = "webhook"
    resource_key = "webhook"
    options = {"path": check_path}

    def resource(self, settings: Settings) -> WebhookResource:
        return WebhookResource(
            base_url=settings.webhook_url, secret=secret("WEBHOOK_SECRET"), max_concurrency=settings.sync_concurrency
        )

    def asset_key(self, spec: SyncSpec) -> dg.AssetKey:
        return dg.AssetKey(["webhook", path_of(spec).strip("/").replace("/", "__") or spec.name])

    def describe(self, spec: SyncSpec, resource: WebhookResource) -> tuple[str, str]:
        return f"The HTTP endpoint receiving `{spec.name}`'s signed batches.", f"{resource.base_url}{path_of(spec)}"

    def open(
        self,
        spec: SyncSpec,
        resource: WebhookResource,
        client: httpx.Client | None = None,
        sender: RetryingSender | None = None,
    ) -> WebhookDestination:
        return WebhookDestination(
            client, sender, spec, path_of(spec), resource.secrets(), resource.batch_size, resource.max_concurrency
        )


register(Webhook())
