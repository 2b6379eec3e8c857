"""The CRM stand-in's storage: contacts in one SQLite file (`ContactStore`), apart from the HTTP layer.

The schema (contacts, the unique id properties and their (property, value) index, counters, the recorded
Idempotency-Key responses), the write transaction every change runs in, batch upserts that merge inputs reaching
one contact, unique-value conflicts (409), archive, and the reads the API serves (by id, by idProperty, pages,
stats).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from devstack.crm.contacts import (
    OBJECT_ID_PROPERTY,
    Contact,
    PropertyValue,
    UpsertInput,
    UpsertResult,
    compact_json,
    utc_now,
)
from devstack.crm.errors import CrmError

logger = logging.getLogger(__name__)

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
            row = compact_json(contact.properties)
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


def _conflict(key: tuple[str, str], holder: int, claimant: int) -> CrmError:
    prop, value = key
    return CrmError(
        409,
        "CONFLICT",
        f"Contact {claimant} cannot take {prop}={value!r}: contact {holder} already has it and {prop} is a unique "
        "id property. No input of this batch was applied.",
    )
