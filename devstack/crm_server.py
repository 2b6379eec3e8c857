"""A HubSpot-CRM-v3-shaped contacts API backed by SQLite, for `make dev` and the integration tests.

The activation stage talks to this server with the same client it uses for HubSpot; only the base URL and token
differ. It implements what that client needs, in HubSpot's request/response shapes:

- ``POST /crm/v3/objects/contacts/batch/upsert``: at most 100 inputs, applied in one SQLite transaction;
- ``GET /crm/v3/objects/contacts?limit=&after=``: cursor paging in contact-id order;
- ``GET /crm/v3/objects/contacts/{id}`` and ``.../{value}?idProperty=<property>``;
- ``POST .../batch/read`` (``idProperty`` + ``inputs: [{id}]``): the contacts found; 207 with ``errors`` for the rest;
- ``POST .../batch/archive`` (``inputs: [{id}]``, object ids): archive (here: delete) them; 204, ids not found ignored;
- ``GET /_devstack/stats`` (not HubSpot): counts to assert on in tests and benchmarks;
- ``GET``/``PUT /_devstack/faults`` (not HubSpot): read or replace the fault injection (`FaultConfig`) at runtime;
- ``GET /healthz``: readiness probe, never needs the token.

Deliberate simplifications, so tests do not rely on them by accident:

- Property values are stored as strings like HubSpot does (``true``/``false`` for booleans, ``str()`` of numbers);
  JSON ``null`` is stored as ``null`` and clears the value. Objects/arrays are rejected.
- Any property becomes a *unique id property* the first time an upsert uses it as ``idProperty`` (HubSpot declares
  them up front; ``email`` is registered from the start). Registering one indexes the existing contacts, the
  oldest contact winning if several already share a value. From then on a second contact cannot take the same
  value (409 ``CONFLICT``, whole batch rolled back). Values are matched exactly (HubSpot lower-cases emails).
  ``GET .../{value}?idProperty=`` with any other property scans and returns the oldest match (HubSpot: 400).
- The same ``(idProperty, id)`` twice in one batch is rejected (400), as HubSpot does.
- ``email`` must look like an address (``INVALID_EMAIL``). Like HubSpot, one invalid input fails the whole batch
  with a 400 whose ``errors`` name each bad input (``in: inputs[3].properties.email``): a client drops those
  records and resends the rest.

Storage lives in `ContactStore`, apart from the HTTP layer.

``Idempotency-Key`` on batch upsert (see `ContactStore.upsert_batch_idempotent`): the first request with a key
applies the batch and records (key, body hash, response) in the same transaction; a later request with that key
and the same body (compared as canonical JSON) gets the recorded response back with ``Idempotent-Replayed: true``
and applies nothing; the same key with a different body is a 422. Failed requests (400/409, injected faults before
applying) record nothing.

Fault injection (`FaultConfig`, batch upsert only) decides before anything is read or applied: ``slow_seconds``
delay, every ``rate_limit_every``-th request a 429 with ``Retry-After``, ``error_rate`` 503s, ``drop_rate``
connections closed without a response. ``fail_after_apply_rate`` applies (and records the idempotency key), then
answers 500: the client never sees the success, and its retry with the same key gets the recorded 200.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import random
import re
import sqlite3
import threading
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from devstack.serve import parse_args, run_forever, server_arg_parser

logger = logging.getLogger(__name__)

MAX_BATCH_INPUTS = 100
MAX_PAGE_LIMIT = 100
DEFAULT_PAGE_LIMIT = 10
OBJECT_ID_PROPERTY = "hs_object_id"
READ_ONLY_PROPERTIES = frozenset({OBJECT_ID_PROPERTY, "createdate", "lastmodifieddate"})
# HubSpot internal property names: letters, digits and underscores, starting with a letter. Checking them here
# also makes them safe to embed in a JSON path (see ContactStore._register_id_properties).
PROPERTY_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_NAMES_SEEN: set[str] = set()  # property names already checked against PROPERTY_NAME (they repeat in every input)
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
PUBLIC_PATHS = frozenset({"/healthz"})
IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
IDEMPOTENT_REPLAYED_HEADER = "Idempotent-Replayed"
MAX_IDEMPOTENCY_KEY_LENGTH = 255

PropertyValue = str | None


def utc_now() -> str:
    """ISO 8601 UTC with milliseconds, the way HubSpot writes timestamps (``2024-05-01T12:00:00.123Z``)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class CrmError(Exception):
    """An error the API reports in HubSpot's shape; `errors` lists per-input details."""

    def __init__(self, status_code: int, category: str, message: str, errors: Sequence[Mapping[str, str]] = ()) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.category = category
        self.message = message
        self.errors = list(errors)


def validation_error(message: str, errors: Sequence[Mapping[str, str]] = ()) -> CrmError:
    return CrmError(400, "VALIDATION_ERROR", message, errors)


def error_response(
    status_code: int,
    category: str,
    message: str,
    errors: Sequence[Mapping[str, str]] = (),
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "status": "error",
        "message": message,
        "correlationId": str(uuid.uuid4()),
        "category": category,
    }
    if errors:
        body["errors"] = list(errors)
    return JSONResponse(body, status_code=status_code, headers=headers)


