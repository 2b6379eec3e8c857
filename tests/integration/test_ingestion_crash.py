"""A load killed with SIGKILL mid-insert leaves the raw table exactly as it was (DuckDB discards the open
transaction on recovery), and the next load of the same file succeeds."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import duckdb

from pipeline.core.objectstore import LocalLandingStore
from pipeline.ingestion.contracts import load_contracts
from pipeline.ingestion.loader import FileToLoad, load_file

LOADER = textwrap.dedent(
    """
    import sys, duckdb
    from pipeline.ingestion.contracts import load_contracts
    from pipeline.core.objectstore import LocalLandingStore
    from pipeline.ingestion.loader import FileToLoad, load_file
    root, db, key = sys.argv[1:]
    contract = {c.table: c for c in load_contracts()}["orders"]
    store = LocalLandingStore(root)
    conn = duckdb.connect(db)
    print("loading", flush=True)
    load_file(conn, contract, FileToLoad(store.head(key), store.root / key))
    print("committed", flush=True)
    """
)


def write_orders(conn: duckdb.DuckDBPyConnection, path, rows: int, offset: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn.execute(
        f"""COPY (SELECT {offset} + i AS order_id, i % 1000 AS customer_id, 'placed' AS order_status,
                         'web' AS sales_channel, 'US' AS shipping_country,
                         TIMESTAMP '2026-11-01 10:00:00' AS ordered_at, TIMESTAMP '2026-11-01 10:00:00' AS updated_at
                  FROM range({rows}) t(i)) TO '{path}' (HEADER)"""
    )


def test_sigkill_mid_load_leaves_the_table_as_it_was(tmp_path):
    landing, db = tmp_path / "landing", tmp_path / "w.duckdb"
    contract = {c.table: c for c in load_contracts()}["orders"]
    with duckdb.connect() as scratch:
        write_orders(scratch, landing / "shop/2026-11-01/orders.csv", 1_000)
        write_orders(scratch, landing / "shop/2026-11-02/orders.csv", 4_000_000, offset=10_000)
    store = LocalLandingStore(landing)
    with duckdb.connect(str(db)) as conn:
        load_file(
            conn, contract, FileToLoad(store.head("shop/2026-11-01/orders.csv"), landing / "shop/2026-11-01/orders.csv")
        )
        before = conn.execute("SELECT count(*), sum(order_id) FROM raw.orders").fetchone()

    child = subprocess.Popen(
        [sys.executable, "-c", LOADER, str(landing), str(db), "shop/2026-11-02/orders.csv"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert child.stdout.readline().strip() == "loading"
    # Killed once the insert has started writing (the database file or its WAL grows), whatever the machine's
    # speed: a fixed sleep let a quiet machine finish the load first.
    sizes = lambda: sum(p.stat().st_size for p in (db, db.with_name(db.name + ".wal")) if p.exists())  # noqa: E731
    start, deadline = sizes(), time.monotonic() + 60
    while sizes() == start and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert "committed" not in child.stdout.read(), "the load finished before the kill: make the file bigger"

    with duckdb.connect(str(db)) as conn:
        assert conn.execute("SELECT count(*), sum(order_id) FROM raw.orders").fetchone() == before
        again = load_file(
            conn, contract, FileToLoad(store.head("shop/2026-11-02/orders.csv"), landing / "shop/2026-11-02/orders.csv")
        )
        assert again.rows_loaded == 4_000_000 and again.rows_replaced == 0
