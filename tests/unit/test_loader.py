import gzip
from datetime import datetime
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.core.objectstore import LocalLandingStore
from pipeline.ingestion.contracts import SourceTable
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


# --- whole numbers in integer columns: DuckDB's casts round ('100002.5' -> 100003), the loader must not ---------

INTEGER_TYPES = ["TINYINT", "SMALLINT", "INTEGER", "INT", "BIGINT", "INT8", "LONG", "HUGEINT", "UTINYINT"]
INTEGER_TYPES += ["USMALLINT", "UINTEGER", "UBIGINT", "UHUGEINT"]


def with_type(type_: str) -> SourceTable:
    return SourceTable(**{**CONTRACT.__dict__, "columns": {**CONTRACT.columns, "qty": type_}})


def qty_file(tmp_path: Path, conn, fmt: str, values: list[str], day: str = "2026-11-01") -> FileToLoad:
    """A file of `things` whose qty column holds `values` as written (numbers, not strings, in JSON / Parquet)."""
    key = f"shop/{day}/things.{fmt}"
    if fmt.startswith("csv"):
        data = HEADER.replace("\n", ",qty\n") + "".join(f"{i},c{i},1,2026-11-01,{v}\n" for i, v in enumerate(values))
    elif fmt.startswith("jsonl"):
        data = "".join(
            f'{{"thing_id": {i}, "code": "c", "price": 1, "seen_at": "2026-11-01", "qty": {v}}}\n'
            for i, v in enumerate(values)
        )
    else:
        rows = " UNION ALL ".join(
            f"SELECT {i}::BIGINT AS thing_id, 'c' AS code, 1.0 AS price, TIMESTAMP '2026-11-01' AS seen_at, {v} AS qty"
            for i, v in enumerate(values)
        )
        (tmp_path / "shop" / day).mkdir(parents=True, exist_ok=True)
        conn.execute(f"COPY ({rows} ORDER BY thing_id) TO '{tmp_path / key}' (FORMAT parquet)")
        return FileToLoad(LocalLandingStore(tmp_path).head(key), tmp_path / key)
    return write(tmp_path, key, gzip.compress(data.encode()) if fmt.endswith(".gz") else data)


@pytest.mark.parametrize("fmt", ["csv", "csv.gz", "jsonl", "jsonl.gz", "parquet"])
@pytest.mark.parametrize("type_", ["BIGINT", "INTEGER", "UBIGINT", "HUGEINT"])
def test_a_fraction_in_an_integer_column_is_rejected_with_its_line(tmp_path, conn, fmt, type_):
    values = ["1", "100002.5", "7"] if fmt != "parquet" else ["1.0", "100002.5", "7.0"]
    with pytest.raises(ContractViolation) as info:
        load_file(conn, with_type(type_), qty_file(tmp_path, conn, fmt, values))
    v = info.value
    # CSV: header + 2 rows before it; JSON Lines: its own line; Parquet: its row
    assert (v.check, v.column, v.found, v.line) == ("integral", "qty", "100002.5", 3 if fmt.startswith("csv") else 2)
    assert v.expected == f"a whole number ({type_})"
    assert str(v) == (
        f"shop/2026-11-01/things.{fmt}: value '100002.5' is not a whole number, as {type_} column qty requires (it"
        f" would be rounded) (line {v.line}, column qty)"
    )
    assert conn.execute("SELECT count(*) FROM raw.things").fetchone()[0] == 0, "nothing of the file is loaded"


@pytest.mark.parametrize("type_", INTEGER_TYPES)
def test_every_integer_type_a_contract_may_use(tmp_path, conn, type_):
    with pytest.raises(ContractViolation) as info:
        load_file(conn, with_type(type_), qty_file(tmp_path, conn, "csv", ["1", "2.5", "3"]))
    assert (info.value.check, info.value.line, info.value.found) == ("integral", 3, "2.5")
    load_file(conn, with_type(type_), qty_file(tmp_path, conn, "csv", ["1", "2.0", "3"], "2026-11-02"))
    assert rows(conn, "SELECT qty FROM raw.things ORDER BY thing_id") == [(1,), (2,), (3,)]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_whole_numbers_written_as_decimals_load(tmp_path, conn, fmt):
    """'100002.0' and 1e3 are whole numbers: exporters that write every number as a float are not rejected."""
    values = ["100002.0", "1e3", "-4"] if fmt != "parquet" else ["100002.0::DOUBLE", "1000.00::DECIMAL(10,2)", "-4"]
    load_file(conn, with_type("BIGINT"), qty_file(tmp_path, conn, fmt, values))
    assert rows(conn, "SELECT qty FROM raw.things ORDER BY thing_id") == [(100002,), (1000,), (-4,)]


