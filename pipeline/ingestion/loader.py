"""Load landing files into raw tables with DuckDB's own readers (no Python row loops), under the contract.

Each file is one transaction: its earlier rows (matched on `_source_file`) are deleted, its rows inserted and
checked (required columns, castable values, whole numbers in integer columns, primary key non-null and unique
within the file), and only then committed. A re-run is idempotent; a bad file, a crash or a SIGKILL mid-load leaves
the table as it was. DuckDB streams the file from disk; Python never holds its rows.

A rejected file's reason keeps DuckDB's cause (the line, expected vs found columns or value) and names the file by
its landing key, never by the local or temporary path DuckDB read it from.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path

import duckdb

from ..core.objectstore import LandedObject
from ..core.sql import quote_ident, quote_literal
from .contracts import LINEAGE_COLUMNS, SourceTable, duckdb_types
from .landing import LandingKey

#: DuckDB's integer types (as DuckDB names them). Its casts round a fraction into them ('100002.5' -> 100003,
#: 2.5 -> 2), so a value with a fraction is caught before the cast.
INTEGER_TYPES = frozenset(
    {"TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"}
    | {"UHUGEINT", "BIGNUM"}
)
#: Raised from inside the load query (DuckDB's error()) for a value with a fraction; see integral_cast().
_NON_INTEGRAL = "pipeline.non_integral:"
#: Raised from inside a CSV load that read an integer column as DOUBLE (the fast path) for a value too large for a
#: DOUBLE to hold exactly: the load is run again, that file's integer columns read as text.
_BEYOND_DOUBLE = "pipeline.beyond_double:"
#: 2**53: below it every integer is exactly a DOUBLE.
_EXACT_DOUBLE_LIMIT = 9007199254740992


@dataclass(frozen=True)
class FileToLoad:
    obj: LandedObject
    path: Path
    #: The key rows are recorded under (`_source_file`): the landing key, even when the file is read from
    #: `processed/` during a backfill, so reloading a file always replaces its own rows.
    source_key: str = ""

    @property
    def canonical_key(self) -> str:
        return self.source_key or self.obj.key

    @property
    def key(self) -> LandingKey:
        parsed = LandingKey.parse(self.canonical_key)
        if parsed is None:
            raise ValueError(f"{self.canonical_key} does not follow <system>/<YYYY-MM-DD>/<name>.<ext>")
        return parsed


@dataclass(frozen=True)
class FileLoad:
    key: str
    etag: str
    bytes: int
    rows_loaded: int
    rows_replaced: int
    extra_columns: tuple[str, ...]
    seconds: float


@dataclass
class ContractViolation(Exception):
    """A file that breaks its contract: what failed, where (line / column when known), expected vs found."""

    key: str
    check: str
    message: str
    line: int | None = None
    column: str | None = None
    expected: str | None = None
    found: str | None = None
    details: dict = field(default_factory=dict)

    def __str__(self) -> str:
        where = ", ".join(
            p for p in (f"line {self.line}" if self.line else "", f"column {self.column}" if self.column else "") if p
        )
        return f"{self.key}: {self.message}" + (f" ({where})" if where else "")

    def reason(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v not in (None, {}, "")}


@contextmanager
def readable_path(path: Path, key: LandingKey, landing_key: str) -> Iterator[Path]:
    """DuckDB reads gzip CSV/JSON itself; a gzip-wrapped Parquet file is unwrapped to disk first (streamed)."""
    if not (key.fmt == "parquet" and key.compressed):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="landing-") as tmp:
        target = Path(tmp) / path.name.removesuffix(".gz")
        try:
            with gzip.open(path, "rb") as src, target.open("wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)
        except (OSError, EOFError) as exc:
            raise ContractViolation(landing_key, "readable", f"gzip stream is broken: {exc}") from exc
        yield target


def reader_sql(
    path: Path, key: LandingKey, contract: SourceTable, types: dict[str, str] | None = None, options: str = ""
) -> str:
    """The DuckDB table function for one landing file; `types` (column -> type) pins column types.

    CSV: header row, the contract's delimiter, RFC 4180 quoting (a quoted field may hold newlines), UTF-8 with
    or without BOM. Pinned types make a bad value fail with its line number, and keep a VARCHAR column that
    looks numeric (a zip code) as text. JSON Lines: one object per line; pinned columns cast while reading.
    `options` are added to the reader's arguments (", name = value, ...").
    """
    source = quote_literal(str(path))
    struct = "{" + ", ".join(f"{quote_literal(c)}: {quote_literal(t)}" for c, t in (types or {}).items()) + "}"
    if key.fmt == "csv":
        pinned = f", types = {struct}" if types else ""
        return (
            f"read_csv({source}, header = true, delim = {quote_literal(contract.delimiter)}, quote = '\"',"
            f" escape = '\"', auto_detect = true{pinned}{options})"
        )
    if key.fmt == "jsonl":
        pinned = f", columns = {struct}" if types else ""
        return f"read_json({source}, format = 'newline_delimited'{pinned}{options})"
    if key.fmt == "parquet":
        return f"read_parquet({source}{options})"
    raise ValueError(f"{path.name}: unsupported format {key.fmt!r}")


def probe_columns(conn: duckdb.DuckDBPyConnection, path: Path, key: LandingKey, contract: SourceTable, obj_key: str):
    """The file's columns and their detected types (reads the header / a sample, not the file)."""
    if key.fmt == "jsonl" and _is_blank(path, key):
        return None  # JSON Lines with no lines: zero records, nothing to check
    if key.fmt == "csv" and _is_blank(path, key):
        raise ContractViolation(
            obj_key, "header", "file is empty: expected a header row", expected=", ".join(contract.columns)
        )
    try:
        rows = conn.execute(f"DESCRIBE SELECT * FROM {reader_sql(path, key, contract)}").fetchall()
    except duckdb.Error as exc:
        # CSV: DuckDB's sniffer reports a malformed sample only as "Error when sniffing file"; read it again
        # without the sniffer for the row and the reason.
        raise (structural_violation(conn, path, key, contract, obj_key) or explain(exc, obj_key, path)) from exc
    return {name: type_ for name, type_, *_ in rows}