# --- domain ---------------------------------------------------------------------------------------------------


class UpsertInput(NamedTuple):  # a tuple: cheap to create, a few hundred per batch request
    id_property: str
    id: str
    properties: Mapping[str, PropertyValue]


class Contact(NamedTuple):
    id: int
    properties: dict[str, PropertyValue]
    created_at: str
    updated_at: str

    def to_json(self, property_names: Sequence[str] | None = None) -> dict[str, Any]:
        """HubSpot's object shape. `property_names` narrows `properties` like HubSpot's ``properties=`` param."""
        properties = self.properties
        if property_names is not None:
            wanted = [*property_names, *sorted(READ_ONLY_PROPERTIES)]
            properties = {name: self.properties.get(name) for name in wanted}
        return {
            "id": str(self.id),
            "properties": properties,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "archived": False,
        }


class UpsertResult(NamedTuple):
    contact: Contact
    new: bool

    def to_json(self) -> dict[str, Any]:
        return {**self.contact.to_json(), "new": self.new}


def _property_value(value: object) -> PropertyValue:
    """HubSpot keeps every property value as a string; None (JSON null) clears the value."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    raise TypeError(type(value).__name__)


def _property_name_ok(name: object) -> bool:
    ok = isinstance(name, str) and PROPERTY_NAME.fullmatch(name) and name not in READ_ONLY_PROPERTIES
    if ok and len(_NAMES_SEEN) < 10_000:
        _NAMES_SEEN.add(name)
        return True
    return isinstance(name, str) and PROPERTY_NAME.fullmatch(name) is not None


_TEXT_TYPES = frozenset({str, type(None)})


def _valid_inputs(raw_inputs: list[object]) -> list[UpsertInput] | None:
    """The usual batch, checked in one cheap pass: every input an object with a known-good idProperty, a string
    id and known-good property names (never read-only) with string or null values, valid emails, no duplicate
    ids. None when anything is off: `parse_upsert_body` then checks every input and reports each problem.

    This keeps the stand-in's per-record CPU low, so a benchmark of its clients measures the clients.
    """
    inputs: list[UpsertInput] = []
    seen: set[tuple[str, str]] = set()
    for raw in raw_inputs:
        if type(raw) is not dict:
            return None
        id_property, id_value, properties = raw.get("idProperty"), raw.get("id"), raw.get("properties", {})
        if id_property not in _NAMES_SEEN or type(id_value) is not str or not id_value or type(properties) is not dict:
            return None
        if not _NAMES_SEEN.issuperset(properties) or not _TEXT_TYPES.issuperset(map(type, properties.values())):
            return None
        email = properties.get("email")
        if (email and not EMAIL.fullmatch(email)) or (id_property, id_value) in seen:
            return None
        seen.add((id_property, id_value))
        inputs.append(UpsertInput(id_property, id_value, dict(properties)))
    return inputs


def parse_upsert_body(body: object) -> list[UpsertInput]:
    """Validate a batch-upsert request body; report every bad input at once, with its position."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise validation_error(
            'Expected a JSON object {"inputs": [{"idProperty": ..., "id": ..., "properties": {...}}]}'
        )
    raw_inputs: list[object] = body["inputs"]
    if len(raw_inputs) > MAX_BATCH_INPUTS:
        raise validation_error(
            f"Too many inputs: got {len(raw_inputs)}, at most {MAX_BATCH_INPUTS} are allowed per batch request. "
            f"Split the inputs into batches of {MAX_BATCH_INPUTS}."
        )
    if (valid := _valid_inputs(raw_inputs)) is not None:
        return valid
    inputs: list[UpsertInput] = []
    errors: list[dict[str, str]] = []
    seen: dict[tuple[str, str], int] = {}

    def bad(index: int, where: str, message: str) -> None:
        errors.append({"in": f"inputs[{index}]{where}", "message": message})

    for index, raw in enumerate(raw_inputs):
        if not isinstance(raw, dict):
            bad(index, "", f"expected an object, got {type(raw).__name__}")
            continue
        id_property, id_value, raw_properties = raw.get("idProperty"), raw.get("id"), raw.get("properties", {})
        ok = True
        if not isinstance(id_property, str) or not PROPERTY_NAME.fullmatch(id_property):
            bad(index, ".idProperty", f"expected a property name (letters, digits, _), got {id_property!r}")
            ok = False
        elif id_property in READ_ONLY_PROPERTIES:
            bad(index, ".idProperty", f"{id_property!r} cannot be an idProperty for upserts; use a unique property")
            ok = False
        else:
            _property_name_ok(id_property)  # remembered as known-good for `_valid_inputs`
        if isinstance(id_value, int) and not isinstance(id_value, bool):
            id_value = str(id_value)
        if not isinstance(id_value, str) or not id_value:
            bad(index, ".id", f"expected a non-empty string, got {id_value!r}")
            ok = False
        if not isinstance(raw_properties, dict):
            bad(index, ".properties", f"expected an object, got {type(raw_properties).__name__}")
            continue
        properties: dict[str, PropertyValue] = {}
        for name, value in raw_properties.items():
            if name not in _NAMES_SEEN and not _property_name_ok(name):
                bad(index, f".properties[{name!r}]", "expected a property name (letters, digits, _)")
                ok = False
            elif name in READ_ONLY_PROPERTIES:
                bad(index, f".properties.{name}", "is read-only (set by the CRM)")
                ok = False
            else:
                try:
                    properties[name] = _property_value(value)
                except TypeError as exc:
                    bad(index, f".properties.{name}", f"expected a string, number, boolean or null, got {exc}")
                    ok = False
                    continue
                if name == "email" and properties[name] and not EMAIL.fullmatch(properties[name] or ""):
                    bad(index, ".properties.email", f"INVALID_EMAIL: {properties[name]!r} is not a valid email address")
                    ok = False
        if not ok:
            continue
        key = (id_property, id_value)
        if key in seen:
            bad(index, ".id", f"duplicate of inputs[{seen[key]}] ({id_property}={id_value!r}); ids must be unique")
            continue
        seen[key] = index
        inputs.append(UpsertInput(id_property, id_value, properties))
    if errors:
        shown = "; ".join(f"{e['in']}: {e['message']}" for e in errors[:5])
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise validation_error(f"{len(errors)} invalid input(s): {shown}{more}", errors)
    return inputs


