"""Typed view of contracts.yaml: which tables each source system delivers and what their columns are.

The whole file is checked when the definitions load, and every problem is reported at once with its line: unknown
keys, names that cannot be a landing key or a table, column types (by DuckDB itself, so exactly the types the loader
can cast to), primary keys, policies. A typo such as `BOOLEN` used to fail only when a file arrived, after three
retries, pointing at nothing.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from ..core.config_files import MarkedDict, MarkedList, Problems, load_marked
from ..core.settings import CONTRACTS_PATH

EXTRA_COLUMN_POLICIES = ("ignore", "load", "reject")
SYSTEM_KEYS = ("description", "owner", "tables")
TABLE_KEYS = ("file", "description", "primary_key", "columns", "extra_columns", "delimiter")
COLUMN_KEYS = ("type", "required")
#: A system and a file name are parts of a landing key <system>/<YYYY-MM-DD>/<file>.<ext> (landing.LandingKey).
LANDING_NAME = re.compile(r"[A-Za-z0-9_\-]+")
SYSTEM_NAME = (LANDING_NAME, "letters, digits, _ or - (it is a folder)")
#: A table is raw.<table> in SQL and ["raw", <table>] as an asset key.
TABLE_NAME = (re.compile(r"[A-Za-z_][A-Za-z0-9_]*"), "a letter or _, then letters, digits or _")
WHAT_TO_DO = "fix the file and reload the code location; the README's ingestion section describes each key"

#: The asset check every raw table carries: each landed file met its contract.
CONTRACT_CHECK = "landing_contract"

#: Columns the loader adds to every raw table, after the contract's own.
LINEAGE_COLUMNS = {"_source_file": "VARCHAR", "_landing_date": "DATE", "_loaded_at": "TIMESTAMP"}


@dataclass(frozen=True)
class SourceTable:
    system: str
    table: str
    file: str
    description: str
    primary_key: tuple[str, ...]
    columns: dict[str, str]
    extra_columns: str = "ignore"
    #: Columns a file may lack (loaded as NULL); every other declared column is required.
    optional: frozenset[str] = frozenset()
    delimiter: str = ","
    #: who answers for this system's files (an email or `team:name`); failure alerts are routed by it
    owner: str | None = None

    @property
    def required_columns(self) -> list[str]:
        return [c for c in self.columns if c not in self.optional]

    @property
    def asset_key(self) -> list[str]:
        return ["raw", self.table]

    @property
    def qualified_name(self) -> str:
        return f"raw.{self.table}"

    @property
    def landing_prefix(self) -> str:
        """Keys of this system start here; the table's own files are picked by file name."""
        return f"{self.system}/"

    def all_columns(self) -> dict[str, str]:
        return {**self.columns, **LINEAGE_COLUMNS}


def load_contracts(path: Path = CONTRACTS_PATH) -> list[SourceTable]:
    """Every table of the file, or ConfigFileError listing each problem as file:line."""
    problems = Problems(path)
    document = problems.mapping(load_marked(path), 1, "the file")
    found: list[tuple[SourceTable, dict[str, int]]] = []
    if document is not None:
        problems.keys(document, ("systems",), "the file")
        systems = problems.mapping(document.get("systems"), document.line_of("systems"), "`systems`")
        for system in systems or {}:
            found += _system(problems, systems, system)
    _check_unique(problems, found)
    _check_types(problems, found)
    problems.raise_if_any(WHAT_TO_DO)
    return [table for table, _ in found]


def _system(problems: Problems, systems: MarkedDict, key: Any) -> list[tuple[SourceTable, dict[str, int]]]:
    system = str(key)
    where = f"system {system}"
    spec, line = problems.entry(systems, key, where, SYSTEM_NAME, SYSTEM_KEYS)
    if spec is None:
        return []
    problems.text(spec, "description", where)
    owner = problems.text(spec, "owner", where)
    tables = problems.mapping(spec.get("tables"), spec.line_of("tables", line), f"{where}: `tables`")
    if tables is not None and not tables:
        problems.add(tables.line, f"{where}: `tables` declares no table")
    found = []
    for table in tables or {}:
        parsed = _table(problems, tables, system, table, owner)
        if parsed is not None:
            found.append(parsed)
    return found