def csv_header(path: Path, key: LandingKey, contract: SourceTable) -> list[str] | None:
    """The file's first record, as the header it is (None when it cannot be read that way: DuckDB then says why).

    DuckDB's sniffer picks the header from a sample and can take a malformed row for it; this reads just the
    first record with the contract's dialect.
    """
    opener = gzip.open if key.compressed else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:
            return next(csv.reader(handle, delimiter=contract.delimiter, quotechar='"', doublequote=True), None)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error, TypeError):  # TypeError: a multi-character delimiter
        return None


def structural_violation(
    conn: duckdb.DuckDBPyConnection, path: Path, key: LandingKey, contract: SourceTable, obj_key: str
) -> ContractViolation | None:
    """A CSV's first structural error (a row with more or fewer fields than the header, an unterminated quote),
    found by reading it as text under its own header with the sniffer off; None when there is none."""
    header = csv_header(path, key, contract) if key.fmt == "csv" else None
    if not header:
        return None
    columns = "{" + ", ".join(f"{quote_literal(c)}: 'VARCHAR'" for c in header) + "}"
    options = f", header = true, delim = {quote_literal(contract.delimiter)}, quote = '\"', escape = '\"'"
    try:
        conn.execute(
            f"SELECT count(*) FROM read_csv({quote_literal(str(path))}{options}, auto_detect = false,"
            f" columns = {columns})"
        ).fetchone()
    except duckdb.Error as exc:
        return explain(exc, obj_key, path)
    return None


