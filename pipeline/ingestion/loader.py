"""Load landing files into raw tables with DuckDB's own readers (no Python row loops), under the contract.

Each file is one transaction: its earlier rows (matched on `_source_file`) are deleted, its rows inserted and
checked (required columns, castable values, primary key non-null and unique within the file), and only then
committed. A re-run is idempotent; a bad file, a crash or a SIGKILL mid-load leaves the table as it was.
DuckDB streams the file from disk; Python never holds its rows.
"""

from __future__ import annotations

import gzip
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from .contracts import LINEAGE_COLUMNS, SourceTable
from .landing import LandedObject, LandingKey


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


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


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


def reader_sql(path: Path, key: LandingKey, contract: SourceTable, types: dict[str, str] | None = None) -> str:
    """The DuckDB table function for one landing file; `types` (column -> type) pins column types.

    CSV: header row, the contract's delimiter, RFC 4180 quoting (a quoted field may hold newlines), UTF-8 with
    or without BOM. Pinned types make a bad value fail with its line number, and keep a VARCHAR column that
    looks numeric (a zip code) as text. JSON Lines: one object per line; pinned columns cast while reading.
    """
    source = quote_literal(str(path))
    struct = "{" + ", ".join(f"{quote_literal(c)}: {quote_literal(t)}" for c, t in (types or {}).items()) + "}"
    if key.fmt == "csv":
        pinned = f", types = {struct}" if types else ""
        return (
            f"read_csv({source}, header = true, delim = {quote_literal(contract.delimiter)}, quote = '\"',"
            f" escape = '\"', auto_detect = true{pinned})"
        )
    if key.fmt == "jsonl":
        pinned = f", columns = {struct}" if types else ""
        return f"read_json({source}, format = 'newline_delimited'{pinned})"
    if key.fmt == "parquet":
        return f"read_parquet({source})"
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
        raise explain(exc, obj_key) from exc
    return {name: type_ for name, type_, *_ in rows}


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
_JSON_LINE = re.compile(r"in line (\d+): (.*)")
_CAST = re.compile(r"Could not convert string '(.*?)' to (\w+)")


def explain(exc: duckdb.Error, key: str) -> ContractViolation:
    """Turn a DuckDB reader / cast error into a violation with line, column, expected and found."""
    text = str(exc)
    first = text.splitlines()[0] if text else type(exc).__name__
    line = _CSV_LINE.search(text) or _JSON_LINE.search(text)
    line_no = int(line.group(1)) if line else None
    if "not utf-8 encoded" in text or "Invalid unicode" in text:
        return ContractViolation(key, "encoding", "file is not UTF-8 encoded", line=line_no, expected="UTF-8")
    if "GZIP" in text.upper() and ("end of" in text or "corrupt" in text.lower()):
        return ContractViolation(key, "readable", f"gzip stream is broken: {first}")
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
    if line and isinstance(exc, duckdb.InvalidInputException) and "JSON" in text:
        return ContractViolation(key, "castable", line.group(2).strip(), line=line_no)
    cast = _CAST.search(text)
    if cast:
        return ContractViolation(key, "castable", first, expected=cast.group(2), found=cast.group(1))
    return ContractViolation(key, "readable", first, line=line_no)


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
    f: FileToLoad, path: Path, contract: SourceTable, present: list[str], extra: dict[str, str], loaded_at: datetime
) -> str:
    """INSERT … SELECT from the file's reader: contract columns cast to their types, optional columns the file
    lacks as NULL, `load`-policy extra columns, then the lineage columns."""
    key = f.key
    pinned = {c: contract.columns[c] for c in present} | (extra if key.fmt == "jsonl" else {})
    reader = reader_sql(path, key, contract, types=None if key.fmt == "parquet" else pinned)
    columns: dict[str, str] = {c: f"CAST({quote_ident(c)} AS {contract.columns[c]})" for c in present}
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
        extra_names = check_columns(found, contract, key) if found is not None else []
        extra = {c: _storable(found[c]) for c in extra_names} if contract.extra_columns == "load" else {}
        present = list(contract.columns) if found is None else [c for c in contract.columns if c in found]
        ensure_table(conn, contract, extra)
        # Raw tables promise no row order (staging picks versions by timestamps), and keeping insertion order
        # costs ~15% of a large load plus a slower checkpoint.
        conn.execute("SET preserve_insertion_order = false")
        conn.execute("BEGIN TRANSACTION")
        try:
            replaced = conn.execute(f"DELETE FROM {contract.qualified_name} WHERE _source_file = ?", [key]).fetchone()[
                0
            ]
            try:
                loaded = conn.execute(insert_sql(f, path, contract, present, extra, loaded_at)).fetchone()[0]
            except duckdb.Error as exc:
                raise explain(exc, key) from exc
            check_primary_key(conn, contract, key)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        finally:
            conn.execute("RESET preserve_insertion_order")
    return FileLoad(
        key=key,
        etag=f.obj.etag,
        bytes=f.obj.size,
        rows_loaded=loaded,
        rows_replaced=replaced,
        extra_columns=tuple(extra_names),
        seconds=(datetime.now(UTC) - started).total_seconds(),
    )


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
