"""Diff-based, exactly-once activation: per-sync state, a planned diff, and an outbox of idempotent batches.

    activation.sync_state     one row per record last sent: (sync, key, hash of the mapped fields, when)
    activation.sync_outbox    the batches a plan will send, each with an idempotency key and a status (the body
                              is dropped once sent; keys, status and times stay as the audit trail)
    activation.sync_rejected  records the destination refused for good (e.g. an invalid email), with the reason;
                              skipped until their mapped fields change, then tried again

A sync runs as three steps, so that it holds the warehouse (pool `warehouse`, one slot: DuckDB allows one writer
process) only while it reads or writes it, never while it talks HTTP — one batch can wait minutes on a 429's
Retry-After or a failing CRM, and every raw load and dbt build would wait with it:

    plan         (pool `warehouse`)  apply the acknowledgements an earlier send journaled (`mark_sent`); diff the
                                     model against the state in SQL and write the new batches to the outbox; hand
                                     every pending batch to the sync's journal (`journal.py`, SQLite beside the
                                     warehouse). Records in a batch still in flight are left out of the diff
                                     (counted `in_flight`): no record is ever in two unacknowledged batches.
    send         (pool `sync_<name>`) send the journal's unacknowledged batches, oldest plan first,
                                     `destination.concurrency` at a time, and journal the acknowledgements
                                     durably, in groups (`RECORD_EVERY`). No warehouse: another run may be writing it.
    acknowledge  (pool `warehouse`)  mark the journaled batches sent and update state and refused records in one
                                     transaction, then let the journal forget them.

Why a journal rather than moving state and outbox out of the warehouse: the diff is one SQL join of the model
against the state, and the plan writes the batch bodies in the statement that shapes them; both need the state
and outbox in the warehouse. The sender needs only the bodies and a place to note acknowledgements, which a
small SQLite file per sync gives it without the warehouse lock, and no migration of existing tables is needed.

Exactly once: every batch has an idempotency key, so a destination that honours it applies a resent batch
once. A send killed at any point leaves its acknowledgements in the journal (applied by the next plan) and the
rest unacknowledged (sent by the next send); applying an acknowledgement twice changes nothing (`mark_sent`
skips batches no longer pending). A second run's plan while a first run's send is in flight applies what that
send journaled so far, leaves the records of the batches still in flight alone, and its own send (queued behind
the first in the sync's pool) skips whatever the journal shows acknowledged. `run_sync` runs the three steps in
one process (tests, benchmarks).

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
from time import monotonic
from typing import TYPE_CHECKING, Protocol, TypedDict, Unpack

import duckdb

from ..core.sql import quote_ident
from ..core.transport import Delivery
from . import shape
from .syncs import SyncSpec

if TYPE_CHECKING:
    from .journal import Journal

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
    in_flight: int = 0  # in a batch an earlier plan made and no send has seen acknowledged yet: not planned again

    @property
    def planned(self) -> int:
        return self.adds + self.changes + self.deletes


@dataclass
class Batch:
    plan_id: str
    batch_no: int
    idempotency_key: str
    op: str
    #: the records' keys and hashes, as JSON arrays: a batch travels from the outbox to the journal and back as
    #: text, and only the few batches whose records are looked at one by one (refusals) are decoded
    keys_json: str
    hashes_json: str
    #: the request body as planned, JSON text: sent byte for byte on every attempt (what an idempotency key means)
    body: str

    @cached_property
    def record_keys(self) -> list[str]:
        return json.loads(self.keys_json)

    @cached_property
    def record_hashes(self) -> list[str | None]:
        return json.loads(self.hashes_json)

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


class PlanOptions(TypedDict, total=False):
    """How a plan is made (see `plan`)."""

    full_resync: bool
    approve: Callable[[DiffCounts, int], None] | None
    dry_run: bool


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
    A record in a pending (unacknowledged) batch is 'in_flight', whatever the mode: it is not planned again.
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
        rejected AS (SELECT record_key, record_hash FROM {REJECTED} WHERE sync_name = $sync),
        in_flight AS (
            SELECT DISTINCT unnest(record_keys) AS record_key FROM {OUTBOX}
            WHERE sync_name = $sync AND status = 'pending'
        )
        SELECT coalesce(src.record_key, state.record_key) AS record_key,
               CASE WHEN in_flight.record_key IS NOT NULL THEN 'in_flight'
                    WHEN src.record_key IS NULL THEN 'delete'
                    WHEN {skipped} THEN 'skipped'
                    WHEN state.record_key IS NULL THEN 'add'
                    WHEN {changed} THEN 'change'
                    ELSE 'unchanged' END AS op,
               src.record_hash
        FROM src FULL OUTER JOIN state ON src.record_key = state.record_key
        LEFT JOIN rejected ON rejected.record_key = src.record_key
        LEFT JOIN in_flight ON in_flight.record_key = coalesce(src.record_key, state.record_key)
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
            in_flight=by_op.get("in_flight", 0),
        )
        if approve is not None:
            state_rows = conn.execute(f"SELECT count(*) FROM {STATE} WHERE sync_name = ?", [spec.name]).fetchone()[0]
            approve(counts, state_rows)
        if dry_run:
            sample = conn.execute(
                "SELECT record_key, op FROM sync_diff WHERE op NOT IN ('unchanged', 'skipped', 'in_flight')"
                " ORDER BY op, record_key LIMIT 20"
            ).fetchall()
            conn.execute("ROLLBACK")
            return counts, [{"key": key, "op": op} for key, op in sample]
        planned_at = datetime.now(UTC).replace(tzinfo=None)
        upsert_batches = _write_upserts(conn, spec, relation, plan_id, destination, planned_at)
        if spec.mode == "mirror":
            gone = [
                r[0] for r in conn.execute("SELECT record_key FROM sync_diff WHERE op = 'delete' ORDER BY 1").fetchall()
            ]
            size = destination.batch_size
            chunks = (gone[start : start + size] for start in range(0, len(gone), size))
            for batch_no, keys in enumerate(chunks, upsert_batches):
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
    """Batches planned but not acknowledged, oldest plan first: what the plan step hands to the sender."""
    ensure_tables(conn)
    rows = conn.execute(
        "SELECT plan_id, batch_no, idempotency_key, op, CAST(to_json(record_keys) AS VARCHAR),"
        f" CAST(to_json(record_hashes) AS VARCHAR), payload FROM {OUTBOX}"
        " WHERE sync_name = ? AND status = 'pending' ORDER BY planned_at, plan_id, batch_no",
        [sync],
    ).fetchall()
    return [Batch(*row) for row in rows]


def mark_sent(
    conn: duckdb.DuckDBPyConnection, sync: str, acknowledged: Sequence[tuple[Batch, Delivery | None]]
) -> list[tuple[Batch, Delivery | None]]:
    """After their 2xx, in one transaction: the batches are sent; the state of their accepted records is what was
    sent (or gone, for a delete); records the destination refused are kept with the reason until their data
    changes. Returns the batches this call marked.

    Idempotent: batches the outbox no longer holds as pending (marked by an earlier call that died before the
    journal forgot them) are left out, so applying one acknowledgement twice changes nothing. The pending batches
    of a sync never share a record (a plan leaves out records in flight), so keys are unique across them.

    The records' keys and hashes are read from the batches' outbox rows inside DuckDB: only the batches' keys and
    the few refused records cross from Python.
    """
    if not acknowledged:
        return []
    now = datetime.now(UTC).replace(tzinfo=None)
    keys = [batch.idempotency_key for batch, _ in acknowledged]
    conn.execute("BEGIN TRANSACTION")
    try:
        still = {
            k
            for (k,) in conn.execute(
                f"SELECT idempotency_key FROM {OUTBOX} WHERE sync_name = ? AND status = 'pending'"
                " AND idempotency_key IN (SELECT unnest(?))",
                [sync, keys],
            ).fetchall()
        }
        marked = [(batch, delivery) for batch, delivery in acknowledged if batch.idempotency_key in still]
        keys = [batch.idempotency_key for batch, _ in marked]
        refused = [
            [sync, batch.record_keys[i], batch.record_hashes[i], error, batch.plan_id, now]
            for batch, delivery in marked
            for i, error in (delivery.rejected if delivery else {}).items()
        ]
        conn.execute(
            "CREATE OR REPLACE TEMP TABLE sync_marked AS SELECT op, unnest(record_keys) AS record_key,"
            f" unnest(record_hashes) AS record_hash FROM {OUTBOX}"
            " WHERE sync_name = ? AND idempotency_key IN (SELECT unnest(?))",
            [sync, keys],
        )
        # Bodies of acknowledged batches are not needed any more: keys, status and times stay as the audit trail.
        conn.execute(
            f"UPDATE {OUTBOX} SET status = 'sent', sent_at = ?, attempts = attempts + 1, payload = NULL"
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
    return marked


def hand_over(conn: duckdb.DuckDBPyConnection, journal: Journal, sync: str) -> int:
    """Give the sender every batch the outbox holds as pending (the new plan's, and any an earlier plan left that
    the journal lacks, e.g. after a crash between the plan's commit and its hand-over). Returns how many were new."""
    return journal.hand_over(pending(conn, sync))


def apply_acknowledged(
    conn: duckdb.DuckDBPyConnection, journal: Journal, sync: str
) -> list[tuple[Batch, Delivery | None]]:
    """Mark what the journal holds as acknowledged in the warehouse (one transaction), then let the journal forget
    it. A crash in between only means the next call finds them marked already (see `mark_sent`)."""
    acknowledged = journal.acknowledged()
    mark_sent(conn, sync, acknowledged)
    journal.forget([batch.idempotency_key for batch, _ in acknowledged])
    return acknowledged


#: The sender journals acknowledgements in groups, one durable commit each: up to this many batches, or what
#: arrived within `RECORD_AFTER_SECONDS` of the group's first. A send killed before a group's commit only means
#: those batches are sent again with their idempotency keys and the destination replays them: never applied twice.
#: (A commit per acknowledgement cost 1.7 s of 100,000 records' 4 s send, the sending threads waiting on it.)
RECORD_EVERY = 50
RECORD_AFTER_SECONDS = 1.0


def send_pending(
    journal: Journal,
    deliver: Callable[[Batch], Delivery],
    batches: Iterable[Batch] | None = None,
    concurrency: int = 1,
    name: str = "sync",
) -> list[tuple[Batch, Delivery]]:
    """Deliver the journal's unacknowledged batches, plan by plan (oldest first), at most `concurrency` in flight,
    journaling the acknowledgements in groups (`RECORD_EVERY`, `RECORD_AFTER_SECONDS`). Touches no warehouse.

    Plans go one after another, so a record planned twice (an earlier plan's, then a later one's) can never
    overtake itself. On the first failure no new batch is started; those in flight finish and are journaled if
    acknowledged, then the error is raised: every batch not journaled is sent by the next send (with its
    idempotency key: the destination replays it).
    """
    todo = journal.unacknowledged() if batches is None else list(batches)
    done: list[tuple[Batch, Delivery]] = []
    for _, plan_batches in itertools.groupby(todo, key=lambda b: b.plan_id):
        done += _send_plan(journal, deliver, list(plan_batches), max(1, concurrency), name)
    return done


def _send_plan(
    journal: Journal,
    deliver: Callable[[Batch], Delivery],
    batches: Iterable[Batch],
    concurrency: int,
    name: str,
) -> list[tuple[Batch, Delivery]]:
    todo = iter(batches)
    done: list[tuple[Batch, Delivery]] = []
    unrecorded: list[tuple[Batch, Delivery]] = []
    first_unrecorded = 0.0
    failure: BaseException | None = None
    in_flight: dict[Future[Delivery], Batch] = {}
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"sync-{name}") as pool:

        def refill() -> None:
            while failure is None and len(in_flight) < concurrency:
                batch = next(todo, None)
                if batch is None:
                    return
                in_flight[pool.submit(deliver, batch)] = batch

        try:
            refill()
            while in_flight:
                timeout = None if not unrecorded else max(0.0, first_unrecorded + RECORD_AFTER_SECONDS - monotonic())
                finished, _ = wait(in_flight, timeout=timeout, return_when=FIRST_COMPLETED)
                for future in finished:
                    batch = in_flight.pop(future)
                    try:
                        acknowledged = (batch, future.result())
                    except Exception as exc:
                        failure = failure or exc
                        continue
                    if not unrecorded:
                        first_unrecorded = monotonic()
                    unrecorded.append(acknowledged)
                    done.append(acknowledged)
                # Refill first, so the next batches are on the wire while this thread commits the journal.
                refill()
                if len(unrecorded) >= RECORD_EVERY or (
                    unrecorded and monotonic() - first_unrecorded >= RECORD_AFTER_SECONDS
                ):
                    journal.record(unrecorded)  # the journal is used from this thread only
                    unrecorded = []
        finally:
            journal.record(unrecorded)  # on a failure too: what was acknowledged stays acknowledged
    if failure is not None:
        raise failure
    return done