def check_columns(found: dict[str, str], contract: SourceTable, key: str) -> list[str]:
    """Required columns present; returns the extra ones (and rejects them when the policy says so)."""

    def violation(check: str, message: str, columns: list[str]) -> ContractViolation:
        return ContractViolation(
            key, check, message, column=columns[0], expected=", ".join(contract.columns), found=", ".join(found)
        )

    missing = [c for c in contract.required_columns if c not in found]
    if missing:
        hint = ""
        only = next(iter(found)) if len(found) == 1 else ""
        if any(d in only for d in ";\t|"):
            hint = f" (the header is one column {only!r}: is the file delimited by something else than"
            hint += f" {contract.delimiter!r}?)"
        raise violation("required_columns", f"missing required column(s) {', '.join(missing)}{hint}", missing)
    extra = [c for c in found if c not in contract.columns and c not in LINEAGE_COLUMNS]
    if extra and contract.extra_columns == "reject":
        raise violation("extra_columns", f"unexpected column(s) {', '.join(extra)} (extra_columns: reject)", extra)
    return extra


_CSV_LINE = re.compile(r"CSV Error on Line: (\d+)")
_CSV_CONVERT = re.compile(r'converting column "([^"]+)"\. Could not convert string "(.*?)" to \'([^\']+)\'')
_COLUMN_COUNT = re.compile(r"Expected Number of Columns: (\d+) Found: (\d+)")
_JSON_MALFORMED = re.compile(r"Malformed JSON in file .*?, at byte (\d+) in line (\d+): (.*)")
_JSON_LINE = re.compile(r"in line (\d+): (.*)")
_CAST = re.compile(r"Could not convert string '(.*?)' to (\w+)")
#: DuckDB's error classes, in front of its messages
_ERROR_PREFIX = re.compile(r"^(?:[A-Z][a-z]+ )+Error: ")


def explain(exc: duckdb.Error, key: str, path: Path | None = None) -> ContractViolation:
    """Turn a DuckDB reader / cast error into a violation with line, column, expected and found.

    DuckDB names the file by the path it read (a local folder, S3's temporary download): the message names it
    by its landing key instead. Its advice on reader options and the offending row's text are left out: the
    first would not apply to a contract, the second may hold personal data.
    """
    text = str(exc).replace(str(path), key) if path is not None else str(exc)
    first = _ERROR_PREFIX.sub("", text.splitlines()[0]) if text else type(exc).__name__
    line = _CSV_LINE.search(text) or _JSON_LINE.search(text)
    line_no = int(line.group(1)) if line else None
    if "not utf-8 encoded" in text or "Invalid unicode" in text:
        return ContractViolation(key, "encoding", "file is not UTF-8 encoded", line=line_no, expected="UTF-8")
    if "GZIP" in text.upper() and ("end of" in text or "corrupt" in text.lower()):
        return ContractViolation(key, "readable", f"gzip stream is broken: {first}")
    count = _COLUMN_COUNT.search(text)
    if count:
        expected, found = count.groups()
        return ContractViolation(
            key,
            "columns",
            f"a row has {found} fields where the header has {expected}",
            line=line_no,
            expected=f"{expected} fields",
            found=f"{found} fields",
        )
    if "unterminated quote" in text:
        return ContractViolation(key, "readable", "a quoted value is not closed (unterminated quote)", line=line_no)
    convert = _CSV_CONVERT.search(text)
    if convert:
        column, value, type_ = convert.groups()
        return ContractViolation(
            key,
            "castable",
            f"value {value!r} is not a valid {type_}",
            line=line_no,
            column=column,
            expected=type_,
            found=value,
        )
    malformed = _JSON_MALFORMED.search(text)
    if malformed:
        byte, json_line, detail = malformed.groups()
        message = f"malformed JSON: {detail.strip().rstrip('.')} (at byte {byte} of the line)"
        return ContractViolation(key, "readable", message, line=int(json_line))
    if line and isinstance(exc, duckdb.InvalidInputException) and "JSON" in text:
        return ContractViolation(key, "castable", line.group(2).strip(), line=line_no)
    cast = _CAST.search(text)
    if cast:
        return ContractViolation(key, "castable", first, expected=cast.group(2), found=cast.group(1))
    return ContractViolation(key, "readable", first, line=line_no)