def parse_batch_ids(body: object, *, allow_id_property: bool) -> tuple[str, list[str], list[str] | None]:
    """(idProperty, ids, property names) of a batch read or archive body: ``{"inputs": [{"id": ...}], ...}``."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise validation_error('Expected a JSON object {"inputs": [{"id": ...}]}')
    inputs = body["inputs"]
    if len(inputs) > MAX_BATCH_INPUTS:
        raise validation_error(f"Too many inputs: got {len(inputs)}, at most {MAX_BATCH_INPUTS} are allowed")
    values = [str(item.get("id")) if isinstance(item, dict) else "" for item in inputs]
    if any(not value or value == "None" for value in values):
        raise validation_error("every input needs a non-empty id")
    id_property = body.get("idProperty") or OBJECT_ID_PROPERTY
    if not allow_id_property and id_property != OBJECT_ID_PROPERTY:
        raise validation_error("batch/archive takes object ids only; read them with batch/read and idProperty first")
    if not isinstance(id_property, str) or not PROPERTY_NAME.fullmatch(id_property):
        raise validation_error(f"idProperty={id_property!r} is not a property name")
    names = body.get("properties")
    return id_property, values, [str(n) for n in names] if isinstance(names, list) else None


# --- storage --------------------------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS contacts (
    id          INTEGER PRIMARY KEY,
    properties  TEXT NOT NULL,          -- JSON object: property name -> string | null
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
-- Properties usable as idProperty; their values are unique across contacts.
CREATE TABLE IF NOT EXISTS id_properties (property TEXT PRIMARY KEY) WITHOUT ROWID;
-- (property, value) -> contact: the lookup index for upserts and reads by idProperty.
CREATE TABLE IF NOT EXISTS contact_ids (
    property    TEXT NOT NULL,
    value       TEXT NOT NULL,
    contact_id  INTEGER NOT NULL REFERENCES contacts (id),
    PRIMARY KEY (property, value)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
-- Batch-upsert responses by Idempotency-Key, written in the transaction that applied the batch.
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key         TEXT PRIMARY KEY,
    body_sha256 TEXT NOT NULL,          -- of the canonical JSON request body
    status      INTEGER NOT NULL,
    response    TEXT NOT NULL,          -- JSON response body
    created_at  TEXT NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO id_properties (property) VALUES ('email');
INSERT OR IGNORE INTO counters (name, value) VALUES ('upsert_requests', 0), ('upserted_inputs', 0), ('archived', 0);
"""

_CONTACT_COLUMNS = "id, properties, created_at, updated_at"


def _compact_json(value: object) -> str:
    """Compact JSON text (orjson: the stand-in must not be what limits a benchmark of its clients)."""
    return orjson.dumps(value).decode()


def _contact(row: tuple[int, str, str, str]) -> Contact:
    contact_id, properties, created_at, updated_at = row
    return Contact(contact_id, orjson.loads(properties), created_at, updated_at)


def _placeholders(count: int) -> str:
    return ",".join("?" * count)


@dataclass(slots=True)
class _Touched:
    """A contact as a batch leaves it: its index entries before the batch, and whether it must be written."""

    contact: Contact
    original_keys: set[tuple[str, str]] = field(default_factory=set)
    new: bool = False
    dirty: bool = False


