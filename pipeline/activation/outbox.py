"""Diff-based, exactly-once activation: per-sync state, a planned diff, and an outbox of idempotent batches.

    activation.sync_state   one row per record last sent: (sync, key, hash of the mapped fields, when)
    activation.sync_outbox  the batches a plan will send, each with an idempotency key and a status

A run first finishes any batch an earlier run planned but did not see acknowledged (same idempotency key, so
a destination that honours it applies it once), then diffs the model against the state in SQL and writes the
new batches to the outbox *before* sending anything. A batch is marked sent, and the state of its records
updated, in one transaction after a 2xx. Whatever the process dies of, the next run sends only what is left.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb

from ..ingestion.loader import quote_ident
from .crm import batched
from .syncs import SyncSpec

STATE = "activation.sync_state"
OUTBOX = "activation.sync_outbox"


@dataclass(frozen=True)
class DiffCounts:
    adds: int
    changes: int
    deletes: int
    unchanged: int

    @property
    def planned(self) -> int:
        return self.adds + self.changes + self.deletes


@dataclass(frozen=True)
class Batch:
    plan_id: str
    batch_no: int
    idempotency_key: str
    op: str
    record_keys: list[str]
    record_hashes: list[str]
    payload: dict


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


def diff_sql(spec: SyncSpec, relation: str, full_resync: bool) -> str:
    """adds / changes / deletes of the model against the sync's state, as (record_key, op, record_hash) rows.

    The hash covers exactly the mapped fields (as text, NULL kept distinct from ''), so a change to an unmapped
    column sends nothing. A full resync ignores the hashes: every record of the model is sent again.
    """
    fields = ", ".join(f"coalesce(CAST({quote_ident(c)} AS VARCHAR), '\\x00')" for c in spec.fields)
    changed = "TRUE" if full_resync else "src.record_hash IS DISTINCT FROM state.record_hash"
    return f"""
        WITH src AS (
            SELECT CAST({quote_ident(spec.primary_key)} AS VARCHAR) AS record_key,
                   md5(concat_ws('\\x1f', {fields})) AS record_hash
            FROM {relation}
        ),
        state AS (SELECT record_key, record_hash FROM {STATE} WHERE sync_name = $sync)
        SELECT coalesce(src.record_key, state.record_key) AS record_key,
               CASE WHEN state.record_key IS NULL THEN 'add'
                    WHEN src.record_key IS NULL THEN 'delete'
                    WHEN {changed} THEN 'change'
                    ELSE 'unchanged' END AS op,
               src.record_hash
        FROM src FULL OUTER JOIN state ON src.record_key = state.record_key
    """


def plan(
    conn: duckdb.DuckDBPyConnection,
    spec: SyncSpec,
    relation: str,
    plan_id: str,
    to_payload: Callable[[list[dict]], dict],
    batch_size: int,
    *,
    full_resync: bool = False,
    approve: Callable[[DiffCounts, int], None] | None = None,
    dry_run: bool = False,
) -> tuple[DiffCounts, list[dict]]:
    """Diff the model against the state and write the upsert batches to the outbox, in one transaction.

    `to_payload` turns a batch of model rows (the sync's columns) into the destination's request body.
    `approve(counts, state_rows)` may raise to refuse the plan (nothing is written); a dry run computes the
    counts and a sample of the changes and writes nothing. Deletes are counted; upsert mode leaves them at the
    destination.
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
        )
        if approve is not None:
            state_rows = conn.execute(f"SELECT count(*) FROM {STATE} WHERE sync_name = ?", [spec.name]).fetchone()[0]
            approve(counts, state_rows)
        if dry_run:
            sample = conn.execute(
                "SELECT record_key, op FROM sync_diff WHERE op <> 'unchanged' ORDER BY op, record_key LIMIT 20"
            ).fetchall()
            conn.execute("ROLLBACK")
            return counts, [{"key": key, "op": op} for key, op in sample]
        columns = ", ".join(f"m.{quote_ident(c)}" for c in spec.columns)
        cursor = conn.execute(
            f"SELECT d.record_key, d.record_hash, {columns} FROM sync_diff d"
            f" JOIN {relation} m ON CAST(m.{quote_ident(spec.primary_key)} AS VARCHAR) = d.record_key"
            " WHERE d.op IN ('add', 'change') ORDER BY d.record_key"
        )
        names = [d[0] for d in cursor.description][2:]
        rows = cursor.fetchall()
        planned_at = datetime.now(UTC).replace(tzinfo=None)
        for batch_no, chunk in enumerate(batched(rows, batch_size)):
            records = [dict(zip(names, row[2:], strict=True)) for row in chunk]
            conn.execute(
                f"INSERT INTO {OUTBOX} VALUES (?, ?, ?, ?, 'upsert', ?, ?, ?, 'pending', 0, ?, NULL)",
                [
                    spec.name,
                    plan_id,
                    batch_no,
                    idempotency_key(spec.name, plan_id, batch_no),
                    [r[0] for r in chunk],
                    [r[1] for r in chunk],
                    json.dumps(to_payload(records)),
                    planned_at,
                ],
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return counts, []


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
    return [
        Batch(p, n, k, op, list(keys), list(hashes), json.loads(payload)) for p, n, k, op, keys, hashes, payload in rows
    ]


def mark_sent(conn: duckdb.DuckDBPyConnection, sync: str, batch: Batch) -> None:
    """After a 2xx: the batch is sent and its records' state is what was sent, in one transaction."""
    now = datetime.now(UTC).replace(tzinfo=None)
    conn.execute("BEGIN TRANSACTION")
    try:
        conn.execute(
            f"UPDATE {OUTBOX} SET status = 'sent', sent_at = ?, attempts = attempts + 1"
            " WHERE sync_name = ? AND plan_id = ? AND batch_no = ?",
            [now, sync, batch.plan_id, batch.batch_no],
        )
        conn.execute(
            f"DELETE FROM {STATE} WHERE sync_name = ? AND list_contains(?, record_key)", [sync, batch.record_keys]
        )
        conn.execute(
            f"INSERT INTO {STATE} SELECT ?, unnest(?), unnest(?), ?",
            [sync, batch.record_keys, batch.record_hashes, now],
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def send_pending(
    conn: duckdb.DuckDBPyConnection, sync: str, send: Callable[[Batch], None], batches: Iterable[Batch] | None = None
) -> Sequence[Batch]:
    """Send each pending batch and mark it sent; `send` raises when the destination did not acknowledge it."""
    done = []
    for batch in pending(conn, sync) if batches is None else batches:
        send(batch)
        mark_sent(conn, sync, batch)
        done.append(batch)
    return done


@dataclass(frozen=True)
class SyncOutcome:
    resent: int  # batches an earlier run planned and this run delivered
    counts: DiffCounts
    sent: int  # batches this run planned and delivered
    sample: list[dict]  # a dry run's sample of the changes


def run_sync(
    conn: duckdb.DuckDBPyConnection,
    spec: SyncSpec,
    relation: str,
    plan_id: str,
    to_payload: Callable[[list[dict]], dict],
    batch_size: int,
    send: Callable[[Batch], None],
    *,
    full_resync: bool = False,
    approve: Callable[[DiffCounts, int], None] | None = None,
    dry_run: bool = False,
) -> SyncOutcome:
    """Finish what an earlier run left in the outbox, then diff, plan and send this run's batches.

    A dry run sends nothing at all, not even what an earlier run left pending.
    """
    resent = [] if dry_run else send_pending(conn, spec.name, send)
    counts, sample = plan(
        conn,
        spec,
        relation,
        plan_id,
        to_payload,
        batch_size,
        full_resync=full_resync,
        approve=approve,
        dry_run=dry_run,
    )
    sent = [] if dry_run else send_pending(conn, spec.name, send)
    return SyncOutcome(resent=len(resent), counts=counts, sent=len(sent), sample=sample)