def has_fraction(text: str) -> bool:
    """True for a number with a fractional part ('100002.5', '15e-1'); False for a whole one ('7.0', '1e3') and
    for anything that is not a decimal number (the cast reports that)."""
    try:
        number = Decimal(text.strip())
    except (InvalidOperation, ValueError):
        return False
    return number.is_finite() and number != number.to_integral_value()


def fraction_sql(column: str, source: str) -> str | None:
    """SQL true where `column` (read as `source`) holds a number with a fraction; None when `source` cannot hold
    one (integers; a boolean or a date is the cast's to refuse).

    Text: only a value holding '.' or '-' can hold a fraction (without a '.', only a negative exponent makes one:
    '15e-1'), so the common case costs two substring checks, about 10% of the load of a file of integers; such
    a value is read exactly as DECIMAL(38,18) (as DOUBLE past 20 integer digits). Floating-point and decimal
    sources (Parquet) compare with their truncation.
    """
    col = quote_ident(column)
    if source.split("(")[0] in ("FLOAT", "DOUBLE", "DECIMAL"):
        return f"{col} <> trunc({col})"
    if source != "VARCHAR":
        return None
    exact, near = f"TRY_CAST({col} AS DECIMAL(38,18))", f"TRY_CAST({col} AS DOUBLE)"
    return (
        f"(contains({col}, '.') OR contains({col}, '-'))"
        f" AND coalesce({exact} <> trunc({exact}), {near} <> trunc({near}), false)"
    )


def locate_fraction(
    conn: duckdb.DuckDBPyConnection,
    path: Path,
    key: LandingKey,
    contract: SourceTable,
    column: str,
    file_types: dict[str, str],
) -> int | None:
    """The line (CSV, JSON Lines) or row (Parquet) of the first value with a fraction in `column`; only run once
    the load has found one, so its cost is a rejected file's."""
    if key.fmt == "csv":
        # DuckDB counts CSV lines its own way (a quoted line break does not count): read the column as a
        # DECIMAL whose separator is ',' so that every value with a '.' is a rejected row with DuckDB's line
        # number, and take the first whose value has a fraction.
        types = {c: "VARCHAR" for c in file_types} | {column: "DECIMAL(38,0)"}
        options = (
            ", decimal_separator = ',', store_rejects = true, rejects_table = 'pipeline_rejects',"
            " rejects_scan = 'pipeline_rejects_scan', rejects_limit = 100000"
        )
        try:
            # fetchall, not fetchone: the rejects tables are written when the scan is finished
            conn.execute(f"SELECT count(COLUMNS(*)) FROM {reader_sql(path, key, contract, types, options)}").fetchall()
            rejected = conn.execute(
                "SELECT line, regexp_extract(error_message, 'string \"(.*)\" to', 1) FROM pipeline_rejects"
                " WHERE column_name = ? ORDER BY line",
                [column],
            ).fetchall()
        except duckdb.Error:
            return None
        finally:
            conn.execute("DROP TABLE IF EXISTS pipeline_rejects")
            conn.execute("DROP TABLE IF EXISTS pipeline_rejects_scan")
        return next((line for line, value in rejected if has_fraction(value)), None)
    if key.fmt == "jsonl":
        opener = gzip.open if key.compressed else open
        with opener(path, "rt", encoding="utf-8-sig") as handle:
            for number, text in enumerate(handle, 1):
                try:
                    record = json.loads(text, parse_float=Decimal) if text.strip() else None
                except ValueError:
                    continue
                value = record.get(column) if isinstance(record, dict) else None
                if isinstance(value, Decimal | str) and has_fraction(str(value)):
                    return number
        return None
    condition = fraction_sql(column, file_types.get(column, "VARCHAR"))
    source = reader_sql(path, key, contract, options=", file_row_number = true")
    row = conn.execute(f"SELECT min(file_row_number) + 1 FROM {source} WHERE {condition}").fetchone()
    return row[0] if row else None