def _table(
    problems: Problems, tables: MarkedDict, system: str, key: Any, owner: str | None
) -> tuple[SourceTable, dict[str, int]] | None:
    table = str(key)
    where = f"{system}.{table}"
    spec, line = problems.entry(tables, key, where, TABLE_NAME, TABLE_KEYS)
    if spec is None:
        return None
    file = problems.text(spec, "file", where) or table
    if not LANDING_NAME.fullmatch(file):
        problems.add(spec.line_of("file"), f"{where}: `file` {file!r} must be letters, digits, _ or - (a file stem)")
    columns, optional, type_lines = _columns(problems, spec, where, line)
    policy = spec.get("extra_columns", "ignore")
    if policy not in EXTRA_COLUMN_POLICIES:
        problems.add(
            spec.line_of("extra_columns"),
            f"{where}: `extra_columns` is {policy!r}; expected one of {', '.join(EXTRA_COLUMN_POLICIES)}",
        )
    delimiter = spec.get("delimiter", ",")
    if not isinstance(delimiter, str) or not 1 <= len(delimiter) <= 4 or any(c in delimiter for c in '"\r\n'):
        problems.add(
            spec.line_of("delimiter"),
            f"{where}: `delimiter` {delimiter!r} must be 1 to 4 characters, without quotes or line breaks",
        )
    contract = SourceTable(
        system=system,
        table=table,
        file=file,
        description=problems.text(spec, "description", where) or "",
        primary_key=_primary_key(problems, spec, where, line, columns, optional),
        columns=columns,
        extra_columns=str(policy),
        optional=frozenset(optional),
        delimiter=str(delimiter),
        owner=owner,
    )
    return contract, type_lines | {"": line}


def _columns(
    problems: Problems, spec: MarkedDict, where: str, table_line: int
) -> tuple[dict[str, str], set[str], dict[str, int]]:
    """`name: TYPE` (required) or `name: {type: TYPE, required: false}`; with the line of each type."""
    raw = problems.mapping(spec.get("columns"), spec.line_of("columns", table_line), f"{where}: `columns`")
    if raw is None:
        return {}, set(), {}
    if not raw:
        problems.add(raw.line, f"{where}: `columns` declares no column")
    columns: dict[str, str] = {}
    optional: set[str] = set()
    lines: dict[str, int] = {}
    for name, value in raw.items():
        column, line = str(name), raw.line_of(name)
        if column in LINEAGE_COLUMNS:
            problems.add(
                line, f"{where}: column {column} is added by the loader itself; give the file's one another name"
            )
        if isinstance(value, MarkedDict):
            problems.keys(value, COLUMN_KEYS, f"{where}.{column}")
            required = value.get("required", True)
            if not isinstance(required, bool):
                problems.add(value.line_of("required"), f"{where}.{column}: `required` must be true or false")
            elif not required:
                optional.add(column)
            value, line = value.get("type"), value.line_of("type")
        if not isinstance(value, str) or not value.strip():
            problems.add(line, f"{where}.{column}: the type must be a DuckDB type such as BIGINT, not {_shown(value)}")
            continue
        columns[column], lines[column] = value.strip(), line
    return columns, optional, lines


