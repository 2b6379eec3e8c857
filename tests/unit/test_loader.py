import gzip
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from pipeline.ingestion.contracts import SourceTable
from pipeline.ingestion.landing import LocalLandingStore
from pipeline.ingestion.loader import ContractViolation, FileToLoad, explain, load_file

CONTRACT = SourceTable(
    system="shop",
    table="things",
    file="things",
    description="test",
    primary_key=("thing_id",),
    columns={"thing_id": "BIGINT", "code": "VARCHAR", "price": "DECIMAL(10,2)", "seen_at": "TIMESTAMP"},
)
HEADER = "thing_id,code,price,seen_at\n"


def write(root: Path, key: str, data: str | bytes) -> FileToLoad:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return FileToLoad(LocalLandingStore(root).head(key), path)


@pytest.fixture
def conn():
    with duckdb.connect(":memory:") as c:
        yield c


def rows(conn, sql="SELECT thing_id, code FROM raw.things ORDER BY 1"):
    return conn.execute(sql).fetchall()


def test_loads_each_format_with_contract_types_and_lineage(tmp_path, conn):
    csv = write(tmp_path, "shop/2026-11-01/things.csv", HEADER + "1,007,9.90,2026-11-01 10:00:00\n")
    jsonl = write(
        tmp_path,
        "shop/2026-11-02/things.jsonl.gz",
        gzip.compress(b'{"thing_id": 2, "code": "42", "price": 1.5, "seen_at": "2026-11-02 08:00:00"}\n'),
    )
    (tmp_path / "shop/2026-11-03").mkdir(parents=True)
    conn.execute(
        "COPY (SELECT 3::BIGINT AS thing_id, 'x' AS code, 2.25 AS price, TIMESTAMP '2026-11-03' AS seen_at)"
        f" TO '{tmp_path}/shop/2026-11-03/things.parquet' (FORMAT parquet)"
    )
    parquet = FileToLoad(
        LocalLandingStore(tmp_path).head("shop/2026-11-03/things.parquet"), tmp_path / "shop/2026-11-03/things.parquet"
    )
    loaded = [load_file(conn, CONTRACT, f, loaded_at=datetime(2026, 11, 4)) for f in (csv, jsonl, parquet)]
    assert [f.rows_loaded for f in loaded] == [1, 1, 1]
    assert rows(
        conn, "SELECT thing_id, code, price::VARCHAR, _source_file, _landing_date::VARCHAR FROM raw.things ORDER BY 1"
    ) == [
        (1, "007", "9.90", "shop/2026-11-01/things.csv", "2026-11-01"),  # leading zeros kept: CSV typed by contract
        (2, "42", "1.50", "shop/2026-11-02/things.jsonl.gz", "2026-11-02"),
        (3, "x", "2.25", "shop/2026-11-03/things.parquet", "2026-11-03"),
    ]


def test_reloading_a_file_replaces_its_rows(tmp_path, conn):
    load_file(
        conn, CONTRACT, write(tmp_path, "shop/2026-11-01/things.csv", HEADER + "1,a,1,2026-11-01\n2,b,2,2026-11-01\n")
    )
    again = load_file(conn, CONTRACT, write(tmp_path, "shop/2026-11-01/things.csv", HEADER + "1,a2,1,2026-11-01\n"))
    assert (again.rows_replaced, again.rows_loaded) == (2, 1)
    assert rows(conn) == [(1, "a2")]


def test_rows_are_recorded_under_the_landing_key_even_from_processed(tmp_path, conn):
    f = write(tmp_path, "processed/shop/2026-11-01/things.csv", HEADER + "1,a,1,2026-11-01\n")
    load_file(conn, CONTRACT, FileToLoad(f.obj, f.path, "shop/2026-11-01/things.csv"))
    assert rows(conn, "SELECT _source_file FROM raw.things") == [("shop/2026-11-01/things.csv",)]


def violation(tmp_path, conn, key: str, data, contract=CONTRACT) -> ContractViolation:
    load_file(conn, CONTRACT, write(tmp_path, "shop/2026-10-31/things.csv", HEADER + "9,keep,1,2026-10-31\n"))
    before = rows(conn)
    with pytest.raises(ContractViolation) as info:
        load_file(conn, contract, write(tmp_path, key, data))
    assert rows(conn) == before, "a rejected file leaves the table as it was"
    return info.value


