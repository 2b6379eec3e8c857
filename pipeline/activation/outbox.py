"""Diff-based, exactly-once activation: per-sync state, a planned diff, and an outbox of idempotent batches.

    activation.sync_state     one row per record last sent: (sync, key, hash of the mapped fields, when)
    activation.sync_outbox    the batches a plan will send, each with an idempotency key and a status (the body
                              is dropped once sent; keys, status and times stay as the audit trail)
    activation.sync_rejected  records the destination refused for good (e.g. an invalid email), with the reason;
                              skipped until their mapped fields change, then tried again

A run first finishes any batch an earlier run planned but did not see acknowledged (same idempotency key, so
a destination that honours it applies it once), then diffs the model against the state in SQL and writes the
new batches to the outbox *before* sending anything. A batch is marked sent, and the state of its records
updated, in one transaction after its 2xx (acknowledged batches are marked in groups). Whatever the process dies
of, the next run sends only what is left. Batches go out `destination.concurrency` at a time.

Upsert mode sends adds and changes; mirror mode also sends deletes (records gone from the model).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Protocol

import duckdb

from ..core.sql import quote_ident
from ..core.transport import Delivery
from . import shape
from .crm import batched
from .syncs import SyncSpec

STATE = "activation.sync_state"
OUTBOX = "activation.sync_outbox"
REJECTED = "activation.sync_rejected"


@dataclass(frozen=True)
class DiffCounts:
    adds: int
    changes: int
    deletes: int
    unchanged: int
    skipped: int = 0  # refused by the destination earlier and unchanged since: not sent again

    @property
    def planned(self) -> int:
        return self.adds + self.changes + self.deletes


@dataclass
class Batch:
    plan_id: str
    batch_no: int
    idempotency_key: str
    op: str
    record_keys: list[str]
    record_hashes: list[str]
    #: the request body as planned, JSON text: sent byte for byte on every attempt (what an idempotency key means)
    body: str

    @cached_property
    def payload(self) -> dict:
        return json.loads(self.body)


class Destination(Protocol):
    """Where a sync sends: how its request bodies look (built in SQL at plan time, so a resend is byte-identical)
    and how a batch is delivered."""

    batch_size: int
    concurrency: int

    def record_sql(self, types: dict[str, str]) -> str:
        """SQL expression (over the model row `m`, see `shape`) for one record's JSON; `types`: column -> type."""
        ...

    def batch_sql(self, records: str, key: str) -> str:
        """SQL expression for a batch's body text around `records` (a JSON array's text); `key` is the SQL of the
        batch's idempotency key."""
        ...

    def delete_body(self, keys: list[str], key: str) -> str: ...

    def deliver(self, batch: Batch) -> Delivery:
        """Send one batch; raise when the destination did not acknowledge it (it stays pending)."""
        ...


