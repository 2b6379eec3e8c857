"""Request bodies shaped in the warehouse: SQL expressions that turn a model row into a record's JSON.

The plan builds every batch's body in one DuckDB statement (`json_object` per record, `string_agg` per batch), so
shaping 100,000 records costs DuckDB's time rather than a Python loop per value, and what is written to the outbox
is the exact text that goes on the wire. A destination says how one record looks (`record_sql`) and how a batch
wraps its records (`batch_sql`); the formatting rules for values live here, once.
"""

from __future__ import annotations

import duckdb

from ..core.sql import quote_ident, quote_literal

#: alias of the model relation in the plan query
ROW = "m"


def column_types(conn: duckdb.DuckDBPyConnection, relation: str, columns: list[str]) -> dict[str, str]:
    """DuckDB type of each of `columns` in `relation` (e.g. DECIMAL(18,2), TIMESTAMP, BOOLEAN)."""
    select = ", ".join(quote_ident(c) for c in columns)
    return {name: type_ for name, type_, *_ in conn.execute(f"DESCRIBE SELECT {select} FROM {relation}").fetchall()}


def column(name: str) -> str:
    return f"{ROW}.{quote_ident(name)}"


def _timestamp_text(expr: str, type_: str) -> str:
    if type_.startswith("TIMESTAMP WITH TIME ZONE"):
        return f"strftime(timezone('UTC', {expr}), '%Y-%m-%dT%H:%M:%S') || '+00:00'"
    return f"strftime({expr}, '%Y-%m-%dT%H:%M:%S')"


def property_text(name: str, type_: str) -> str:
    """A column as a HubSpot property value: always a string, '' for NULL (which clears the property); booleans
    `true`/`false`, timestamps ISO 8601 to the second, decimals with their scale (`12.50`), the rest as text."""
    expr = column(name)
    if type_ == "BOOLEAN":
        text = f"CASE WHEN {expr} THEN 'true' ELSE 'false' END"
    elif type_.startswith("TIMESTAMP"):
        text = _timestamp_text(expr, type_)
    else:
        text = f"CAST({expr} AS VARCHAR)"
    return f"coalesce({text}, '')"


def json_value(name: str, type_: str) -> str:
    """A column as a plain JSON value: numbers, booleans and strings as themselves, NULL as null, decimals as
    strings (no float rounding on the receiver's side) and timestamps as ISO 8601 strings."""
    expr = column(name)
    if type_.startswith("DECIMAL"):
        return f"CAST({expr} AS VARCHAR)"
    if type_.startswith("TIMESTAMP"):
        return _timestamp_text(expr, type_)
    if type_ in ("DATE", "TIME", "UUID", "INTERVAL") or type_.startswith(("HUGEINT", "UHUGEINT")):
        return f"CAST({expr} AS VARCHAR)"
    return expr


def json_object(pairs: dict[str, str]) -> str:
    """`json_object('k1', v1, ...)` from output name -> SQL expression."""
    return "json_object(" + ", ".join(f"{quote_literal(k)}, {v}" for k, v in pairs.items()) + ")"


def json_array(records: str, order_by: str) -> str:
    """Aggregate: the JSON text `[r1,r2,...]` of a group's record expressions, in `order_by` order."""
    return f"'[' || string_agg(CAST({records} AS VARCHAR), ',' ORDER BY {order_by}) || ']'"