def non_integral_violation(
    conn: duckdb.DuckDBPyConnection,
    exc: duckdb.Error,
    path: Path,
    f: FileToLoad,
    contract: SourceTable,
    file_types: dict[str, str],
) -> ContractViolation | None:
    """The violation for the value with a fraction that stopped the load (None for any other error)."""
    text = str(exc)
    if _NON_INTEGRAL not in text:
        return None
    column, _, value = text.split(_NON_INTEGRAL, 1)[1].partition("\n")
    value = value.splitlines()[0] if value else value
    type_ = contract.columns[column]
    return ContractViolation(
        f.canonical_key,
        "integral",
        f"value {value!r} is not a whole number, as {type_} column {column} requires (it would be rounded)",
        line=locate_fraction(conn, path, f.key, contract, column, file_types),
        column=column,
        expected=f"a whole number ({type_})",
        found=value,
    )


def integer_columns(conn: duckdb.DuckDBPyConnection, contract: SourceTable) -> frozenset[str]:
    """The contract's columns of an integer type, however the contract spells it (INT8, LONG, int)."""
    return frozenset(c for c, t in duckdb_types(conn, contract.columns).items() if t in INTEGER_TYPES)


def integral_cast(column: str, type_: str, source: str = "VARCHAR", *, read_as_double: bool = False) -> str:
    """SQL casting `column` (read as `source`) to the integer `type_`, raising (DuckDB's error()) on a value with
    a fraction instead of letting the cast round it; `non_integral_violation` turns that error into a rejection.

    `read_as_double`: the column is text in the file that the reader parsed as DOUBLE (see `insert_sql`); a value
    beyond 2**53 may have lost digits there, so it raises `_BEYOND_DOUBLE` and the load reads the file again as
    text."""
    has = fraction_sql(column, source)
    cast = f"CAST({quote_ident(column)} AS {type_})"
    if has is None:
        return cast
    fail = f"error(concat({quote_literal(_NON_INTEGRAL + column + chr(10))}, CAST({quote_ident(column)} AS VARCHAR)))"
    if not read_as_double:
        return f"CASE WHEN {has} THEN {fail} ELSE {cast} END"
    inexact = f"error({quote_literal(_BEYOND_DOUBLE + column)})"
    return (
        f"CASE WHEN abs({quote_ident(column)}) >= {_EXACT_DOUBLE_LIMIT} THEN {inexact}"
        f" WHEN {has} THEN {fail} ELSE {cast} END"
    )


def create_table_sql(contract: SourceTable) -> str:
    columns = ", ".join(f"{quote_ident(c)} {t}" for c, t in contract.all_columns().items())
    return f"CREATE TABLE IF NOT EXISTS {contract.qualified_name} ({columns})"


def ensure_table(conn: duckdb.DuckDBPyConnection, contract: SourceTable, extra: dict[str, str] | None = None) -> None:
    """Create the raw table, and add columns a newer contract (or a `load` extra column) brings: raw only grows."""
    conn.execute("CREATE SCHEMA IF NOT EXISTS raw")
    conn.execute(create_table_sql(contract))
    existing = {
        row[0]
        for row in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'raw' AND table_name = ?",
            [contract.table],
        ).fetchall()
    }
    for column, type_ in {**contract.all_columns(), **(extra or {})}.items():
        if column not in existing:
            conn.execute(f"ALTER TABLE {contract.qualified_name} ADD COLUMN {quote_ident(column)} {type_}")


