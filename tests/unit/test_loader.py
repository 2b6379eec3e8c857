from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from pipeline.ingestion.contracts import SourceTable
from pipeline.ingestion.landing import LocalLandingStore
from pipeline.ingestion.loader import FileToLoad, load_files

CONTRACT = SourceTable(
    system="shop",
    table="things",
    file="things",
    description="test",
    primary_key=("thing_id",),
    columns={"thing_id": "BIGINT", "code": "VARCHAR", "price": "DECIMAL(10,2)", "seen_at": "TIMESTAMP"},
)


def write(root: Path, key: str, text: str) -> None:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def files(root: Path, *keys: str) -> list[FileToLoad]:
    store = LocalLandingStore(root)
    objects = {o.key: o for o in store.list()}
    return [FileToLoad(objects[k], root / k) for k in keys]


@pytest.fixture
def conn():
    with duckdb.connect(":memory:") as c:
        yield c


def test_loads_each_format_with_contract_types_and_lineage(tmp_path, conn):
    write(tmp_path, "shop/2026-11-01/things.csv", "thing_id,code,price,seen_at\n1,007,9.90,2026-11-01 10:00:00\n")
    write(
        tmp_path,
        "shop/2026-11-02/things.jsonl",
        '{"thing_id": 2, "code": "42", "price": 1.5, "seen_at": "2026-11-02 08:00:00", "extra": 1}\n',
    )
    (tmp_path / "shop/2026-11-03").mkdir(parents=True)
    conn.execute(
        "COPY (SELECT 3::BIGINT AS thing_id, 'x' AS code, 2.25 AS price, TIMESTAMP '2026-11-03' AS seen_at)"
        f" TO '{tmp_path}/shop/2026-11-03/things.parquet' (FORMAT parquet)"
    )
    result = load_files(
        conn,
        CONTRACT,
        files(tmp_path, "shop/2026-11-01/things.csv", "shop/2026-11-02/things.jsonl", "shop/2026-11-03/things.parquet"),
        loaded_at=datetime(2026, 11, 4),
    )
    assert (result.files, result.rows_loaded, result.rows_replaced, result.table_rows) == (3, 3, 0, 3)
    rows = conn.execute(
        "SELECT thing_id, code, price::VARCHAR, _source_file, _landing_date::VARCHAR FROM raw.things ORDER BY 1"
    ).fetchall()
    assert rows == [
        (1, "007", "9.90", "shop/2026-11-01/things.csv", "2026-11-01"),  # leading zeros kept: CSV typed by contract
        (2, "42", "1.50", "shop/2026-11-02/things.jsonl", "2026-11-02"),
        (3, "x", "2.25", "shop/2026-11-03/things.parquet", "2026-11-03"),
    ]
    types = dict(
        conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'things'"
        ).fetchall()
    )
    assert types["price"] == "DECIMAL(10,2)" and types["_loaded_at"] == "TIMESTAMP"


def test_reloading_a_file_replaces_its_rows(tmp_path, conn):
    write(
        tmp_path,
        "shop/2026-11-01/things.csv",
        "thing_id,code,price,seen_at\n1,a,1,2026-11-01 00:00:00\n2,b,2,2026-11-01 00:00:00\n",
    )
    load_files(conn, CONTRACT, files(tmp_path, "shop/2026-11-01/things.csv"))
    write(tmp_path, "shop/2026-11-01/things.csv", "thing_id,code,price,seen_at\n1,a2,1,2026-11-01 00:00:00\n")
    again = load_files(conn, CONTRACT, files(tmp_path, "shop/2026-11-01/things.csv"))
    assert (again.rows_replaced, again.rows_loaded, again.table_rows) == (2, 1, 1)
    assert conn.execute("SELECT code FROM raw.things").fetchall() == [("a2",)]


def test_a_bad_file_leaves_the_table_as_it_was(tmp_path, conn):
    write(tmp_path, "shop/2026-11-01/things.csv", "thing_id,code,price,seen_at\n1,a,1,2026-11-01 00:00:00\n")
    load_files(conn, CONTRACT, files(tmp_path, "shop/2026-11-01/things.csv"))
    write(tmp_path, "shop/2026-11-01/things.csv", "thing_id,code,price,seen_at\n9,z,1,2026-11-01 00:00:00\n")
    write(tmp_path, "shop/2026-11-02/things.csv", "thing_id,code,price,seen_at\nnot-a-number,b,2,2026-11-02 00:00:00\n")
    with pytest.raises(duckdb.Error):
        load_files(conn, CONTRACT, files(tmp_path, "shop/2026-11-01/things.csv", "shop/2026-11-02/things.csv"))
    assert conn.execute("SELECT thing_id, code FROM raw.things").fetchall() == [(1, "a")]


def test_missing_contract_column_fails(tmp_path, conn):
    write(tmp_path, "shop/2026-11-01/things.csv", "thing_id,code,seen_at\n1,a,2026-11-01 00:00:00\n")
    with pytest.raises(duckdb.Error, match="price"):
        load_files(conn, CONTRACT, files(tmp_path, "shop/2026-11-01/things.csv"))


def test_a_newer_contract_adds_columns(tmp_path, conn):
    write(tmp_path, "shop/2026-11-01/things.csv", "thing_id,code,price,seen_at,color\n1,a,1,2026-11-01 00:00:00,red\n")
    load_files(conn, CONTRACT, files(tmp_path, "shop/2026-11-01/things.csv"))
    wider = SourceTable(**{**CONTRACT.__dict__, "columns": {**CONTRACT.columns, "color": "VARCHAR"}})
    load_files(conn, wider, files(tmp_path, "shop/2026-11-01/things.csv"))
    assert conn.execute("SELECT color FROM raw.things").fetchall() == [("red",)]
