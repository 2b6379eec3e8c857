"""P5: activation throughput against the local CRM server, and what diff-based re-runs send.

Ours is the production sync asset (`build_sync_asset`, run with `dg.materialize`): gates, the diff in DuckDB, the
outbox, batches of 100 sent `SYNC_CONCURRENCY` (4) at a time with idempotency keys, state marked per batch. The
baseline is the client a script would write: one keep-alive `httpx.Client`, one batch/upsert request per record,
one after another. The CRM server runs in its own process (it must not share the bench's GIL) with its SQLite file.

Both sides upsert the same records into a CRM that already holds them (a warm-up sync creates them first), so
both do the same work per record at the server. The naive client is timed on a slice of the records and its time
scaled to the full count (it is linear: one request per record); the slice is in the notes.

Each repetition of ours first drops the sync's state and outbox (untimed), so it diffs against empty state and
sends every record, and no repetition works on tables its predecessors grew.
After the rounds, one more sync checks what a re-run sends: nothing when unchanged, and exactly the changed
records when 1 % of the rows change (both asserted; the counts are in the notes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import duckdb
import httpx

from devstack.serve import server_process
from pipeline.activation import outbox, shape
from pipeline.activation.assets import build_sync_asset
from pipeline.activation.destinations.crm_contacts import UPSERT_PATH, CrmDestination, CrmResource
from pipeline.activation.syncs import ResolvedSync, load_syncs
from pipeline.core.resources import WarehouseResource

from ..harness import Case, Row, Setup, stopwatch

FULL_RECORDS, QUICK_RECORDS = 100_000, 2_000
FULL_NAIVE_SLICE, QUICK_NAIVE_SLICE = 5_000, 200
#: ours / naive time for the same records: >= 20x the throughput is a ratio <= 0.05
GOAL = 1 / 20
TOKEN = "bench-token"
JSON = {"Content-Type": "application/json"}
OURS_SYNC = "bench_sync"
CHANGED_SHARE = 0.01
MAX_SENT_SHARE = 0.011


def make_mart(db: Path, count: int) -> None:
    """`dim_customers` with the columns the contacts sync maps; valid, distinct emails."""
    with duckdb.connect(str(db)) as conn:
        conn.execute(
            f"""CREATE TABLE dim_customers AS SELECT i AS customer_id, 'customer' || i || '@example.com' AS email,
               'First' || (i % 997) AS first_name, 'Last' || (i % 1009) AS last_name, 'US' AS country_code,
               'North America' AS region, i % 3 = 0 AS marketing_opt_in,
               ['new', 'active', 'loyal', 'vip'][1 + i % 4] AS customer_segment,
               CAST(i % 5000 * 1.25 AS DECIMAL(18, 2)) AS lifetime_value, i % 40 AS order_count,
               TIMESTAMP '2026-11-01' + INTERVAL (i % 300) HOUR AS last_order_at FROM range(1, {count + 1}) t(i)"""
        )


@contextmanager
def prepare(quick: bool, workdir: Path) -> Iterator[Setup]:
    records = QUICK_RECORDS if quick else FULL_RECORDS
    naive_slice = QUICK_NAIVE_SLICE if quick else FULL_NAIVE_SLICE
    db = workdir / "warehouse.duckdb"
    make_mart(db, records)
    base = next(s for s in load_syncs() if s.name == "crm_contacts_sync")
    with server_process("devstack.crm", "--db", str(workdir / "crm.sqlite"), "--token", TOKEN) as url:
        crm = CrmResource(base_url=url, token=TOKEN)
        resources = {"warehouse": WarehouseResource(path=str(db)), "crm": crm}
        instance = dg.DagsterInstance.ephemeral()

        def sync(name: str) -> dict:
            spec = dataclasses.replace(base, name=name)
            asset = build_sync_asset(ResolvedSync(spec, dg.AssetKey("dim_customers"), "dim_customers"))
            result = dg.materialize([asset], resources=resources, instance=instance)
            meta = result.get_asset_materialization_events()[0].materialization.metadata
            return {key: value.value for key, value in meta.items()}

        # The naive client sends the very same inputs, one per request (shaped like ours, untimed).
        shaper = CrmDestination(None, None, base, crm.id_property)
        with duckdb.connect(str(db), read_only=True) as conn:
            record = shaper.record_sql(shape.column_types(conn, "dim_customers", base.columns))
            bodies = [
                f'{{"inputs":[{r[0]}]}}'.encode()
                for r in conn.execute(
                    f"SELECT {record} FROM dim_customers m ORDER BY customer_id LIMIT {naive_slice}"
                ).fetchall()
            ]
        ours_name = f"sync, {records:,} records (batches of 100, 4 in flight)"
        naive_name = f"naive, one request per record (timed on {naive_slice:,}, scaled to {records:,})"

        def ours() -> float:
            forget(db, OURS_SYNC)  # untimed: every repetition starts from the same empty state and sends everything
            with stopwatch() as t:
                meta = sync(OURS_SYNC)
            assert meta["sent"] == records and meta["failed"] == 0, meta
            return t.seconds

        def naive() -> float:
            auth = {"Authorization": f"Bearer {TOKEN}"}
            with httpx.Client(base_url=url, headers=auth, timeout=30) as client, stopwatch() as t:
                for body in bodies:
                    client.post(UPSERT_PATH, content=body, headers=JSON).raise_for_status()
            return t.seconds * records / naive_slice

        yield Setup(
            measures={ours_name: ours, naive_name: naive},
            # The first sync creates the contacts; afterwards both sides update existing ones.
            warmup=[ours_name, naive_name],
            rows=[
                Row(
                    f"activation: {records:,} records to the local CRM, our sync vs a naive one-request-per-record"
                    " client (goal ≥ 20x the throughput: ratio ≤ 0.05)",
                    ours_name,
                    naive_name,
                    GOAL,
                )
            ],
            notes=rerun_notes(sync, db, records),
        )


def forget(db: Path, sync: str) -> None:
    """Drop a sync's state, outbox and refusals (what a full resync ignores), and checkpoint, so repetitions are
    independent: each diffs against empty state, and the tables do not grow from one repetition to the next."""
    with duckdb.connect(str(db)) as conn:
        for table in (outbox.STATE, outbox.OUTBOX, outbox.REJECTED):
            conn.execute(f"DELETE FROM {table} WHERE sync_name = ?", [sync])
        conn.execute("CHECKPOINT")


def rerun_notes(sync, db: Path, records: int) -> list[str]:
    """Re-runs of one sync: unchanged sends nothing; 1 % changed sends exactly those (both asserted)."""
    first = sync("bench_rerun")
    unchanged = sync("bench_rerun")
    assert (unchanged["sent"], unchanged["planned"]) == (0, 0), unchanged
    with duckdb.connect(str(db)) as conn:
        step = round(1 / CHANGED_SHARE)
        conn.execute(f"UPDATE dim_customers SET lifetime_value = lifetime_value + 1 WHERE customer_id % {step} = 0")
    changed = sync("bench_rerun")
    expected = records // step
    assert changed["sent"] == expected and changed["sent"] <= MAX_SENT_SHARE * records, changed
    return [
        "CRM: `python -m devstack.crm` in its own process (SQLite file, bearer token), on loopback",
        f"Ours: the contacts sync asset through `dg.materialize`, its state dropped before each repetition"
        f" (every record sent); first sync of the re-run checks took {first['duration_seconds']} s"
        f" for {first['sent']:,} records",
        f"Unchanged re-run: {unchanged['sent']} of {records:,} records sent (asserted 0),"
        f" {unchanged['duration_seconds']} s",
        f"1 % of rows changed (lifetime_value of every {step}th customer): {changed['sent']:,} of {records:,} sent"
        f" = {changed['sent'] / records:.2%} (asserted ≤ {MAX_SENT_SHARE:.1%}), {changed['duration_seconds']} s",
    ]


CASE = Case(
    "p5", "activation to the local CRM (ours: diff-based batched sync; baseline: naive per-record client)", prepare
)
