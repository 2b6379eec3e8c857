"""P3: loading a large landing file costs at most 1.2x DuckDB's own CSV load of the same file.

Ours is the production path, `load_file`: the header probe, contract types pinned while reading, lineage columns,
the delete of the file's earlier rows, the primary-key checks and the transaction. The baseline is the least DuckDB
can do with the file: `CREATE TABLE t AS SELECT * FROM read_csv(...)`. Both start from a fresh database file every
repetition and are timed from connect to close, so the checkpoint that makes the rows durable counts for both.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from pipeline.core.objectstore import LandedObject
from pipeline.core.sql import quote_literal
from pipeline.ingestion.contracts import SourceTable, load_contracts
from pipeline.ingestion.loader import FileToLoad, load_file, table_rows

from ..harness import Case, Row, Setup, stopwatch

FULL_ROWS = 5_000_000
QUICK_ROWS = 50_000
GOAL = 1.2

# Accepted values from the dbt project (staging/shop/_shop__models.yml), weighted roughly like a live shop.
STATUSES = ["delivered"] * 5 + ["shipped"] * 2 + ["paid", "placed", "cancelled", "returned"]
CHANNELS = ["web"] * 5 + ["mobile_app"] * 3 + ["marketplace"] * 2
COUNTRIES = ["US"] * 4 + ["CA", "GB", "GB", "DE", "DE", "FR", "NL", "AU", "JP"]


def orders_contract() -> SourceTable:
    return next(t for t in load_contracts() if t.table == "orders")


def _pick(values: list[str], salt: str) -> str:
    """SQL for a value of `values` picked by a hash of the row number (deterministic, so every run loads the same)."""
    literals = ", ".join(quote_literal(v) for v in values)
    return f"([{literals}])[1 + (hash(i, {quote_literal(salt)}) % {len(values)})::INTEGER]"


def generate_orders_csv(path: Path, rows: int) -> None:
    """A CSV in the `orders` contract's shape, written by DuckDB itself (5M rows in seconds, no Python loop).

    order_id is unique (increasing, like a database sequence); customers repeat; an order is placed over two
    years and updated within three days after.
    """
    select = f"""
        SELECT
            100000000 + i AS order_id,
            (1 + hash(i, 'customer') % 750000)::BIGINT AS customer_id,
            {_pick(STATUSES, "status")} AS order_status,
            {_pick(CHANNELS, "channel")} AS sales_channel,
            {_pick(COUNTRIES, "country")} AS shipping_country,
            TIMESTAMP '2024-11-01 00:00:00' + to_seconds((hash(i, 'ordered') % (2 * 365 * 86400))::BIGINT)
                AS ordered_at,
            ordered_at + to_seconds((hash(i, 'updated') % (3 * 86400))::BIGINT) AS updated_at
        FROM range({rows}) AS r(i)
    """
    with duckdb.connect() as conn:
        conn.execute(f"COPY ({select}) TO {quote_literal(str(path))} (HEADER, DELIMITER ',')")


def _fresh_db(workdir: Path, name: str) -> Path:
    path = workdir / f"{name}.duckdb"
    _remove_db(path)
    return path


def _remove_db(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".wal").unlink(missing_ok=True)


@contextmanager
def prepare(quick: bool, workdir: Path) -> Iterator[Setup]:
    rows = QUICK_ROWS if quick else FULL_ROWS
    contract = orders_contract()
    today = datetime.now(UTC).date()
    landing_key = f"{contract.system}/{today.isoformat()}/{contract.file}.csv"
    csv_path = workdir / f"{contract.file}.csv"
    with stopwatch() as generated:
        generate_orders_csv(csv_path, rows)
    size = csv_path.stat().st_size
    obj = LandedObject(landing_key, size, datetime.now(UTC), etag="bench")

    def ours() -> float:
        db = _fresh_db(workdir, "ours")
        with stopwatch() as t:
            conn = duckdb.connect(str(db))
            try:
                load = load_file(conn, contract, FileToLoad(obj, csv_path, landing_key))
            finally:
                conn.close()
        with duckdb.connect(str(db), read_only=True) as conn:
            assert load.rows_loaded == rows == table_rows(conn, contract), (load, rows)
        _remove_db(db)
        return t.seconds

    def baseline() -> float:
        db = _fresh_db(workdir, "baseline")
        with stopwatch() as t:
            conn = duckdb.connect(str(db))
            try:
                conn.execute(f"CREATE TABLE t AS SELECT * FROM read_csv({quote_literal(str(csv_path))})")
            finally:
                conn.close()
        with duckdb.connect(str(db), read_only=True) as conn:
            loaded = conn.execute("SELECT count(*) FROM t").fetchone()[0]
        assert loaded == rows, (loaded, rows)
        _remove_db(db)
        return t.seconds

    yield Setup(
        measures={"load_file -> raw.orders": ours, "CTAS read_csv": baseline},
        # The first load after writing the CSV was seen ~3x slower than the next ones (dirty pages being written
        # back, allocator growth); one untimed load of each side first keeps that out of both medians.
        warmup=[] if quick else ["load_file -> raw.orders", "CTAS read_csv"],
        rows=[
            Row(
                f"load {rows:,}-row orders CSV: load_file vs CREATE TABLE AS read_csv",
                ours="load_file -> raw.orders",
                baseline="CTAS read_csv",
                goal=GOAL,
            )
        ],
        notes=[
            f"Input: {rows:,} rows, {size / 1e6:.0f} MB CSV in the `orders` contract shape"
            f" (generated by DuckDB COPY in {generated.seconds:.1f} s, not timed)",
            f"Ours: `load_file(conn, contract, FileToLoad(obj, path, {landing_key!r}))` into raw.orders of a fresh"
            " DuckDB file: probe, contract types, lineage columns, delete, insert, primary-key checks, commit",
            "Baseline: `CREATE TABLE t AS SELECT * FROM read_csv(path)` into a fresh DuckDB file",
            "Both timed from connect to close (the checkpoint on close included), DuckDB's default settings;"
            " each side loaded once untimed before the rounds (full run)",
        ],
    )


CASE = Case("p3", "ingest a large CSV (ours: load_file; baseline: CTAS read_csv)", prepare)