def test_castability_names_line_column_expected_and_found(tmp_path, conn):
    v = violation(tmp_path, conn, "shop/2026-11-01/things.csv", HEADER + "1,a,1,2026-11-01\nabc,b,2,2026-11-01\n")
    assert (v.check, v.line, v.column, v.expected, v.found) == ("castable", 3, "thing_id", "BIGINT", "abc")


def test_missing_column_and_wrong_delimiter(tmp_path, conn):
    v = violation(tmp_path, conn, "shop/2026-11-01/things.csv", "thing_id,code,seen_at\n1,a,2026-11-01\n")
    assert v.check == "required_columns" and v.column == "price"
    v = violation(tmp_path, conn, "shop/2026-11-01/things.csv", "thing_id;code;price;seen_at\n1;a;1;2026-11-01\n")
    assert "delimited by something else" in v.message


def test_primary_key_must_be_present_and_unique(tmp_path, conn):
    v = violation(tmp_path, conn, "shop/2026-11-01/things.csv", HEADER + "1,a,1,2026-11-01\n1,b,1,2026-11-01\n")
    assert v.check == "primary_key_unique" and "1" in v.found
    v = violation(tmp_path, conn, "shop/2026-11-01/things.csv", HEADER + ",a,1,2026-11-01\n")
    assert v.check == "primary_key_not_null"


def test_json_cast_error_has_its_line(tmp_path, conn):
    data = '{"thing_id": 1, "code": "a", "price": 1, "seen_at": "2026-11-01"}\n'
    data += '{"thing_id": "zz", "code": "b", "price": 1, "seen_at": "2026-11-01"}\n'
    v = violation(tmp_path, conn, "shop/2026-11-01/things.jsonl", data)
    assert (v.check, v.line) == ("castable", 2)


def test_extra_column_policies(tmp_path, conn):
    data = HEADER.replace("\n", ",color\n") + "1,a,1,2026-11-01,red\n"
    ignored = load_file(conn, CONTRACT, write(tmp_path, "shop/2026-11-01/things.csv", data))
    assert ignored.extra_columns == ("color",)
    assert "color" not in [r[0] for r in conn.execute("DESCRIBE raw.things").fetchall()]
    loading = SourceTable(**{**CONTRACT.__dict__, "extra_columns": "load"})
    load_file(conn, loading, write(tmp_path, "shop/2026-11-01/things.csv", data))
    assert rows(conn, "SELECT color FROM raw.things") == [("red",)]
    rejecting = SourceTable(**{**CONTRACT.__dict__, "extra_columns": "reject"})
    v = violation(tmp_path, conn, "shop/2026-11-02/things.csv", data, contract=rejecting)
    assert v.check == "extra_columns" and v.column == "color"


def test_optional_columns_load_as_null(tmp_path, conn):
    contract = SourceTable(**{**CONTRACT.__dict__, "optional": frozenset({"price"})})
    load_file(conn, contract, write(tmp_path, "shop/2026-11-01/things.csv", "thing_id,code,seen_at\n1,a,2026-11-01\n"))
    assert rows(conn, "SELECT thing_id, price FROM raw.things") == [(1, None)]


def test_explain_falls_back_to_the_first_line():
    v = explain(duckdb.IOException("IO Error: something odd\nmore"), "k")
    assert (v.check, v.message) == ("readable", "IO Error: something odd")


def test_gzip_wrapped_parquet_is_unwrapped_and_a_broken_one_rejected(tmp_path, conn):
    conn.execute(
        "COPY (SELECT 5::BIGINT AS thing_id, 'p' AS code, 1.25 AS price, TIMESTAMP '2026-11-03' AS seen_at)"
        f" TO '{tmp_path}/plain.parquet' (FORMAT parquet)"
    )
    data = gzip.compress((tmp_path / "plain.parquet").read_bytes())
    load_file(conn, CONTRACT, write(tmp_path, "shop/2026-11-03/things.parquet.gz", data))
    assert rows(conn) == [(5, "p")]
    v = violation(tmp_path, conn, "shop/2026-11-04/things.parquet.gz", data[:-30])
    assert (v.check, v.key) == ("readable", "shop/2026-11-04/things.parquet.gz") and "gzip" in v.message