def test_integers_past_double_precision_stay_exact(tmp_path, conn):
    load_file(conn, with_type("BIGINT"), qty_file(tmp_path, conn, "csv", ["9007199254740993", "9007199254740993.0"]))
    assert rows(conn, "SELECT qty FROM raw.things") == [(9007199254740993,), (9007199254740993,)]
    with pytest.raises(ContractViolation) as info:
        load_file(conn, with_type("BIGINT"), qty_file(tmp_path, conn, "csv", ["9007199254740993.5"], "2026-11-02"))
    assert info.value.found == "9007199254740993.5"


@pytest.mark.parametrize(
    ("value", "fraction"),
    [("15e-1", True), ("1.5e1", False), ("0.000001", True), ("-3.25", True), ("  8.50 ", True), ("2.000", False)],
)
def test_fraction_forms(tmp_path, conn, value, fraction):
    f = qty_file(tmp_path, conn, "csv", ["1", value])
    if fraction:
        with pytest.raises(ContractViolation, match="is not a whole number"):
            load_file(conn, with_type("INTEGER"), f)
    else:
        load_file(conn, with_type("INTEGER"), f)


@given(st.decimals(allow_nan=False, allow_infinity=False, min_value=-(10**12), max_value=10**12, places=3))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_decimal_loads_exactly_when_whole_and_is_rejected_otherwise(tmp_path, value):
    with duckdb.connect(":memory:") as conn:
        f = qty_file(tmp_path, conn, "jsonl", [str(value)])
        if value == value.to_integral_value():
            load_file(conn, with_type("BIGINT"), f)
            assert rows(conn, "SELECT qty FROM raw.things") == [(int(value),)]
        else:
            with pytest.raises(ContractViolation) as info:
                load_file(conn, with_type("BIGINT"), f)
            assert (info.value.check, info.value.line) == ("integral", 1)


def test_a_fraction_after_a_quoted_line_break_has_duckdbs_line(tmp_path, conn):
    data = HEADER.replace("\n", ",qty\n") + '1,"two\nlines",1,2026-11-01,1\n2,b,1,2026-11-01,2.5\n'
    with pytest.raises(ContractViolation) as info:
        load_file(conn, with_type("BIGINT"), write(tmp_path, "shop/2026-11-01/things.csv", data))
    assert info.value.line == 3  # DuckDB counts records, as in its other CSV errors


# --- reader errors keep their cause and name the landing key, not the local path ----------------------------


@pytest.mark.parametrize(
    ("data", "check", "line", "message"),
    [
        (HEADER + "1,a,1,2026-11-01\n2,b,1\n", "columns", 3, "a row has 3 fields where the header has 4"),
        (HEADER + "1,a,1,2026-11-01\n2,b,1,2026-11-01,x\n", "columns", 3, "a row has 5 fields where the header has 4"),
        (HEADER + '1,"a,1,2026-11-01\n', "readable", 2, "a quoted value is not closed (unterminated quote)"),
    ],
)
def test_structural_csv_errors_keep_their_cause(tmp_path, conn, data, check, line, message):
    v = violation(tmp_path, conn, "shop/2026-11-01/things.csv", data)
    assert (v.check, v.line, v.message) == (check, line, message)
    assert str(tmp_path) not in str(v.reason())


def test_malformed_json_and_a_broken_parquet_name_the_landing_key(tmp_path, conn):
    v = violation(tmp_path, conn, "shop/2026-11-01/things.jsonl", '{"thing_id": 1, "code": "a"}\n{"thing_id": 2,\n')
    assert v.check == "readable" and v.message.startswith("malformed JSON: ") and v.line
    v = violation(tmp_path, conn, "shop/2026-11-02/things.parquet", "not a parquet file")
    assert v.check == "readable" and "'shop/2026-11-02/things.parquet'" in v.message
    assert str(tmp_path) not in v.message


def test_explain_replaces_the_local_path_and_drops_duckdbs_advice(tmp_path):
    path = tmp_path / "download-123" / "things.csv"
    exc = duckdb.InvalidInputException(
        f"Invalid Input Error: CSV Error on Line: 7\nOriginal Line: 1,secret@example.com\nExpected Number of"
        f" Columns: 4 Found: 2\nPossible fixes:\n* Enable null padding\n\n  file = {path}\n  delimiter = ,"
    )
    v = explain(exc, "shop/2026-11-01/things.csv", path)
    assert (v.check, v.line, v.expected, v.found) == ("columns", 7, "4 fields", "2 fields")
    assert "secret@example.com" not in str(v.reason()) and str(tmp_path) not in str(v.reason())


def test_parquet_floats_are_checked_and_other_types_left_to_the_cast(tmp_path, conn):
    with pytest.raises(ContractViolation) as info:
        load_file(conn, with_type("BIGINT"), qty_file(tmp_path, conn, "parquet", ["1::FLOAT", "2.5::FLOAT"]))
    assert (info.value.check, info.value.line, info.value.found) == ("integral", 2, "2.5")
    load_file(conn, with_type("INTEGER"), qty_file(tmp_path, conn, "parquet", ["7::BIGINT"], "2026-11-02"))
    assert rows(conn, "SELECT qty FROM raw.things") == [(7,)]
