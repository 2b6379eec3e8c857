"""dbt's own CLI, plus a JSON line on stdout for every node result: how our dbt assets report results while dbt runs.

`PipelineDbtCliResource` starts dbt through this script on DuckDB (`python -P dbt_launcher.py <dbt arguments>`)
with `--log-format text`. dbt then prints the log a bare `dbt build` prints, and this script adds one line per
model, seed, snapshot and test result: the fields of dbt's result event that dagster-dbt reads from dbt's JSON log
(node, status, start and end, execution time, failures), as a JSON object of the same shape, so dagster-dbt's
stream parses it as it parses the JSON log. A built table's line also carries its `row_count`, counted in this
process right after dbt reported it (the DuckDB file accepts no other process while dbt runs).

Why not dbt's JSON log: dbt serializes every event of a build to JSON then (~1 KB each, several per node), ~0.5 s
per 100 models here (bench P2). The lines here are built from dbt's result events through dbt's documented
programmatic interface (`dbtRunner` callbacks), a few fields each.

Run as a script, by path: it imports dbt and the standard library only (not the `pipeline` package, which the dbt
process may not be able to import from the project folder). The exit code is the `dbt` command's: 0 success,
1 a node failed or errored, 2 dbt itself failed.
"""

import json
import sys
import threading
from typing import Any, TextIO

#: dbt's log event carrying each kind of node's result: the events dagster-dbt turns into Dagster events.
RESULT_EVENTS = frozenset({"LogModelResult", "LogSeedResult", "LogSnapshotResult", "LogTestResult"})
#: Materializations whose relation is a table: counting rows is cheap. Views would re-run their query.
COUNTABLE = frozenset({"table", "incremental", "snapshot", "seed"})


def row_count(relation: str) -> int | None:
    """Rows of a relation dbt just built, through dbt-duckdb's own database handle; None off DuckDB or on error."""
    try:
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    except ImportError:
        return None
    environment = DuckDBConnectionManager._ENV  # noqa: SLF001 - the open database; None until dbt opened it
    if environment is None or not relation:
        return None
    handle = environment.handle()  # a cursor on the database dbt holds open (counted, so dbt does not close it)
    try:
        return handle.cursor().execute(f"select count(*) from {relation}").fetchone()[0]
    except Exception:
        return None
    finally:
        handle.close()


class ResultLines:
    """A dbt callback writing one JSON line per node result (dbt calls it from the thread that ran the node)."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._lock = threading.Lock()

    def __call__(self, msg: Any) -> None:
        name = msg.info.name
        if name not in RESULT_EVENTS:
            return
        data, node = msg.data, msg.data.node_info
        fields: dict[str, Any] = {
            "node_info": {
                "unique_id": node.unique_id,
                "node_status": node.node_status,
                "node_started_at": node.node_started_at,
                "node_finished_at": node.node_finished_at,
            },
            "status": data.status,
            "execution_time": data.execution_time,
        }
        if name == "LogTestResult":
            fields["num_failures"] = data.num_failures
        elif node.node_status == "success" and node.materialized in COUNTABLE:
            rows = row_count(node.node_relation.relation_name)
            if rows is not None:
                fields["row_count"] = rows
        info = {"name": name, "level": msg.info.level, "invocation_id": msg.info.invocation_id, "msg": ""}
        line = json.dumps({"info": info, "data": fields}) + "\n"
        with self._lock:  # dbt's threads report concurrently: whole lines only
            self._out.write(line)
            self._out.flush()


def text_log(args: list[str]) -> bool:
    """Whether dbt's stdout log is text (else dbt prints its JSON log, result events included, itself)."""
    for i, arg in enumerate(args):
        if arg == "--log-format" and i + 1 < len(args):
            return args[i + 1] == "text"
        if arg.startswith("--log-format="):
            return arg.split("=", 1)[1] == "text"
    return False


def main(args: list[str]) -> int:
    from dbt.cli.main import dbtRunner

    result = dbtRunner(callbacks=[ResultLines(sys.stdout)] if text_log(args) else []).invoke(args)
    if result.success:
        return 0
    if result.exception is not None:
        sys.stderr.write(f"dbt failed: {type(result.exception).__name__}: {result.exception}\n")
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