def _primary_key(
    problems: Problems, spec: MarkedDict, where: str, table_line: int, columns: Mapping[str, str], optional: set[str]
) -> tuple[str, ...]:
    """A list of declared, required columns (one name alone is a one-column key)."""
    value = spec.get("primary_key")
    line = spec.line_of("primary_key", table_line)
    if isinstance(value, str):
        value = MarkedList([value])
        value.line, value.item_lines = line, [line]
    if not isinstance(value, MarkedList) or not value:
        problems.add(line, f"{where}: `primary_key` must list the key's columns, e.g. [order_id]")
        return ()
    key: list[str] = []
    for item, item_line in zip(value, value.item_lines, strict=True):
        if item in key:
            problems.add(item_line, f"{where}: `primary_key` names {item!r} twice")
        elif item not in columns:
            problems.add(item_line, f"{where}: primary key column {item!r} is not among the declared columns")
        elif item in optional:
            problems.add(item_line, f"{where}: primary key column {item!r} cannot be `required: false`")
        key.append(str(item))
    return tuple(key)


def _check_unique(problems: Problems, found: list[tuple[SourceTable, dict[str, int]]]) -> None:
    """A raw table name once in the whole file; a file stem once per system (two tables cannot load one file)."""
    tables: dict[str, SourceTable] = {}
    files: dict[tuple[str, str], SourceTable] = {}
    for table, lines in found:
        if table.table in tables:
            problems.add(lines[""], f"raw table {table.table} is declared by system {tables[table.table].system} too")
        if (table.system, table.file) in files:
            other = files[(table.system, table.file)].table
            problems.add(lines[""], f"{table.system}.{table.table} reads file {table.file!r}, as {other} does")
        tables.setdefault(table.table, table)
        files.setdefault((table.system, table.file), table)


def duckdb_types(conn: duckdb.DuckDBPyConnection, types: Mapping[str, str]) -> dict[str, str]:
    """DuckDB's name for each type (`INT8` -> BIGINT, `decimal(10, 2)` -> DECIMAL(10,2)); raises duckdb.Error."""
    if not types:
        return {}
    select = ", ".join(f'CAST(NULL AS {type_}) AS "{i}"' for i, type_ in enumerate(types.values()))
    described = conn.execute(f"DESCRIBE SELECT {select}").fetchall()
    if len(described) != len(types):  # a "type" with a comma and more SQL in it
        raise duckdb.InvalidInputException(f"{', '.join(types.values())} do not read as {len(types)} type(s)")
    return {name: row[1] for name, row in zip(types, described, strict=True)}


def _check_types(problems: Problems, found: list[tuple[SourceTable, dict[str, int]]]) -> None:
    """Each column type as DuckDB itself reads it, in one in-memory query (one per type only when one fails)."""
    declared = {(t.table, c): type_ for t, _ in found for c, type_ in t.columns.items()}
    with duckdb.connect(config={"threads": 1}) as conn:
        try:
            duckdb_types(conn, {f"{t}.{c}": type_ for (t, c), type_ in declared.items()})
            return
        except duckdb.Error:
            pass
        for table, lines in found:
            for column, type_ in table.columns.items():
                try:
                    duckdb_types(conn, {column: type_})
                except duckdb.Error as exc:
                    hint = _type_hint(conn, type_)
                    if type_.count("(") != type_.count(")"):
                        hint = "; inside {...} a comma ends the value: quote the type, {type: 'DECIMAL(10,2)'}"
                    problems.add(
                        lines[column],
                        f"{table.system}.{table.table}.{column}: {type_!r} is not a DuckDB type"
                        f" ({_first_line(exc)}{hint})",
                    )


def _type_hint(conn: duckdb.DuckDBPyConnection, type_: str) -> str:
    """The closest of DuckDB's own type names; DuckDB's own suggestion (`BOOLEN` -> JSON) is often far off."""
    names = [row[0] for row in conn.execute("SELECT DISTINCT upper(type_name) FROM duckdb_types()").fetchall()]
    close = difflib.get_close_matches(type_.upper().split("(")[0].strip(), names, n=1, cutoff=0.7)
    return f"; did you mean {close[0]}?" if close else ""


def _first_line(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text.removeprefix("Catalog Error: ").removeprefix("Parser Error: ")


def _shown(value: object) -> str:
    return "nothing" if value is None else f"{value!r}"