def insert_sql(
    f: FileToLoad,
    path: Path,
    contract: SourceTable,
    present: list[str],
    extra: dict[str, str],
    loaded_at: datetime,
    integers: frozenset[str] = frozenset(),
    file_types: dict[str, str] | None = None,
    *,
    exact: bool = False,
) -> str:
    """INSERT … SELECT from the file's reader: contract columns cast to their types, optional columns the file
    lacks as NULL, `load`-policy extra columns, then the lineage columns.

    `integers`: contract columns of an integer type, which `integral_cast` rejects a value with a fraction in
    instead of letting the cast round it (DuckDB's readers round '100002.5' into a BIGINT). Parquet gives them as
    stored (`file_types`); JSON Lines as text; CSV as DOUBLE, which DuckDB's CSV reader parses about as fast as an
    integer (reading them as text and casting costs ~15% of a large load, bench P3), unless `exact`: then as
    text too, for a file whose integers go beyond 2**53 (`_BEYOND_DOUBLE`).
    """
    key = f.key
    as_double = key.fmt == "csv" and not exact
    pinned = {c: ("DOUBLE" if as_double else "VARCHAR") if c in integers else contract.columns[c] for c in present}
    pinned |= extra if key.fmt == "jsonl" else {}
    reader = reader_sql(path, key, contract, types=None if key.fmt == "parquet" else pinned)
    source = file_types if key.fmt == "parquet" else {c: pinned[c] for c in integers if c in pinned}
    columns: dict[str, str] = {
        c: integral_cast(c, contract.columns[c], (source or {}).get(c, "VARCHAR"), read_as_double=as_double)
        if c in integers
        else f"CAST({quote_ident(c)} AS {contract.columns[c]})"
        for c in present
    }
    columns |= {c: f"CAST(NULL AS {t})" for c, t in contract.columns.items() if c not in present}
    columns |= {c: f"CAST({quote_ident(c)} AS {t})" for c, t in extra.items()}
    columns |= {
        "_source_file": quote_literal(f.canonical_key),
        "_landing_date": f"DATE {quote_literal(key.day.isoformat())}",
        "_loaded_at": f"TIMESTAMP {quote_literal(loaded_at.strftime('%Y-%m-%d %H:%M:%S.%f'))}",
    }
    target = ", ".join(quote_ident(c) for c in columns)
    select = ", ".join(f"{expr} AS {quote_ident(c)}" for c, expr in columns.items())
    return f"INSERT INTO {contract.qualified_name} ({target}) SELECT {select} FROM {reader}"


def check_primary_key(conn: duckdb.DuckDBPyConnection, contract: SourceTable, key: str) -> None:
    """Primary key non-null and unique within the file, checked on the inserted rows before commit.

    One aggregate pass over the file's rows; the examples of repeated keys are looked up only when there are some.
    """
    pk = ", ".join(quote_ident(c) for c in contract.primary_key)
    any_null = " OR ".join(f"{quote_ident(c)} IS NULL" for c in contract.primary_key)
    scope = f"FROM {contract.qualified_name} WHERE _source_file = ?"
    nulls, repeats = conn.execute(
        f"SELECT count(*) FILTER (WHERE {any_null}), count(*) - count(DISTINCT ({pk})) {scope}", [key]
    ).fetchone()
    if nulls:
        raise ContractViolation(
            key,
            "primary_key_not_null",
            f"{nulls} row(s) have no primary key ({pk})",
            column=contract.primary_key[0],
            expected="non-null",
            found="NULL",
        )
    if repeats:
        dupes = conn.execute(
            f"SELECT {pk}, count(*) AS n {scope} GROUP BY ALL HAVING count(*) > 1 ORDER BY n DESC LIMIT 5", [key]
        ).fetchall()
        examples = "; ".join(f"{row[:-1] if len(row) > 2 else row[0]!r} x{row[-1]}" for row in dupes)
        raise ContractViolation(
            key,
            "primary_key_unique",
            f"primary key ({pk}) repeats within the file: {examples}",
            column=contract.primary_key[0],
            expected="unique",
            found=examples,
        )


