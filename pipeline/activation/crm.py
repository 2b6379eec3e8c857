"""HubSpot CRM v3 batch upsert: pure helpers to shape records and a small sender."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import httpx

from .transport import RetryingSender

UPSERT_PATH = "/crm/v3/objects/contacts/batch/upsert"
MAX_BATCH = 100  # HubSpot's limit for batch endpoints


def to_property(value: Any) -> str:
    """HubSpot stores every property as a string; an empty string clears a property."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat(timespec="seconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def upsert_inputs(
    rows: Iterable[Mapping[str, Any]], primary_key: str, fields: Mapping[str, str], id_property: str
) -> Iterator[dict[str, Any]]:
    """Mart rows -> batch/upsert `inputs` entries: `{idProperty, id, properties}`."""
    for row in rows:
        yield {
            "idProperty": id_property,
            "id": to_property(row[primary_key]),
            "properties": {prop: to_property(row[col]) for col, prop in fields.items()},
        }


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    if not 1 <= size <= MAX_BATCH:
        raise ValueError(f"batch size must be 1..{MAX_BATCH}, got {size}")
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass
class UpsertSummary:
    batches: int = 0
    sent: int = 0
    created: int = 0
    updated: int = 0

    def add(self, results: Sequence[dict[str, Any]], inputs: int) -> None:
        self.batches += 1
        self.sent += inputs
        self.created += sum(1 for r in results if r.get("new"))
        self.updated += sum(1 for r in results if not r.get("new"))


def post_batch(
    client: httpx.Client, body: dict[str, Any], idempotency_key: str, sender: RetryingSender | None = None
) -> list[dict[str, Any]]:
    """POST one batch/upsert body, retrying transient failures; a final non-2xx answer raises with the
    destination's message (never the token). The Idempotency-Key lets the destination apply a retried batch once.
    """
    sender = sender or RetryingSender()
    response = sender.send(lambda: client.post(UPSERT_PATH, json=body, headers={"Idempotency-Key": idempotency_key}))
    if response.is_error:
        raise httpx.HTTPStatusError(
            f"CRM answered {response.status_code} to a batch of {len(body.get('inputs', []))}: {response.text[:500]}",
            request=response.request,
            response=response,
        )
    return response.json().get("results", [])
