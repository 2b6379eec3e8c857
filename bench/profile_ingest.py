"""Where P3's time goes: `load_file`'s phases timed one by one, next to the CTAS baseline and a few alternatives.

`python -m bench.profile_ingest [--rows N] [--repeat N]`. A diagnostic, not part of `make bench`: it replays the
steps of `pipeline.ingestion.loader.load_file` with the loader's own helpers (probe, ensure_table, delete, the
INSERT it builds, the primary-key checks, commit, close), so a change there shows up here; keep it in step with
`load_file` when that changes. The alternatives at the end are candidates for making the load cheaper.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from pipeline.core.objectstore import LandedObject
from pipeline.core.sql import quote_ident, quote_literal
from pipeline.ingestion.loader import (
    FileToLoad,
    check_columns,
    check_primary_key,
    ensure_table,
    insert_sql,
    integer_columns,
    probe_columns,
)

from .cases.ingest import FULL_ROWS, generate_orders_csv, orders_contract
from .harness import fmt_seconds, stopwatch

log = logging.getLogger("bench.profile_ingest")

Phases = dict[str, float]


def _time(phases: Phases, name: str, fn: Callable[[], object]) -> object:
    with stopwatch() as t:
        result = fn()
    phases[name] = t.seconds
    return result


def load_file_phases(
    db: Path, csv_path: Path, landing_key: str, *, one_pass_pk: bool = False, insertion_order: bool = True
) -> Phases:
    """load_file, step by step (see loader.py), each step timed; optionally with a candidate fix applied.

    `one_pass_pk`: the primary key checked by one aggregate (nulls and count(DISTINCT)) instead of the loader's two
    queries; the GROUP BY for examples would only run when it finds duplicates. `insertion_order=False`: the
    connection runs with `SET preserve_insertion_order = false` (raw tables promise no row order).
    """
    contract = orders_contract()
    f = FileToLoad(LandedObject(landing_key, csv_path.stat().st_size, datetime.now(UTC), "bench"), csv_path)
    phases: Phases = {}
    conn = _time(phases, "connect", lambda: duckdb.connect(str(db)))
    if not insertion_order:
        conn.execute("SET preserve_insertion_order = false")
    found = _time(phases, "probe (DESCRIBE read_csv)", lambda: probe_columns(conn, csv_path, f.key, contract, f.key))
    present = [c for c in contract.columns if c in found]
    check_columns(found, contract, landing_key)
    _time(phases, "ensure_table", lambda: ensure_table(conn, contract, {}))
    conn.execute("BEGIN TRANSACTION")
    _time(
        phases,
        "delete earlier rows",
        lambda: conn.execute(f"DELETE FROM {contract.qualified_name} WHERE _source_file = ?", [landing_key]),
    )
    integers = _time(phases, "integer columns (DESCRIBE types)", lambda: integer_columns(conn, contract))
    sql = insert_sql(f, csv_path, contract, present, {}, datetime.now(UTC).replace(tzinfo=None), integers, found)
    _time(
        phases, "insert (typed read_csv + whole-number check + casts + lineage)", lambda: conn.execute(sql).fetchone()
    )
    if one_pass_pk:
        pk = quote_ident(contract.primary_key[0])
        check = (
            f"SELECT count(*) FILTER ({pk} IS NULL), count({pk}) - count(DISTINCT {pk})"
            f" FROM {contract.qualified_name} WHERE _source_file = ?"
        )
        nulls, dupes = _time(phases, "primary-key check", lambda: conn.execute(check, [landing_key]).fetchone())
        assert nulls == dupes == 0, (nulls, dupes)
    else:
        _time(phases, "primary-key check", lambda: check_primary_key(conn, contract, landing_key))
    _time(phases, "commit", lambda: conn.execute("COMMIT"))
    _time(phases, "close (checkpoint)", conn.close)
    phases["TOTAL"] = sum(phases.values())
    return phases


def pk_check_parts(db: Path, landing_key: str) -> Phases:
    """The two primary-key queries of check_primary_key separately, and one-pass alternatives, on a loaded file."""
    contract = orders_contract()
    pk = quote_ident(contract.primary_key[0])
    scope = f"FROM {contract.qualified_name} WHERE _source_file = {quote_literal(landing_key)}"
    queries = {
        "pk: null count (as loader)": f"SELECT count(*) {scope} AND {pk} IS NULL",
        "pk: duplicates GROUP BY (as loader)": f"SELECT {pk}, count(*) AS n {scope} GROUP BY ALL HAVING count(*) > 1"
        " ORDER BY n DESC LIMIT 5",
        "alt pk: one pass count(DISTINCT)": f"SELECT count(*) FILTER ({pk} IS NULL), count({pk}) - count(DISTINCT {pk})"
        f" {scope}",
        "alt pk: duplicates GROUP BY, no _source_file filter": f"SELECT {pk}, count(*) AS n"
        f" FROM {contract.qualified_name} GROUP BY ALL HAVING count(*) > 1 ORDER BY n DESC LIMIT 5",
    }
    phases: Phases = {}
    with duckdb.connect(str(db)) as conn:
        for name, sql in queries.items():
            _time(phases, name, lambda sql=sql: conn.execute(sql).fetchall())
    return phases


def baseline_phases(db: Path, csv_path: Path) -> Phases:
    phases: Phases = {}
    conn = _time(phases, "connect", lambda: duckdb.connect(str(db)))
    _time(
        phases,
        "CTAS read_csv (auto-detect)",
        lambda: conn.execute(f"CREATE TABLE t AS SELECT * FROM read_csv({quote_literal(str(csv_path))})"),
    )
    _time(phases, "close (checkpoint)", conn.close)
    phases["TOTAL"] = sum(phases.values())
    return phases


def insert_variants(db: Path, csv_path: Path, landing_key: str) -> Phases:
    """The INSERT alone, with and without what load_file adds, each into a fresh raw.orders in one transaction."""
    contract = orders_contract()
    f = FileToLoad(LandedObject(landing_key, csv_path.stat().st_size, datetime.now(UTC), "bench"), csv_path)
    loaded_at = datetime.now(UTC).replace(tzinfo=None)
    with duckdb.connect() as types:
        integers = integer_columns(types, contract)
    full = insert_sql(f, csv_path, contract, list(contract.columns), {}, loaded_at, integers)
    unchecked = insert_sql(f, csv_path, contract, list(contract.columns), {}, loaded_at)
    source = quote_literal(str(csv_path))
    columns = ", ".join(quote_ident(c) for c in contract.columns)
    variants = {
        "insert as loader": full,
        "insert as loader, integer columns cast without the whole-number check": unchecked,
        "insert, no lineage columns, auto-detected types": f"INSERT INTO {contract.qualified_name} ({columns})"
        f" SELECT {columns} FROM read_csv({source})",
    }
    phases: Phases = {}
    for name, sql in variants.items():
        _remove(db)
        with duckdb.connect(str(db)) as conn:
            ensure_table(conn, contract, {})
            conn.execute("BEGIN TRANSACTION")
            _time(phases, name, lambda sql=sql, conn=conn: conn.execute(sql).fetchone())
            conn.execute("COMMIT")
    _remove(db)
    return phases


def _remove(db: Path) -> None:
    db.unlink(missing_ok=True)
    db.with_name(db.name + ".wal").unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile_ingest", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=FULL_ROWS)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    contract = orders_contract()
    landing_key = f"{contract.system}/{datetime.now(UTC).date().isoformat()}/{contract.file}.csv"
    samples: dict[str, dict[str, list[float]]] = {}

    def add(group: str, phases: Phases) -> None:
        for name, seconds in phases.items():
            samples.setdefault(group, {}).setdefault(name, []).append(seconds)

    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        csv_path = Path(tmp) / f"{contract.file}.csv"
        generate_orders_csv(csv_path, args.rows)
        db = Path(tmp) / "profile.duckdb"
        runs: dict[str, Callable[[], Phases]] = {
            "baseline: CTAS read_csv": lambda: baseline_phases(db, csv_path),
            "load_file as is": lambda: load_file_phases(db, csv_path, landing_key),
            "candidate: one-pass primary-key check": lambda: load_file_phases(
                db, csv_path, landing_key, one_pass_pk=True
            ),
            "candidate: preserve_insertion_order = false": lambda: load_file_phases(
                db, csv_path, landing_key, insertion_order=False
            ),
            "candidate: both": lambda: load_file_phases(
                db, csv_path, landing_key, one_pass_pk=True, insertion_order=False
            ),
        }
        log.info("warm-up")
        for run in runs.values():
            _remove(db)
            run()
        for round_ in range(1, args.repeat + 1):
            log.info("round %d/%d", round_, args.repeat)
            for group, run in runs.items():
                _remove(db)
                add(group, run())
                if group == "load_file as is":
                    add("primary-key queries on the committed table", pk_check_parts(db, landing_key))
            _remove(db)
            add("insert variants (INSERT alone, fresh table)", insert_variants(db, csv_path, landing_key))

    lines = [f"{args.rows:,} rows; median of {args.repeat} (all runs in brackets), after one warm-up", ""]
    for group, phases in samples.items():
        lines.append(f"{group}:")
        lines += [
            f"  {name:<48} {fmt_seconds(statistics.median(v)):>9}  ({', '.join(fmt_seconds(x) for x in v)})"
            for name, v in phases.items()
        ]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
