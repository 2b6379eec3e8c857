"""HubSpot CRM v3 batch endpoints: the sends a sync makes (bodies are shaped in SQL, see `shape`).

Upsert: at most 100 inputs per request. One invalid input (say a malformed email) fails the whole batch with a 400
whose `errors` name each bad input (`inputs[3].properties.email`); `upsert` then drops those records, reports
them as rejected (permanent: resending the same data cannot succeed) and sends the rest under an idempotency key
derived from the original one, so a retry after a crash replays instead of applying twice.

Delete (mirror mode): HubSpot archives by object id only, so `archive` first reads the ids for our id property
(`batch/read`), then archives them (`batch/archive`). Both steps are naturally idempotent.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import httpx
import orjson

from ..core import transport
from ..core.transport import Delivery, RetryingSender

UPSERT_PATH = "/crm/v3/objects/contacts/batch/upsert"
READ_PATH = "/crm/v3/objects/contacts/batch/read"
ARCHIVE_PATH = "/crm/v3/objects/contacts/batch/archive"
_INPUT_ERROR = re.compile(r"inputs\[(\d+)\]")
MAX_BATCH = 100  # HubSpot's limit for batch endpoints


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


def rejected_inputs(response: httpx.Response) -> dict[int, str]:
    """Per-input validation errors of a 400 (position in the batch -> message); empty when the error is not
    about particular inputs (then the whole batch failed for another reason)."""
    if response.status_code != 400:
        return {}
    try:
        errors = response.json().get("errors") or []
    except ValueError:
        return {}
    rejected: dict[int, str] = {}
    for error in errors:
        match = _INPUT_ERROR.match(str(error.get("in", ""))) if isinstance(error, dict) else None
        if match:
            index = int(match.group(1))
            message = f"{error.get('in')}: {error.get('message', '')}"
            rejected[index] = f"{rejected[index]}; {message}" if index in rejected else message
    return rejected


def raise_for_error(response: httpx.Response, what: str) -> None:
    """A final non-2xx answer raises (transient or terminal, see `core.transport`) with the destination's message
    (never the token)."""
    transport.raise_for_error(response, f"CRM answered {response.status_code} to {what}: {response.text[:500]}")


def upsert(client: httpx.Client, body: str, idempotency_key: str, sender: RetryingSender | None = None) -> Delivery:
    """POST one batch/upsert body (JSON text, sent as planned), retrying transient failures; inputs the CRM refuses
    are reported, the rest sent. The Idempotency-Key lets the destination apply a retried batch once.
    """
    sender = sender or RetryingSender()

    def post(content: str, key: str) -> httpx.Response:
        headers = {"Idempotency-Key": key, "Content-Type": "application/json"}
        return sender.send(lambda: client.post(UPSERT_PATH, content=content.encode(), headers=headers))

    response = post(body, idempotency_key)
    rejected = rejected_inputs(response)
    if rejected:
        parsed = json.loads(body)
        kept = [item for i, item in enumerate(parsed["inputs"]) if i not in rejected]
        if not kept:
            return Delivery(accepted=0, rejected=rejected)
        # Same rejected positions -> same key: a rerun after a crash replays this request instead of re-applying.
        suffix = hashlib.sha256(",".join(map(str, sorted(rejected))).encode()).hexdigest()[:12]
        response = post(json.dumps({**parsed, "inputs": kept}, separators=(",", ":")), f"{idempotency_key}-{suffix}")
    raise_for_error(response, "a batch upsert")
    results = orjson.loads(response.content).get("results", [])
    created = sum(1 for r in results if r.get("new"))
    return Delivery(accepted=len(results), rejected=rejected, created=created, updated=len(results) - created)


def archive(
    client: httpx.Client, id_property: str, ids: Sequence[str], sender: RetryingSender | None = None
) -> Delivery:
    """Archive the contacts whose `id_property` is one of `ids`; ids the CRM does not have are already gone."""
    sender = sender or RetryingSender()
    body = {"idProperty": id_property, "inputs": [{"id": i} for i in ids], "properties": [id_property]}
    response = sender.send(lambda: client.post(READ_PATH, json=body))
    raise_for_error(response, f"a batch read of {len(ids)}")
    object_ids = [r["id"] for r in response.json().get("results", [])]
    if object_ids:
        response = sender.send(lambda: client.post(ARCHIVE_PATH, json={"inputs": [{"id": i} for i in object_ids]}))
        raise_for_error(response, f"a batch archive of {len(object_ids)}")
    return Delivery(accepted=len(ids), deleted=len(object_ids))