def ensure_tables(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute("CREATE SCHEMA IF NOT EXISTS activation")
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {STATE} (sync_name VARCHAR, record_key VARCHAR, record_hash VARCHAR,"
        " synced_at TIMESTAMP)"
    )
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {OUTBOX} (sync_name VARCHAR, plan_id VARCHAR, batch_no INTEGER,"
        " idempotency_key VARCHAR, op VARCHAR, record_keys VARCHAR[], record_hashes VARCHAR[], payload JSON,"
        " status VARCHAR, attempts INTEGER, planned_at TIMESTAMP, sent_at TIMESTAMP)"
    )
    conn.execute(
        f"CREATE TABLE IF NOT EXISTS {REJECTED} (sync_name VARCHAR, record_key VARCHAR, record_hash VARCHAR,"
        " error VARCHAR, plan_id VARCHAR, rejected_at TIMESTAMP)"
    )


def diff_sql(spec: SyncSpec, relation: str, full_resync: bool) -> str:
    """adds / changes / deletes of the model against the sync's state, as (record_key, op, record_hash) rows.

    The hash covers exactly the mapped fields (as text, NULL kept distinct from ''), so a change to an unmapped
    column sends nothing. A record the destination rejected is 'skipped' while its hash is the one rejected.
    A full resync ignores the hashes: every record of the model is sent again, rejected ones included.
    """
    fields = ", ".join(f"coalesce(CAST({quote_ident(c)} AS VARCHAR), '\\x00')" for c in spec.fields)
    changed = "TRUE" if full_resync else "src.record_hash IS DISTINCT FROM state.record_hash"
    skipped = "FALSE" if full_resync else "src.record_hash = rejected.record_hash"
    return f"""
        WITH src AS (
            SELECT CAST({quote_ident(spec.primary_key)} AS VARCHAR) AS record_key,
                   md5(concat_ws('\\x1f', {fields})) AS record_hash
            FROM {relation}
        ),
        state AS (SELECT record_key, record_hash FROM {STATE} WHERE sync_name = $sync),
        rejected AS (SELECT record_key, record_hash FROM {REJECTED} WHERE sync_name = $sync)
        SELECT coalesce(src.record_key, state.record_key) AS record_key,
               CASE WHEN src.record_key IS NULL THEN 'delete'
                    WHEN {skipped} THEN 'skipped'
                    WHEN state.record_key IS NULL THEN 'add'
                    WHEN {changed} THEN 'change'
                    ELSE 'unchanged' END AS op,
               src.record_hash
        FROM src FULL OUTER JOIN state ON src.record_key = state.record_key
        LEFT JOIN rejected ON rejected.record_key = src.record_key
    """


def plan(
    conn: duckdb.DuckDBPyConnection,
    spec: SyncSpec,
    relation: str,
    plan_id: str,
    destination: Destination,
    *,
    full_resync: bool = False,
    approve: Callable[[DiffCounts, int], None] | None = None,
    dry_run: bool = False,
) -> tuple[DiffCounts, list[dict]]:
    """Diff the model against the state and write the batches to the outbox, in one transaction.

    Batch bodies are shaped by DuckDB in the same statement that writes them (`destination.record_sql` per
    record, `destination.batch_sql` per batch). `approve(counts, state_rows)` may raise to refuse the plan (nothing
    is written); a dry run computes the counts and a sample of the changes and writes nothing. Deletes are counted
    in both modes; only mirror mode sends them. Returns the counts and a dry run's sample.
    """
    ensure_tables(conn)
    conn.execute("BEGIN TRANSACTION")
    try:
        conn.execute(
            f"CREATE OR REPLACE TEMP TABLE sync_diff AS {diff_sql(spec, relation, full_resync)}", {"sync": spec.name}
        )
        by_op = dict(conn.execute("SELECT op, count(*) FROM sync_diff GROUP BY op").fetchall())
        counts = DiffCounts(
            adds=by_op.get("add", 0),
            changes=by_op.get("change", 0),
            deletes=by_op.get("delete", 0),
            unchanged=by_op.get("unchanged", 0),
            skipped=by_op.get("skipped", 0),
        )
        if approve is not None:
            state_rows = conn.execute(f"SELECT count(*) FROM {STATE} WHERE sync_name = ?", [spec.name]).fetchone()[0]
            approve(counts, state_rows)
        if dry_run:
            sample = conn.execute(
                "SELECT record_key, op FROM sync_diff WHERE op NOT IN ('unchanged', 'skipped')"
                " ORDER BY op, record_key LIMIT 20"
            ).fetchall()
            conn.execute("ROLLBACK")
            return counts, [{"key": key, "op": op} for key, op in sample]
        planned_at = datetime.now(UTC).replace(tzinfo=None)
        upsert_batches = _write_upserts(conn, spec, relation, plan_id, destination, planned_at)
        if spec.mode == "mirror":
            gone = conn.execute("SELECT record_key FROM sync_diff WHERE op = 'delete' ORDER BY 1").fetchall()
            for batch_no, keys in enumerate(batched([r[0] for r in gone], destination.batch_size), upsert_batches):
                key = idempotency_key(spec.name, plan_id, batch_no)
                conn.execute(
                    f"INSERT INTO {OUTBOX} VALUES (?, ?, ?, ?, 'delete', ?, ?, ?, 'pending', 0, ?, NULL)",
                    [
                        spec.name,
                        plan_id,
                        batch_no,
                        key,
                        keys,
                        [None] * len(keys),
                        destination.delete_body(keys, key),
                        planned_at,
                    ],
                )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return counts, []


def _write_upserts(
    conn: duckdb.DuckDBPyConnection,
    spec: SyncSpec,
    relation: str,
    plan_id: str,
    destination: Destination,
    planned_at: datetime,
) -> int:
    """Write the adds and changes as batches (in key order) in one statement; returns how many batches."""
    types = shape.column_types(conn, relation, spec.columns)
    key = "left(sha256($sync || '/' || $plan || '/' || CAST(batch_no AS VARCHAR)), 32)"  # = idempotency_key()
    body = destination.batch_sql(shape.json_array("record", "record_key"), key)
    conn.execute(
        f"""INSERT INTO {OUTBOX}
        SELECT $sync, $plan, batch_no, {key}, 'upsert', list(record_key ORDER BY record_key),
               list(record_hash ORDER BY record_key), {body}, 'pending', 0, $at, NULL
        FROM (
            SELECT d.record_key, d.record_hash, {destination.record_sql(types)} AS record,
                   (row_number() OVER (ORDER BY d.record_key) - 1) // $size AS batch_no
            FROM sync_diff d
            JOIN {relation} {shape.ROW} ON CAST({shape.column(spec.primary_key)} AS VARCHAR) = d.record_key
            WHERE d.op IN ('add', 'change')
        )
        GROUP BY batch_no""",
        {"sync": spec.name, "plan": plan_id, "size": destination.batch_size, "at": planned_at},
    )
    return conn.execute(
        f"SELECT count(*) FROM {OUTBOX} WHERE sync_name = ? AND plan_id = ?", [spec.name, plan_id]
    ).fetchone()[0]


def idempotency_key(sync: str, plan_id: str, batch_no: int) -> str:
    return hashlib.sha256(f"{sync}/{plan_id}/{batch_no}".encode()).hexdigest()[:32]


def pending(conn: duckdb.DuckDBPyConnection, sync: str) -> list[Batch]:
    """Batches planned but not acknowledged, oldest plan first: what a run must send before planning anew."""
    ensure_tables(conn)
    rows = conn.execute(
        f"SELECT plan_id, batch_no, idempotency_key, op, record_keys, record_hashes, payload FROM {OUTBOX}"
        " WHERE sync_name = ? AND status = 'pending' ORDER BY planned_at, plan_id, batch_no",
        [sync],
    ).fetchall()
    return [Batch(p, n, k, op, list(keys), list(hashes), payload) for p, n, k, op, keys, hashes, payload in rows]


def mark_sent(
    conn: duckdb.DuckDBPyConnection, sync: str, acknowledged: Sequence[tuple[Batch, Delivery | None]]
) -> None:
    """After their 2xx, in one transaction: the batches are sent; the state of their accepted records is what was
    sent (or gone, for a delete); records the destination refused are kept with the reason until their data
    changes. The batches must belong to one plan (keys are then unique across them).

    The records' keys and hashes are read from the batches' outbox rows inside DuckDB (one group is up to
    `MARK_EVERY` batches, 25,000 records): only the batches' keys and the few refused records cross from Python,
    so marking barely holds the GIL the sending threads need.
    """
    if not acknowledged:
        return
    now = datetime.now(UTC).replace(tzinfo=None)
    refused = [
        [sync, batch.record_keys[i], batch.record_hashes[i], error, batch.plan_id, now]
        for batch, delivery in acknowledged
        for i, error in (delivery.rejected if delivery else {}).items()
    ]
    keys = [batch.idempotency_key for batch, _ in acknowledged]
    conn.execute("BEGIN TRANSACTION")
    try:
        conn.execute(
            "CREATE OR REPLACE TEMP TABLE sync_marked AS SELECT op, unnest(record_keys) AS record_key,"
            f" unnest(record_hashes) AS record_hash FROM {OUTBOX}"
            " WHERE sync_name = ? AND idempotency_key IN (SELECT unnest(?))",
            [sync, keys],
        )
        conn.execute(
            f"UPDATE {OUTBOX} SET status = 'sent', sent_at = ?, attempts = attempts + 1"
            " WHERE sync_name = ? AND idempotency_key IN (SELECT unnest(?))",
            [now, sync, keys],
        )
        conn.execute(
            f"DELETE FROM {REJECTED} WHERE sync_name = ? AND record_key IN (SELECT record_key FROM sync_marked)",
            [sync],
        )
        if refused:  # a refused change keeps the state of what the destination last accepted for that record
            conn.execute("DELETE FROM sync_marked WHERE record_key IN (SELECT unnest(?))", [[r[1] for r in refused]])
            conn.executemany(f"INSERT INTO {REJECTED} VALUES (?, ?, ?, ?, ?, ?)", refused)
        conn.execute(
            f"DELETE FROM {STATE} WHERE sync_name = ? AND record_key IN (SELECT record_key FROM sync_marked)", [sync]
        )
        conn.execute(
            f"INSERT INTO {STATE} SELECT ?, record_key, record_hash, ? FROM sync_marked WHERE op <> 'delete'",
            [sync, now],
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


#: Acknowledged batches are marked in groups of this many (one transaction each): a crash before a group is marked
#: only means those batches are resent with their idempotency keys and replayed, never applied twice.
MARK_EVERY = 250


def send_pending(
    conn: duckdb.DuckDBPyConnection,
    sync: str,
    deliver: Callable[[Batch], Delivery],
    batches: Iterable[Batch] | None = None,
    concurrency: int = 1,
) -> list[Delivery]:
    """Deliver the pending batches, plan by plan (oldest first), at most `concurrency` in flight.

    Plans go one after another, so a record planned twice (an earlier run's leftover, then this run) can never
    overtake itself. On the first failure no new batch is started; those in flight finish and are marked if
    acknowledged, then the error is raised: every batch not marked stays pending for the next run.
    """
    todo = pending(conn, sync) if batches is None else list(batches)
    done: list[Delivery] = []
    for _, plan_batches in itertools.groupby(todo, key=lambda b: b.plan_id):
        done += _send_plan(conn, sync, deliver, list(plan_batches), max(1, concurrency))
    return done


def _send_plan(
    conn: duckdb.DuckDBPyConnection,
    sync: str,
    deliver: Callable[[Batch], Delivery],
    batches: Iterable[Batch],
    concurrency: int,
) -> list[Delivery]:
    todo = iter(batches)
    done: list[Delivery] = []
    unmarked: list[tuple[Batch, Delivery]] = []
    failure: BaseException | None = None
    in_flight: dict[Future[Delivery], Batch] = {}
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"sync-{sync}") as pool:

        def refill() -> None:
            while failure is None and len(in_flight) < concurrency:
                batch = next(todo, None)
                if batch is None:
                    return
                in_flight[pool.submit(deliver, batch)] = batch

        try:
            refill()
            while in_flight:
                finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in finished:
                    batch = in_flight.pop(future)
                    try:
                        delivery = future.result()
                    except Exception as exc:
                        failure = failure or exc
                        continue
                    unmarked.append((batch, delivery))
                    done.append(delivery)
                # Refill first, so the next batches are on the wire while this thread marks (DuckDB releases the GIL).
                refill()
                if len(unmarked) >= MARK_EVERY:
                    mark_sent(conn, sync, unmarked)  # the connection is used from this thread only
                    unmarked = []
        finally:
            mark_sent(conn, sync, unmarked)
            # Bodies of acknowledged batches are not needed any more: keys, status and times stay as the audit trail.
            conn.execute(
                f"UPDATE {OUTBOX} SET payload = NULL WHERE sync_name = ? AND status = 'sent' AND payload IS NOT NULL",
                [sync],
            )
    if failure is not None:
        raise failure
    return done


@dataclass(frozen=True)
class SyncOutcome:
    counts: DiffCounts
    resent: list[Delivery]  # batches an earlier run planned and this run delivered
    sent: list[Delivery]  # batches this run planned and delivered
    sample: list[dict]  # a dry run's sample of the changes

    @property
    def deliveries(self) -> list[Delivery]:
        return self.resent + self.sent


def run_sync(
    conn: duckdb.DuckDBPyConnection,
    spec: SyncSpec,
    relation: str,
    plan_id: str,
    destination: Destination,
    *,
    full_resync: bool = False,
    approve: Callable[[DiffCounts, int], None] | None = None,
    dry_run: bool = False,
) -> SyncOutcome:
    """Finish what an earlier run left in the outbox, then diff, plan and send this run's batches.

    A dry run sends nothing at all, not even what an earlier run left pending.
    """

    def send() -> list[Delivery]:
        return send_pending(conn, spec.name, destination.deliver, concurrency=destination.concurrency)

    resent = [] if dry_run else send()
    counts, sample = plan(
        conn, spec, relation, plan_id, destination, full_resync=full_resync, approve=approve, dry_run=dry_run
    )
    sent = [] if dry_run else send()
    return SyncOutcome(counts=counts, resent=resent, sent=sent, sample=sample)