class ContactStore:
    """Contacts in one SQLite file, safe to share between the server's worker threads.

    SQLite allows one writer at a time, so writes take an in-process lock and run on one long-lived connection
    (keeping it open also spares a WAL checkpoint per request); each write is a ``BEGIN IMMEDIATE`` transaction,
    with a busy timeout should another process hold the file. Reads use their own short-lived connections and,
    in WAL mode, never wait for the writer.
    """

    def __init__(self, db_path: str | Path, *, busy_timeout: float = 30.0) -> None:
        self.db_path = Path(db_path)
        self._busy_timeout = busy_timeout
        self._write_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        with self._write_lock:
            self._writer_connection().executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT), never implicit.
        conn = sqlite3.connect(self.db_path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA synchronous = NORMAL")  # durable enough for a dev stand-in, and fast in WAL mode
        return conn

    def _writer_connection(self) -> sqlite3.Connection:
        if self._writer is None:
            self.db_path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._connect()
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._writer = conn
        return self._writer

    def close(self) -> None:
        with self._write_lock:
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: everything done on the yielded connection commits or rolls back together."""
        with self._write_lock:
            conn = self._writer_connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot for the duration of the block."""
        conn = self._connect()
        try:
            conn.execute("BEGIN")
            yield conn
            conn.execute("COMMIT")
        finally:
            conn.close()

    # -- writes --

    def upsert_batch(self, inputs: Sequence[UpsertInput]) -> list[UpsertResult]:
        """Apply a validated batch in one transaction; results come back in input order."""
        with self.write() as conn:
            results = self.apply_upserts(conn, inputs, utc_now())
        new = sum(result.new for result in results)
        logger.debug("batch upsert: %d inputs, %d created, %d updated", len(results), new, len(results) - new)
        return results

    def upsert_batch_idempotent(
        self, inputs: Sequence[UpsertInput], *, key: str, body_sha256: str, started_at: str
    ) -> tuple[int, str, bool]:
        """Apply `inputs` once per `key`: returns (status, response body as JSON text, replayed).

        The key is looked up inside the write transaction, so concurrent requests with one key serialize on the
        write lock and only the first applies; the others replay its response. A key reused with another body
        raises a 422 `CrmError`. If applying fails (e.g. 409), the transaction rolls back and no key is recorded.
        """
        with self.write() as conn:
            row = conn.execute(
                "SELECT body_sha256, status, response FROM idempotency_keys WHERE key = ?", (key,)
            ).fetchone()
            if row is not None:
                stored_sha256, status, response = row
                if stored_sha256 != body_sha256:
                    raise CrmError(
                        422,
                        "VALIDATION_ERROR",
                        f"{IDEMPOTENCY_KEY_HEADER} {key!r} was already used with a different request payload. "
                        "Reuse a key only to retry the identical request; send a new key for a new request.",
                    )
                return status, response, True
            body = _compact_json(batch_response(self.apply_upserts(conn, inputs, utc_now()), started_at))
            conn.execute(
                "INSERT INTO idempotency_keys (key, body_sha256, status, response, created_at) VALUES (?, ?, ?, ?, ?)",
                (key, body_sha256, 200, body, utc_now()),
            )
        return 200, body, False

    def apply_upserts(self, conn: sqlite3.Connection, inputs: Sequence[UpsertInput], now: str) -> list[UpsertResult]:
        """The upsert itself, inside the caller's write transaction (see `write`).

        Lookups for the whole batch are one query per idProperty; writes are one executemany per table. Inputs
        are applied in order against an in-memory view of the touched contacts, so two inputs that reach the
        same contact through different id properties merge like two sequential requests would.
        """
        id_properties = self._register_id_properties(conn, {item.id_property for item in inputs})
        index = self._lookup(conn, [(item.id_property, item.id) for item in inputs])
        touched = self._load_touched(conn, set(index.values()), id_properties)
        # In-batch changes to the index: key -> contact, or None once the contact moved off that value.
        overlay: dict[tuple[str, str], int | None] = {}
        next_id: int = conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM contacts").fetchone()[0]
        results: list[UpsertResult] = []

        for item in inputs:
            key = (item.id_property, item.id)
            contact_id = overlay[key] if key in overlay else index.get(key)
            if contact_id is None:
                contact_id, next_id = next_id, next_id + 1
                before: dict[str, PropertyValue] = {}
                state = _Touched(Contact(contact_id, {}, now, now), new=True, dirty=True)
                touched[contact_id] = state
            else:
                state = touched[contact_id]
                before = state.contact.properties
            after = {**before, **item.properties, item.id_property: item.id}
            if after != before:  # an unchanged contact keeps its updatedAt, as in HubSpot
                after[OBJECT_ID_PROPERTY] = str(contact_id)
                after.setdefault("createdate", state.contact.created_at)
                after["lastmodifieddate"] = now
                state.contact = Contact(contact_id, after, state.contact.created_at, now)
                state.dirty = True
                for prop in id_properties:
                    old_value, new_value = before.get(prop), after.get(prop)
                    if old_value != new_value:
                        if old_value:
                            overlay[(prop, old_value)] = None
                        if new_value:
                            overlay[(prop, new_value)] = contact_id
            results.append(UpsertResult(state.contact, new=state.new and not before))

        self._write_touched(conn, touched.values(), id_properties)
        conn.executemany(
            "UPDATE counters SET value = value + ? WHERE name = ?",
            [(1, "upsert_requests"), (len(inputs), "upserted_inputs")],
        )
        return results

    def _register_id_properties(self, conn: sqlite3.Connection, properties: set[str]) -> frozenset[str]:
        """Make `properties` unique id properties, indexing contacts that already have a value for them."""
        registered = {row[0] for row in conn.execute("SELECT property FROM id_properties")}
        for prop in sorted(properties - registered):
            logger.info("registering %r as a unique id property; indexing existing contacts", prop)
            conn.execute("INSERT INTO id_properties (property) VALUES (?)", (prop,))
            path = f'$."{prop}"'  # safe: PROPERTY_NAME allows no quotes
            conn.execute(
                "INSERT OR IGNORE INTO contact_ids (property, value, contact_id) "
                "SELECT ?, json_extract(properties, ?), id FROM contacts "
                "WHERE json_type(properties, ?) = 'text' AND json_extract(properties, ?) != '' ORDER BY id",
                (prop, path, path, path),
            )
            registered.add(prop)
        return frozenset(registered)

    @staticmethod
    def _lookup(conn: sqlite3.Connection, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
        values_by_property: dict[str, list[str]] = defaultdict(list)
        for prop, value in keys:
            values_by_property[prop].append(value)
        found: dict[tuple[str, str], int] = {}
        for prop, values in values_by_property.items():
            in_values = _placeholders(len(values))
            rows = conn.execute(
                f"SELECT value, contact_id FROM contact_ids WHERE property = ? AND value IN ({in_values})",
                (prop, *values),
            )
            found.update(((prop, value), contact_id) for value, contact_id in rows)
        return found

    @staticmethod
    def _load_touched(
        conn: sqlite3.Connection, contact_ids: set[int], id_properties: frozenset[str]
    ) -> dict[int, _Touched]:
        if not contact_ids:
            return {}
        rows = conn.execute(
            f"SELECT {_CONTACT_COLUMNS} FROM contacts WHERE id IN ({_placeholders(len(contact_ids))})",
            tuple(contact_ids),
        )
        touched: dict[int, _Touched] = {}
        for row in rows:
            contact = _contact(row)
            keys = {(prop, value) for prop in id_properties if (value := contact.properties.get(prop))}
            touched[contact.id] = _Touched(contact, original_keys=keys)
        return touched

    @staticmethod
    def _write_touched(conn: sqlite3.Connection, touched: Iterable[_Touched], id_properties: frozenset[str]) -> None:
        inserts, updates = [], []
        removed_keys: dict[tuple[str, str], int] = {}
        added_keys: dict[tuple[str, str], int] = {}
        for state in touched:
            if not state.dirty:
                continue
            contact = state.contact
            row = _compact_json(contact.properties)
            if state.new:
                inserts.append((contact.id, row, contact.created_at, contact.updated_at))
            else:
                updates.append((row, contact.updated_at, contact.id))
            final_keys = {(prop, value) for prop in id_properties if (value := contact.properties.get(prop))}
            removed_keys.update(dict.fromkeys(state.original_keys - final_keys, contact.id))
            for key in final_keys - state.original_keys:
                if key in added_keys:
                    raise _conflict(key, added_keys[key], contact.id)
                added_keys[key] = contact.id

        for key, holder in ContactStore._lookup(conn, added_keys).items():
            if removed_keys.get(key) != holder:
                raise _conflict(key, holder, added_keys[key])

        conn.executemany("INSERT INTO contacts (id, properties, created_at, updated_at) VALUES (?, ?, ?, ?)", inserts)
        conn.executemany("UPDATE contacts SET properties = ?, updated_at = ? WHERE id = ?", updates)
        conn.executemany(
            "DELETE FROM contact_ids WHERE property = ? AND value = ? AND contact_id = ?",
            [(prop, value, contact_id) for (prop, value), contact_id in removed_keys.items()],
        )
        conn.executemany(
            "INSERT INTO contact_ids (property, value, contact_id) VALUES (?, ?, ?)",
            [(prop, value, contact_id) for (prop, value), contact_id in added_keys.items()],
        )

    def archive(self, contact_ids: Sequence[int]) -> int:
        """Archive (here: delete) contacts by object id in one transaction; ids not found are ignored."""
        if not contact_ids:
            return 0
        with self.write() as conn:
            marks = _placeholders(len(contact_ids))
            conn.execute(f"DELETE FROM contact_ids WHERE contact_id IN ({marks})", tuple(contact_ids))
            archived = conn.execute(f"DELETE FROM contacts WHERE id IN ({marks})", tuple(contact_ids)).rowcount
            conn.execute("UPDATE counters SET value = value + ? WHERE name = 'archived'", (archived,))
        return archived

    # -- reads --

    def get(self, contact_id: int) -> Contact | None:
        with self.read() as conn:
            row = conn.execute(f"SELECT {_CONTACT_COLUMNS} FROM contacts WHERE id = ?", (contact_id,)).fetchone()
        return None if row is None else _contact(row)

    def find(self, id_property: str, value: str) -> Contact | None:
        """The contact whose `id_property` equals `value`; the oldest one if the property is not a unique one.

        Reads never register a property as unique (that would change what later upserts accept), so a property
        never used as idProperty is found by a scan: fine for a dev stand-in, where such reads are rare.
        """
        if id_property == OBJECT_ID_PROPERTY:
            return self.get(int(value)) if value.isdigit() else None
        with self.read() as conn:
            row = conn.execute(
                "SELECT c.id, c.properties, c.created_at, c.updated_at FROM contact_ids i "
                "JOIN contacts c ON c.id = i.contact_id WHERE i.property = ? AND i.value = ?",
                (id_property, value),
            ).fetchone()
            if (
                row is None
                and not conn.execute("SELECT 1 FROM id_properties WHERE property = ?", (id_property,)).fetchone()
            ):
                row = conn.execute(
                    f"SELECT {_CONTACT_COLUMNS} FROM contacts WHERE json_extract(properties, ?) = ? "
                    "AND json_type(properties, ?) = 'text' ORDER BY id LIMIT 1",
                    (f'$."{id_property}"', value, f'$."{id_property}"'),
                ).fetchone()
        return None if row is None else _contact(row)

    def page(self, *, limit: int, after: int = 0) -> tuple[list[Contact], int | None]:
        """Up to `limit` contacts with id > `after`, in id order, and the cursor for the next page (or None)."""
        with self.read() as conn:
            rows = conn.execute(
                f"SELECT {_CONTACT_COLUMNS} FROM contacts WHERE id > ? ORDER BY id LIMIT ?", (after, limit + 1)
            ).fetchall()
        contacts = [_contact(row) for row in rows[:limit]]
        return contacts, (contacts[-1].id if len(rows) > limit else None)

    def stats(self) -> dict[str, int]:
        with self.read() as conn:
            contacts = conn.execute("SELECT COUNT(*) FROM contacts").fetchone()[0]
            counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
        return {"contacts": contacts, **counters}


def batch_response(results: Sequence[UpsertResult], started_at: str) -> dict[str, Any]:
    return {
        "status": "COMPLETE",
        "results": [result.to_json() for result in results],
        "startedAt": started_at,
        "completedAt": utc_now(),
    }


def _conflict(key: tuple[str, str], holder: int, claimant: int) -> CrmError:
    prop, value = key
    return CrmError(
        409,
        "CONFLICT",
        f"Contact {claimant} cannot take {prop}={value!r}: contact {holder} already has it and {prop} is a unique "
        "id property. No input of this batch was applied.",
    )


# --- fault injection ------------------------------------------------------------------------------------------


@dataclass(slots=True)
class FaultConfig:
    """Faults injected into batch upserts; all off by default. Rates are probabilities in [0, 1].

    - `rate_limit_every`: every Nth upsert request gets a 429 (``RATE_LIMITS``) with ``Retry-After:
      retry_after_seconds``; 0 disables.
    - `error_rate`: a 503 (``SERVICE_UNAVAILABLE``) before anything is applied.
    - `slow_seconds`: delay before handling each request.
    - `drop_rate`: close the connection without a response, before anything is applied.
    - `fail_after_apply_rate`: apply the batch (recording its Idempotency-Key), then answer 500.
    - `seed`: seeds the app's own `random.Random`, for reproducible runs.
    """

    rate_limit_every: int = 0
    retry_after_seconds: float = 1.0
    error_rate: float = 0.0
    slow_seconds: float = 0.0
    drop_rate: float = 0.0
    fail_after_apply_rate: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.rate_limit_every, bool) or not isinstance(self.rate_limit_every, int):
            raise ValueError(f"rate_limit_every must be an integer >= 0, got {self.rate_limit_every!r}")
        if self.rate_limit_every < 0:
            raise ValueError(f"rate_limit_every must be >= 0, got {self.rate_limit_every}")
        for name in ("retry_after_seconds", "slow_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        for name in ("error_rate", "drop_rate", "fail_after_apply_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"seed must be an integer or null, got {self.seed!r}")

    @classmethod
    def from_json(cls, body: object) -> FaultConfig:
        """Fields missing from `body` take their defaults (off); unknown fields are an error."""
        if not isinstance(body, dict):
            raise validation_error("Expected a JSON object with FaultConfig fields")
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(body) - known):
            raise validation_error(f"Unknown fault setting(s) {unknown}; known: {sorted(known)}")
        try:
            return cls(**body)
        except ValueError as exc:
            raise validation_error(str(exc)) from exc

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class ConnectionDropped(Exception):  # noqa: N818 - names the event, not an error condition of the server
    """Raised to make the server abort a response it has started (fallback of `DropConnection`)."""


