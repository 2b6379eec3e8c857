"""The destinations a sync can send to, each shaping its own batches and delivering them.

- `CrmDestination`: HubSpot CRM v3 contacts (batch upsert; mirror deletes through batch read + archive).
- `WebhookDestination`: any HTTP endpoint; JSON batches signed with HMAC-SHA256 (see `signing`), one
  `Idempotency-Key` per batch that a receiver uses to apply each batch once.

Both send through one pooled httpx client and a `RetryingSender`, so 429 / 5xx / timeouts heal the same way.
Bodies are shaped in the warehouse when the plan is written (see `shape`) and sent byte for byte as planned.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx

from ..core.sql import quote_literal
from ..core.transport import Delivery, RetryingSender, raise_for_error
from . import crm, shape
from .outbox import Batch
from .signing import json_body, sign
from .syncs import SyncSpec


@dataclass
class CrmDestination:
    client: httpx.Client | None
    sender: RetryingSender | None
    spec: SyncSpec
    id_property: str
    batch_size: int = crm.MAX_BATCH
    concurrency: int = 1

    def record_sql(self, types: dict[str, str]) -> str:
        """One batch/upsert input: `{"idProperty", "id", "properties": {property: string}}`."""
        properties = {prop: shape.property_text(col, types[col]) for col, prop in self.spec.fields.items()}
        return shape.json_object(
            {
                "idProperty": quote_literal(self.id_property),
                "id": f"CAST({shape.column(self.spec.primary_key)} AS VARCHAR)",
                "properties": shape.json_object(properties),
            }
        )

    def batch_sql(self, records: str, key: str) -> str:
        return f"""'{{"inputs":' || {records} || '}}'"""

    def delete_body(self, keys: list[str], key: str) -> str:
        return json.dumps({"ids": keys}, separators=(",", ":"))

    def deliver(self, batch: Batch) -> Delivery:
        assert self.client is not None, "a destination built without a client only shapes batches"
        if batch.op == "delete":
            return crm.archive(self.client, self.id_property, batch.payload["ids"], self.sender)
        return crm.upsert(self.client, batch.body, batch.idempotency_key, self.sender)


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
