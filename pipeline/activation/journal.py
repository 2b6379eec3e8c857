"""A sync's send journal: the batches its plan handed over to the sender, and which of them were acknowledged.

One small SQLite file per sync beside the warehouse (`<warehouse>.<sync>.journal.sqlite`). The plan step copies
the outbox's pending batches (bodies included) into it while it holds the warehouse; the send step reads them
from here, not from the warehouse (another process may be writing that), and records the acknowledgements here,
durably, in groups (`outbox.RECORD_EVERY`, `RECORD_AFTER_SECONDS`); the acknowledge step (or the next plan)
applies the recorded acknowledgements to the warehouse and then forgets those batches.

SQLite lets the sender commit while a plan or an acknowledge step of another run reads the file (WAL); writers
wait for each other for up to `BUSY_TIMEOUT_SECONDS`. Two senders of one sync never run at once (their step is in
the sync's own pool).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from ..core.settings import MOTHERDUCK_PREFIX, is_motherduck
from ..core.transport import Delivery
from .outbox import Batch

BUSY_TIMEOUT_SECONDS = 60

SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    idempotency_key TEXT PRIMARY KEY,
    plan_id TEXT NOT NULL,
    batch_no INTEGER NOT NULL,
    op TEXT NOT NULL,
    record_keys TEXT NOT NULL,     -- JSON array
    record_hashes TEXT NOT NULL,   -- JSON array
    body TEXT NOT NULL,            -- the request body as planned, sent byte for byte
    handed_over_at TEXT NOT NULL,
    acknowledged_at TEXT,          -- NULL until the destination acknowledged the batch
    delivery TEXT                  -- JSON of the Delivery, once acknowledged
)
"""


def journal_path(warehouse_path: str | Path, sync: str, journal_dir: str | Path | None = None) -> Path:
    """Where a sync's journal lives: beside the warehouse file (or in `journal_dir`: SYNC_JOURNAL_DIR, which a
    MotherDuck warehouse needs), named after both."""
    warehouse = str(warehouse_path)
    name = warehouse.removeprefix(MOTHERDUCK_PREFIX) if is_motherduck(warehouse) else Path(warehouse).name
    folder = Path(journal_dir) if journal_dir else Path(warehouse).parent
    return folder / f"{name}.{sync}.journal.sqlite"


def _delivery_json(delivery: Delivery) -> str:
    return json.dumps(
        {
            "accepted": delivery.accepted,
            "rejected": {str(i): error for i, error in delivery.rejected.items()},
            "created": delivery.created,
            "updated": delivery.updated,
            "deleted": delivery.deleted,
        }
    )


def _delivery(text: str) -> Delivery:
    data = json.loads(text)
    return Delivery(
        accepted=data["accepted"],
        rejected={int(i): error for i, error in data["rejected"].items()},
        created=data["created"],
        updated=data["updated"],
        deleted=data["deleted"],
    )


class Journal:
    """One open journal file (use `open_journal`). Used from one thread: the sender's main thread commits."""

    def __init__(self, conn: sqlite3.Connection, path: Path | str) -> None:
        self.conn = conn
        self.path = path

    def hand_over(self, batches: Iterable[Batch]) -> int:
        """Add batches for the sender; ones it already holds (acknowledged or not) are left as they are.
        Returns how many were new. They are sent in the order they were handed over."""
        now = datetime.now(UTC).isoformat()
        rows = [
            (
                b.idempotency_key,
                b.plan_id,
                b.batch_no,
                b.op,
                b.keys_json,
                b.hashes_json,
                b.body,
                now,
            )
            for b in batches
        ]
        with self.conn:
            before = self.conn.total_changes
            self.conn.executemany(
                "INSERT OR IGNORE INTO batches (idempotency_key, plan_id, batch_no, op, record_keys, record_hashes,"
                " body, handed_over_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            return self.conn.total_changes - before

    def unacknowledged(self) -> list[Batch]:
        """What the sender still has to send, in the order handed over: oldest plan first, in batch order."""
        rows = self.conn.execute(
            "SELECT plan_id, batch_no, idempotency_key, op, record_keys, record_hashes, body FROM batches"
            " WHERE acknowledged_at IS NULL ORDER BY rowid"
        ).fetchall()
        return [Batch(*row) for row in rows]

    def record(self, acknowledged: Sequence[tuple[Batch, Delivery]]) -> None:
        """Record acknowledgements, in one durable commit."""
        if not acknowledged:
            return
        now = datetime.now(UTC).isoformat()
        with self.conn:
            self.conn.executemany(
                "UPDATE batches SET acknowledged_at = ?, delivery = ? WHERE idempotency_key = ?",
                [(now, _delivery_json(d), b.idempotency_key) for b, d in acknowledged],
            )

    def acknowledged(self) -> list[tuple[Batch, Delivery]]:
        """Acknowledged batches not yet applied to the warehouse (bodies left out), oldest plan first."""
        rows = self.conn.execute(
            "SELECT plan_id, batch_no, idempotency_key, op, record_keys, record_hashes, delivery FROM batches"
            " WHERE acknowledged_at IS NOT NULL ORDER BY rowid"
        ).fetchall()
        return [
            (Batch(p, n, k, op, keys, hashes, ""), _delivery(delivery)) for p, n, k, op, keys, hashes, delivery in rows
        ]

    def forget(self, keys: Sequence[str]) -> None:
        """Drop batches whose acknowledgement the warehouse holds now."""
        with self.conn:
            self.conn.execute(
                "DELETE FROM batches WHERE idempotency_key IN (SELECT value FROM json_each(?))",
                [json.dumps(list(keys))],
            )


@contextmanager
def open_journal(path: Path | str) -> Iterator[Journal]:
    """Open (creating) a journal; ':memory:' gives a private one (tests)."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_SECONDS)  # a transaction per `with`: one commit each
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: an acknowledgement recorded survives a power cut too, not only a killed process.
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute(SCHEMA)
        yield Journal(conn, path)
    finally:
        conn.close()