class DropConnection(Response):
    """Close the client's connection without sending a response.

    Under uvicorn, ``receive`` is a method of the connection's request cycle, which holds the transport: closing
    it sends nothing, and the client sees the server disconnect. Elsewhere, start a response promising a body
    that never comes and abort, which servers answer by closing the connection mid-response.
    """

    def __init__(self) -> None:
        super().__init__(status_code=500)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transport = getattr(getattr(receive, "__self__", None), "transport", None)
        if transport is not None and callable(getattr(transport, "close", None)):
            transport.close()
            # Let the server's connection_lost run, so it knows not to answer on the closed connection.
            for _ in range(3):
                await asyncio.sleep(0)
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1024")]})
        await send({"type": "http.response.body", "body": b"{", "more_body": True})
        raise ConnectionDropped("devstack fault injection: connection dropped")


class FaultInjector:
    """Decides, per batch-upsert request, which fault of the current `FaultConfig` (if any) happens."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self.configure(config or FaultConfig())

    def configure(self, config: FaultConfig) -> None:
        """Replace the config; restarts the every-Nth count and re-seeds the random source."""
        self.config = config
        self._random = random.Random(config.seed)
        self._requests = 0

    def _chance(self, rate: float) -> bool:
        return rate > 0 and self._random.random() < rate

    async def before_apply(self) -> Response | None:
        """The response replacing this request's handling, or None to handle it normally."""
        config = self.config
        if config.slow_seconds > 0:
            await asyncio.sleep(config.slow_seconds)
        self._requests += 1
        if config.rate_limit_every and self._requests % config.rate_limit_every == 0:
            retry_after = f"{config.retry_after_seconds:g}"
            return error_response(
                429,
                "RATE_LIMITS",
                f"You have reached your secondly limit (devstack fault injection: every {config.rate_limit_every}"
                f" requests). Retry after {retry_after} seconds.",
                headers={"Retry-After": retry_after},
            )
        if self._chance(config.error_rate):
            return error_response(
                503, "SERVICE_UNAVAILABLE", "Service temporarily unavailable (devstack fault injection)."
            )
        if self._chance(config.drop_rate):
            logger.info("fault injection: dropping the connection")
            return DropConnection()
        return None

    def fail_after_apply(self) -> Response | None:
        if self._chance(self.config.fail_after_apply_rate):
            return error_response(
                500,
                "INTERNAL_ERROR",
                "Internal error after the batch was applied (devstack fault injection: fail_after_apply_rate).",
            )
        return None