@dataclass(frozen=True)
class SyncOutcome:
    counts: DiffCounts
    resent: list[Delivery]  # batches an earlier plan left and this run delivered
    sent: list[Delivery]  # batches this run planned and delivered
    sample: list[dict]  # a dry run's sample of the changes

    @property
    def deliveries(self) -> list[Delivery]:
        return self.resent + self.sent


def outcome(counts: DiffCounts, plan_id: str, applied: Sequence[tuple[Batch, Delivery | None]]) -> SyncOutcome:
    """What a run did, from its plan's counts and the acknowledgements it applied."""
    deliveries = [(batch.plan_id, delivery) for batch, delivery in applied if delivery is not None]
    return SyncOutcome(
        counts=counts,
        resent=[d for p, d in deliveries if p != plan_id],
        sent=[d for p, d in deliveries if p == plan_id],
        sample=[],
    )


def prepare(
    conn: duckdb.DuckDBPyConnection,
    journal: Journal,
    spec: SyncSpec,
    relation: str,
    plan_id: str,
    destination: Destination,
    **options: Unpack[PlanOptions],
) -> tuple[DiffCounts, list[dict]]:
    """The plan step (holds the warehouse): apply the acknowledgements an earlier send journaled, diff and write
    the outbox (leaving out records still in flight), and hand the pending batches to the sender's journal.

    A dry run only diffs: it applies, writes and hands over nothing.
    """
    dry_run = options.get("dry_run", False)
    if not dry_run:
        apply_acknowledged(conn, journal, spec.name)
    counts, sample = plan(conn, spec, relation, plan_id, destination, **options)
    if not dry_run:
        hand_over(conn, journal, spec.name)
    return counts, sample