def load_file(
    conn: duckdb.DuckDBPyConnection, contract: SourceTable, f: FileToLoad, loaded_at: datetime | None = None
) -> FileLoad:
    """Replace the rows of one file in the contract's raw table, in one transaction, or raise ContractViolation."""
    started = datetime.now(UTC)
    loaded_at = loaded_at or started.replace(tzinfo=None)
    key = f.canonical_key
    with readable_path(f.path, f.key, key) as path:
        found = probe_columns(conn, path, f.key, contract, key)
        try:
            extra_names = check_columns(found, contract, key) if found is not None else []
        except ContractViolation as violation:
            # The sniffer may have taken a malformed row for the header: the row's own error says more.
            raise (structural_violation(conn, path, f.key, contract, key) or violation) from None
        extra = {c: _storable(found[c]) for c in extra_names} if contract.extra_columns == "load" else {}
        present = list(contract.columns) if found is None else [c for c in contract.columns if c in found]
        integers = integer_columns(conn, contract)
        ensure_table(conn, contract, extra)
        # Raw tables promise no row order (staging picks versions by timestamps), and keeping insertion order
        # costs ~15% of a large load plus a slower checkpoint.
        conn.execute("SET preserve_insertion_order = false")
        try:
            for exact in (False, True):
                sql = insert_sql(f, path, contract, present, extra, loaded_at, integers, found or {}, exact=exact)
                failed, replaced, loaded = _replace_rows(conn, contract, key, sql)
                if failed is None or _BEYOND_DOUBLE not in str(failed):
                    break
        finally:
            conn.execute("RESET preserve_insertion_order")
        if failed is not None:
            # Diagnosed after the rollback: finding the line reads the file again, outside the transaction.
            raise load_violation(conn, failed, path, f, contract, present, found or {}) from failed
    return FileLoad(
        key=key,
        etag=f.obj.etag,
        bytes=f.obj.size,
        rows_loaded=loaded,
        rows_replaced=replaced,
        extra_columns=tuple(extra_names),
        seconds=(datetime.now(UTC) - started).total_seconds(),
    )


def _replace_rows(
    conn: duckdb.DuckDBPyConnection, contract: SourceTable, key: str, sql: str
) -> tuple[duckdb.Error | None, int, int]:
    """One transaction: delete the file's earlier rows, insert its rows (`sql`), check the primary key, commit.
    Returns the load query's error (rolled back) or None, and the rows replaced and loaded."""
    conn.execute("BEGIN TRANSACTION")
    try:
        replaced = conn.execute(f"DELETE FROM {contract.qualified_name} WHERE _source_file = ?", [key]).fetchone()[0]
        try:
            loaded = conn.execute(sql).fetchone()[0]
        except duckdb.Error as exc:
            conn.execute("ROLLBACK")
            return exc, 0, 0
        check_primary_key(conn, contract, key)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return None, replaced, loaded


def load_violation(
    conn: duckdb.DuckDBPyConnection,
    exc: duckdb.Error,
    path: Path,
    f: FileToLoad,
    contract: SourceTable,
    present: list[str],
    file_types: dict[str, str],
) -> ContractViolation:
    """Why the load query failed, with the line where DuckDB's reader can tell it.

    Integer columns of CSV and JSON are read as text and cast in the query, where a bad value has no line
    number; reading the file again with every column pinned to its contract type lets DuckDB's reader fail on
    it, with its line.
    """
    violation = non_integral_violation(conn, exc, path, f, contract, file_types)
    if violation is not None:
        return violation
    if f.key.fmt != "parquet":
        strict = reader_sql(path, f.key, contract, types={c: contract.columns[c] for c in present})
        try:
            # count(COLUMNS(*)): every column is parsed (a bare count(*) would skip them)
            conn.execute(f"SELECT count(COLUMNS(*)) FROM {strict}").fetchone()
        except duckdb.Error as reread:
            return explain(reread, f.canonical_key, path)
    return explain(exc, f.canonical_key, path)


def table_rows(conn: duckdb.DuckDBPyConnection, contract: SourceTable) -> int:
    return conn.execute(f"SELECT count(*) FROM {contract.qualified_name}").fetchone()[0]


def _storable(duckdb_type: str) -> str:
    return "VARCHAR" if duckdb_type.upper() in ("JSON", "NULL") else duckdb_type


def _is_blank(path: Path, key: LandingKey) -> bool:
    """True when the file holds no bytes (after gzip), without reading more than a few bytes."""
    opener = gzip.open if key.compressed else open
    try:
        with opener(path, "rb") as handle:
            return not handle.read(4096).strip(b"\xef\xbb\xbf \r\n\t")
    except (OSError, EOFError):
        return False  # a broken gzip stream is reported by the reader with its own message
