"""Load landing files into raw tables with DuckDB's own readers (no Python row loops).

A load replaces exactly the rows that came from the files it is given (matched on `_source_file`), in one
transaction: a re-run is idempotent, and a failure part-way leaves the table as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from .contracts import LINEAGE_COLUMNS, SourceTable
from .landing import LandedObject, LandingKey


@dataclass(frozen=True)
class FileToLoad:
    obj: LandedObject
    path: Path

    @property
    def key(self) -> LandingKey:
        parsed = self.obj.parsed
        if parsed is None:
            raise ValueError(f"{self.obj.key} does not follow <system>/<YYYY-MM-DD>/<name>.<ext>")
        return parsed


@dataclass(frozen=True)
class LoadResult:
    table: str
    files: int
    bytes: int
    rows_loaded: int
    rows_replaced: int
    table_rows: int


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def reader_sql(path: Path, key: LandingKey, contract: SourceTable) -> str:
    """The DuckDB table function that reads one landing file of this contract.

    CSV gets the contract's types up front (`types=`), so a column that looks numeric but is declared VARCHAR
    keeps its leading zeros and a missing column fails at bind time. JSON and Parquet carry their own types
    and are cast column by column in `insert_sql`. gzip is detected by DuckDB from the `.gz` suffix.
    """
    source = quote_literal(str(path))
    if key.fmt == "csv":
        types = ", ".join(f"{quote_literal(c)}: {quote_literal(t)}" for c, t in contract.columns.items())
        return f"read_csv({source}, header = true, types = {{{types}}})"
    if key.fmt == "jsonl":
        return f"read_json({source}, format = 'newline_delimited')"
    if key.fmt == "parquet":
        if key.compressed:
            raise ValueError(f"{path.name}: Parquet compresses internally; a gzip-wrapped Parquet file is not read")
        return f"read_parquet({source})"
    raise ValueError(f"{path.name}: unsupported format {key.fmt!r}")


def create_table_sql(contract: SourceTable) -> str:
    columns = ", ".join(f"{quote_ident(c)} {t}" for c, t in contract.all_columns().items())
    return f"CREATE TABLE IF NOT EXISTS {contract.qualified_name} ({columns})"


def insert_sql(path: Path, obj: LandedObject, key: LandingKey, contract: SourceTable, loaded_at: datetime) -> str:
    target = ", ".join(quote_ident(c) for c in contract.all_columns())
    casts = ", ".join(f"CAST({quote_ident(c)} AS {t}) AS {quote_ident(c)}" for c, t in contract.columns.items())
    lineage = (
        f"{quote_literal(obj.key)} AS _source_file, DATE {quote_literal(key.day.isoformat())} AS _landing_date,"
        f" TIMESTAMP {quote_literal(loaded_at.strftime('%Y-%m-%d %H:%M:%S.%f'))} AS _loaded_at"
    )
    return (
        f"INSERT INTO {contract.qualified_name} ({target}) "
        f"SELECT {casts}, {lineage} FROM {reader_sql(path, key, contract)}"
    )


def ensure_table(conn: duckdb.DuckDBPyConnection, contract: SourceTable) -> None:
    """Create the raw table, and add columns a newer contract declares (raw tables only ever grow)."""
    conn.execute("CREATE SCHEMA IF NOT EXISTS raw")
    conn.execute(create_table_sql(contract))
    existing = {
        row[0]
        for row in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'raw' AND table_name = ?",
            [contract.table],
        ).fetchall()
    }
    for column, type_ in contract.all_columns().items():
        if column not in existing:
            conn.execute(f"ALTER TABLE {contract.qualified_name} ADD COLUMN {quote_ident(column)} {type_}")


def load_files(
    conn: duckdb.DuckDBPyConnection,
    contract: SourceTable,
    files: Sequence[FileToLoad],
    loaded_at: datetime | None = None,
) -> LoadResult:
    """Replace the rows of `files` in the contract's raw table, all in one transaction."""
    loaded_at = loaded_at or datetime.now(UTC).replace(tzinfo=None)
    ensure_table(conn, contract)
    keys = [f.obj.key for f in files]
    rows_loaded = rows_replaced = 0
    conn.execute("BEGIN TRANSACTION")
    try:
        if keys:
            placeholders = ", ".join("?" for _ in keys)
            rows_replaced = conn.execute(
                f"DELETE FROM {contract.qualified_name} WHERE _source_file IN ({placeholders})", keys
            ).fetchone()[0]
        for f in files:
            rows_loaded += conn.execute(insert_sql(f.path, f.obj, f.key, contract, loaded_at)).fetchone()[0]
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    table_rows = conn.execute(f"SELECT count(*) FROM {contract.qualified_name}").fetchone()[0]
    return LoadResult(
        table=contract.qualified_name,
        files=len(files),
        bytes=sum(f.obj.size for f in files),
        rows_loaded=rows_loaded,
        rows_replaced=rows_replaced,
        table_rows=table_rows,
    )


__all__ = ["FileToLoad", "LoadResult", "LINEAGE_COLUMNS", "load_files", "ensure_table", "reader_sql"]
