"""`crm_contacts`: contacts in a HubSpot-CRM-v3-shaped API (the devstack's CRM server locally, HubSpot or alike in
production), through its batch endpoints; bodies are shaped in SQL (see `shape`).

Upsert: at most 100 inputs per request. One invalid input (say a malformed email) fails the whole batch with a 400
whose `errors` name each bad input (`inputs[3].properties.email`); `upsert` then drops those records, reports
them as rejected (permanent: resending the same data cannot succeed) and sends the rest under an idempotency key
derived from the original one, so a retry after a crash replays instead of applying twice.

Delete (mirror mode): HubSpot archives by object id only, so `archive` first reads the ids for our id property
(`batch/read`), then archives them (`batch/archive`). Both steps are naturally idempotent.

Settings: CRM_URL, CRM_TOKEN, CRM_ID_PROPERTY, CRM_BATCH_SIZE, CRM_TIMEOUT_SECONDS, SYNC_CONCURRENCY.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg
import httpx
import orjson

from ...core import transport
from ...core.settings import Settings, secret
from ...core.sql import quote_literal
from ...core.transport import Delivery, RetryingSender
from .. import shape
from ..outbox import Batch
from ..syncs import SyncSpec
from . import DestinationType, HttpDestinationResource, register

UPSERT_PATH = "/crm/v3/objects/contacts/batch/upsert"
READ_PATH = "/crm/v3/objects/contacts/batch/read"
ARCHIVE_PATH = "/crm/v3/objects/contacts/batch/archive"
_INPUT_ERROR = re.compile(r"inputs\[(\d+)\]")
MAX_BATCH = 100  # HubSpot's limit for batch endpoints


class CrmResource(HttpDestinationResource):
    """A HubSpot-CRM-v3-shaped API: the local devstack server in development, HubSpot (or alike) in production."""

    token: str | None = None
    id_property: str = "tidewater_customer_id"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


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


@dataclass
class CrmDestination:
    client: httpx.Client | None
    sender: RetryingSender | None
    spec: SyncSpec
    id_property: str
    batch_size: int = MAX_BATCH
    concurrency: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise ValueError(f"CRM batch size must be 1..{MAX_BATCH} (HubSpot's limit), got {self.batch_size}")

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
            return archive(self.client, self.id_property, batch.payload["ids"], self.sender)
        return upsert(self.client, batch.body, batch.idempotency_key, self.sender)


class CrmContacts(DestinationType[CrmResource]):
    name = "crm_contacts"
    resource_key = "crm"

    def resource(self, settings: Settings) -> CrmResource:
        return CrmResource(
            base_url=settings.crm_url,
            token=secret("CRM_TOKEN"),
            id_property=settings.crm_id_property,
            batch_size=settings.crm_batch_size,
            timeout_seconds=settings.crm_timeout_seconds,
            max_concurrency=settings.sync_concurrency,
        )

    def asset_key(self, spec: SyncSpec) -> dg.AssetKey:
        return dg.AssetKey(["crm", "contacts"])

    def describe(self, spec: SyncSpec, resource: CrmResource) -> tuple[str, str]:
        description = f"Contacts in the CRM (HubSpot CRM v3 shape), written by `{spec.name}`."
        return description, f"{resource.base_url}/crm/v3/objects/contacts"

    def open(
        self,
        spec: SyncSpec,
        resource: CrmResource,
        client: httpx.Client | None = None,
        sender: RetryingSender | None = None,
    ) -> CrmDestination:
        return CrmDestination(client, sender, spec, resource.id_property, resource.batch_size, resource.max_concurrency)


register(CrmContacts())