def run_sync(
    conn: duckdb.DuckDBPyConnection,
    journal: Journal,
    spec: SyncSpec,
    relation: str,
    plan_id: str,
    destination: Destination,
    **options: Unpack[PlanOptions],
) -> SyncOutcome:
    """The three steps in one process, one after another: plan, send, acknowledge (what the asset runs as three
    steps). A dry run sends nothing at all, not even what an earlier run left pending."""
    counts, sample = prepare(conn, journal, spec, relation, plan_id, destination, **options)
    if options.get("dry_run", False):
        return SyncOutcome(counts=counts, resent=[], sent=[], sample=sample)
    try:
        send_pending(journal, destination.deliver, concurrency=destination.concurrency, name=spec.name)
    finally:
        applied = apply_acknowledged(conn, journal, spec.name)
    return outcome(counts, plan_id, applied)


def rejected_sample(conn: duckdb.DuckDBPyConnection, sync: str, plan_ids: Iterable[str], limit: int = 20) -> list:
    """Records the destination refused in the given plans: (record_key, error), by key."""
    return conn.execute(
        f"SELECT record_key, error FROM {REJECTED} WHERE sync_name = ? AND plan_id IN (SELECT unnest(?))"
        " ORDER BY record_key LIMIT ?",
        [sync, sorted(set(plan_ids)), limit],
    ).fetchall()