# --- HTTP -----------------------------------------------------------------------------------------------------


class BearerTokenAuth:
    """Require ``Authorization: Bearer <token>`` on every path except `PUBLIC_PATHS`, like a HubSpot private app."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in PUBLIC_PATHS:
            scheme, _, credentials = Headers(scope=scope).get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not credentials:
                message = "Authentication credentials not found. Send the header `Authorization: Bearer <token>`."
            elif not hmac.compare_digest(credentials.strip().encode(), self._token):
                message = "The access token is invalid."
            else:
                message = None
            if message is not None:
                await error_response(401, "INVALID_AUTHENTICATION", message)(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _json_body(request: Request) -> object:
    raw = await request.body()
    try:
        raw.decode("utf-8")
        return orjson.loads(raw)
    except UnicodeDecodeError as exc:
        raise validation_error(f"Request body is not UTF-8: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise validation_error(f"Invalid input JSON on line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc


def _int_param(request: Request, name: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < minimum or (maximum is not None and int(raw) > maximum):
        bounds = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
        raise validation_error(f"Query parameter {name}={raw!r} must be an integer {bounds}")
    return int(raw)


def _property_names(request: Request) -> list[str] | None:
    raw = request.query_params.get("properties")
    return None if raw is None else [name for name in raw.split(",") if name]


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get(IDEMPOTENCY_KEY_HEADER)
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise validation_error(
            f"{IDEMPOTENCY_KEY_HEADER} must be 1..{MAX_IDEMPOTENCY_KEY_LENGTH} characters, got {len(key)}"
        )
    return key


def create_app(db_path: str | Path, token: str | None, faults: FaultConfig | None = None) -> Starlette:
    """The CRM stand-in over the SQLite file `db_path` (created if missing); `token=None` disables auth.

    `faults` switches on fault injection for batch upserts (see `FaultConfig`); ``PUT /_devstack/faults`` changes
    it at runtime. The store is ``app.state.store`` and the injector ``app.state.faults``, for tests.
    """
    store = ContactStore(db_path)
    injector = FaultInjector(faults)

    async def upsert(request: Request) -> Response:
        started_at = utc_now()
        if (fault := await injector.before_apply()) is not None:
            return fault
        body = await _json_body(request)
        inputs = parse_upsert_body(body)
        key = _idempotency_key(request)
        if key is None:
            results = store.upsert_batch(inputs)
            status, response, replayed = 200, _compact_json(batch_response(results, started_at)), False
        else:
            body_sha256 = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
            status, response, replayed = store.upsert_batch_idempotent(
                inputs, key=key, body_sha256=body_sha256, started_at=started_at
            )
        if replayed:
            logger.info("batch upsert: replayed the response recorded for %s %r", IDEMPOTENCY_KEY_HEADER, key)
            replay = {IDEMPOTENT_REPLAYED_HEADER: "true"}
            return Response(response, status_code=status, media_type="application/json", headers=replay)
        if (fault := injector.fail_after_apply()) is not None:
            return fault
        return Response(response, status_code=status, media_type="application/json")

    async def batch_read(request: Request) -> Response:
        body = await _json_body(request)
        id_property, values, names = parse_batch_ids(body, allow_id_property=True)
        found = await run_in_threadpool(lambda: [store.find(id_property, value) for value in values])
        results = [contact.to_json(names) for contact in found if contact is not None]
        missing = [value for value, contact in zip(values, found, strict=True) if contact is None]
        response: dict[str, Any] = {"status": "COMPLETE", "results": results}
        if missing:
            response["errors"] = [
                {
                    "status": "error",
                    "category": "OBJECT_NOT_FOUND",
                    "message": "Could not get some CONTACT objects",
                    "context": {"ids": missing},
                }
            ]
        return JSONResponse(response, status_code=207 if missing else 200)

    async def batch_archive(request: Request) -> Response:
        _, values, _ = parse_batch_ids(await _json_body(request), allow_id_property=False)
        ids = [int(value) for value in values if value.isdigit()]
        await run_in_threadpool(store.archive, ids)
        return Response(status_code=204)

    async def faults_endpoint(request: Request) -> Response:
        if request.method == "PUT":
            injector.configure(FaultConfig.from_json(await _json_body(request)))
            logger.info("fault injection set to %s", injector.config)
        return JSONResponse(injector.config.to_json())

    async def list_contacts(request: Request) -> Response:
        limit = _int_param(request, "limit", DEFAULT_PAGE_LIMIT, minimum=1, maximum=MAX_PAGE_LIMIT)
        after = _int_param(request, "after", 0, minimum=0)
        names = _property_names(request)
        contacts, next_after = await run_in_threadpool(store.page, limit=limit, after=after)
        body: dict[str, Any] = {"results": [contact.to_json(names) for contact in contacts]}
        if next_after is not None:
            link = f"{request.url.path}?limit={limit}&after={next_after}"
            body["paging"] = {"next": {"after": str(next_after), "link": link}}
        return JSONResponse(body)

    async def get_contact(request: Request) -> Response:
        value: str = request.path_params["contact_id"]
        id_property = request.query_params.get("idProperty") or OBJECT_ID_PROPERTY
        if not PROPERTY_NAME.fullmatch(id_property):
            raise validation_error(f"idProperty={id_property!r} is not a property name")
        contact = await run_in_threadpool(store.find, id_property, value)
        if contact is None:
            raise CrmError(404, "OBJECT_NOT_FOUND", f"No contact with {id_property}={value!r}")
        return JSONResponse(contact.to_json(_property_names(request)))

    async def stats(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(store.stats))

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def on_crm_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, CrmError)
        logger.info("%s %s -> %d: %s", request.method, request.url.path, exc.status_code, exc.message)
        return error_response(exc.status_code, exc.category, exc.message, exc.errors)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        category = "OBJECT_NOT_FOUND" if exc.status_code == 404 else "VALIDATION_ERROR"
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return error_response(exc.status_code, category, message, headers=exc.headers)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        store.close()

    contacts = "/crm/v3/objects/contacts"
    app = Starlette(
        routes=[
            Route(f"{contacts}/batch/upsert", upsert, methods=["POST"]),
            Route(f"{contacts}/batch/read", batch_read, methods=["POST"]),
            Route(f"{contacts}/batch/archive", batch_archive, methods=["POST"]),
            Route(contacts, list_contacts, methods=["GET"]),
            Route(f"{contacts}/{{contact_id}}", get_contact, methods=["GET"]),
            Route("/_devstack/stats", stats, methods=["GET"]),
            Route("/_devstack/faults", faults_endpoint, methods=["GET", "PUT"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        middleware=[Middleware(BearerTokenAuth, token=token)] if token else [],
        exception_handlers={CrmError: on_crm_error, HTTPException: on_http_error},
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.faults = injector
    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = server_arg_parser("HubSpot-shaped CRM contacts API backed by SQLite (devstack).", default_port=8765)
    parser.add_argument("--db", type=Path, default=Path(".data/crm.sqlite"), help="SQLite file (default: %(default)s)")
    parser.add_argument("--token", default=None, help="bearer token to require (default: $CRM_TOKEN; empty: no auth)")
    faults = parser.add_argument_group("fault injection (batch upsert only; default: off)")
    faults.add_argument("--rate-limit-every", type=int, default=0, metavar="N", help="429 every Nth request")
    faults.add_argument("--retry-after-seconds", type=float, default=1.0, help="Retry-After of those 429s")
    faults.add_argument("--error-rate", type=float, default=0.0, metavar="P", help="probability of a 503")
    faults.add_argument("--slow-seconds", type=float, default=0.0, help="delay before handling each request")
    faults.add_argument("--drop-rate", type=float, default=0.0, metavar="P", help="probability of a dropped connection")
    faults.add_argument(
        "--fail-after-apply-rate", type=float, default=0.0, metavar="P", help="probability of a 500 after applying"
    )
    faults.add_argument("--seed", type=int, default=None, help="seed for the fault dice (default: random)")
    args = parse_args(parser, argv)
    token = (args.token if args.token is not None else os.environ.get("CRM_TOKEN")) or None
    try:
        fault_config = FaultConfig(
            rate_limit_every=args.rate_limit_every,
            retry_after_seconds=args.retry_after_seconds,
            error_rate=args.error_rate,
            slow_seconds=args.slow_seconds,
            drop_rate=args.drop_rate,
            fail_after_apply_rate=args.fail_after_apply_rate,
            seed=args.seed,
        )
    except ValueError as exc:
        parser.error(str(exc))
    app = create_app(args.db, token, fault_config)
    logger.info("CRM stand-in: db=%s, auth=%s, faults=%s", args.db, "bearer token" if token else "off", fault_config)
    run_forever(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
