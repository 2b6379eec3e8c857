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

With `--seeds-before-sources` (given before dbt's arguments; our dbt resource passes it when the project has such
seeds) a `dbt build` or `dbt run` also orders each seed before the nodes that read the table it loads through a
*source* of the same relation (`seeds_feeding_sources`): dbt does not know that edge, so on a fresh warehouse it may
run a reading model before the seed, which then fails. The script parses the project (`dbt parse`, partially, as the
build would), adds the seed to those nodes' dependencies in the parsed manifest, and runs the command on that
manifest (dbt's documented reuse of a parsed manifest: `dbtRunner(manifest=...)`), in this one process: one dbt
start-up, one `run_results.json`, dbt's own graph order and selection; a seed that is not selected is not run.

Run as a script, by path: it imports dbt and the standard library only (not the `pipeline` package, which the dbt
process may not be able to import from the project folder). The exit code is the `dbt` command's: 0 success,
1 a node failed or errored, 2 dbt itself failed.
"""

import json
import sys
import threading
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

#: The launcher's own option (before dbt's arguments): order seeds before the readers of the sources they load.
SEEDS_BEFORE_SOURCES = "--seeds-before-sources"
#: count each built table's rows through dbt-duckdb's internal database handle (a fast path: PIPELINE_FAST_PATHS)
COUNT_ROWS = "--count-rows"
#: The launcher's own option `--arguments-file PATH`: a JSON list of arguments too long for a command line (a
#: selection of thousands of nodes; Linux refuses one argument over 128 KiB). dbt's arguments name them
#: `@argument-<i>`; the launcher puts them in and removes the file.
ARGUMENTS_FILE = "--arguments-file"
ARGUMENT_PLACEHOLDER = "@argument-{}"
#: dbt commands that run models (where a reading model could overtake its seed)
ORDERED_COMMANDS = frozenset({"build", "run"})

#: dbt's log event carrying each kind of node's result: the events dagster-dbt turns into Dagster events.
RESULT_EVENTS = frozenset({"LogModelResult", "LogSeedResult", "LogSnapshotResult", "LogTestResult"})
#: Materializations whose relation is a table: counting rows is cheap. Views would re-run their query.
COUNTABLE = frozenset({"table", "incremental", "snapshot", "seed"})


def row_count(relation: str) -> int | None:
    """Rows of a relation dbt just built, through dbt-duckdb's own database handle; None off DuckDB or on error.

    A fast path (README, "Fast paths"): dbt-duckdb's `_ENV` is internal. It lives here, not in pipeline/fastpaths/,
    because this script imports nothing of the `pipeline` package; the dbt resource turns it on (`--count-rows`)
    only while PIPELINE_FAST_PATHS is on. Off, a DuckDB model's materialization has no `dagster/row_count`."""
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

    def __init__(self, out: TextIO, count_rows: bool = False) -> None:
        self._out = out
        self._lock = threading.Lock()
        self._count_rows = count_rows

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
        elif self._count_rows and node.node_status == "success" and node.materialized in COUNTABLE:
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


def relation_key(relation_name: str | None) -> str | None:
    """A relation name as the database sees it: quotes dropped, case folded (`"db"."Ref"."X"` is db.ref.x)."""
    return relation_name.replace('"', "").replace("`", "").lower() if relation_name else None


def seeds_feeding_sources(seeds: Mapping[str, str | None], sources: Mapping[str, str | None]) -> dict[str, str]:
    """source unique_id -> unique_id of the seed that loads the source's relation. Both arguments map unique_ids to
    relation names (the manifest's `relation_name`): a seed and a source naming the same table are the same data, and
    a model reading the source reads what the seed loaded."""
    by_relation = {relation_key(name): uid for uid, name in seeds.items() if relation_key(name)}
    return {uid: by_relation[key] for uid, name in sources.items() if (key := relation_key(name)) in by_relation}


def order_seeds_before_sources(manifest: Any) -> int:
    """Make every node that reads a seed-fed source depend on the seed too, in a parsed dbt `Manifest` (in place).
    Returns how many dependencies were added."""
    fed = seeds_feeding_sources(
        {uid: n.relation_name for uid, n in manifest.nodes.items() if n.resource_type == "seed"},
        {uid: s.relation_name for uid, s in manifest.sources.items()},
    )
    added = 0
    for node in manifest.nodes.values():  # models, snapshots, tests (unit tests run with their model)
        nodes = getattr(node.depends_on, "nodes", None)  # a seed's depends on macros only
        if nodes is None:
            continue
        for seed in dict.fromkeys(fed[p] for p in nodes if p in fed):
            if seed not in nodes:
                nodes.append(seed)
                added += 1
    return added


def command_of(args: list[str]) -> tuple[str | None, dict[str, Any]]:
    """The dbt subcommand of a command line and the options given on it that `dbt parse` takes too (project, profile,
    target, vars, log settings, ...), as dbt's own CLI parses them; (None, {}) when it cannot be read here."""
    from click.core import ParameterSource
    from dbt.cli.main import cli

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # click 8.2+: `protected_args`
            group = cli.make_context(cli.name, list(args), resilient_parsing=True)
            name, command, rest = cli.resolve_command(group, [*group.protected_args, *group.args])
            sub = command.make_context(name, rest, parent=group, resilient_parsing=True)
    except Exception:
        return None, {}
    accepted = {p.name for p in cli.commands["parse"].params}
    given = {
        k: v
        for ctx in (group, sub)
        for k, v in ctx.params.items()
        if k in accepted and ctx.get_parameter_source(k) is ParameterSource.COMMANDLINE
    }
    return name, given


def parsed_with_seeds_first(args: list[str], callbacks: list[Any]) -> Any | None:
    """The project parsed (as `args` would parse it) with seeds ordered before the readers of the sources they load;
    None when the command does not run models or the project does not parse (the command then reports why)."""
    from dbt.cli.main import dbtRunner

    command, options = command_of(args)
    if command not in ORDERED_COMMANDS:
        return None
    parsed = dbtRunner(callbacks=callbacks).invoke(["parse"], **{**options, "quiet": True})
    if not parsed.success or parsed.result is None:
        return None
    order_seeds_before_sources(parsed.result)
    return parsed.result


def own_options(args: list[str]) -> tuple[bool, bool, list[str]]:
    """The launcher's own options at the front of `args`: (seeds first?, count rows?, dbt's arguments with the long
    ones put in)."""
    seeds_first, count_rows, spilled = False, False, None
    while args and args[0] in (SEEDS_BEFORE_SOURCES, COUNT_ROWS, ARGUMENTS_FILE):
        if args[0] == SEEDS_BEFORE_SOURCES:
            seeds_first, args = True, args[1:]
        elif args[0] == COUNT_ROWS:
            count_rows, args = True, args[1:]
        else:
            path, args = Path(args[1]), args[2:]
            spilled = json.loads(path.read_text(encoding="utf-8"))
            path.unlink(missing_ok=True)
    if spilled:
        by_placeholder = {ARGUMENT_PLACEHOLDER.format(i): value for i, value in enumerate(spilled)}
        args = [by_placeholder.get(arg, arg) for arg in args]
    return seeds_first, count_rows, args


def main(args: list[str]) -> int:
    from dbt.cli.main import dbtRunner

    seeds_first, count_rows, args = own_options(args)
    callbacks = [ResultLines(sys.stdout, count_rows)] if text_log(args) else []
    manifest = parsed_with_seeds_first(args, callbacks) if seeds_first else None
    result = dbtRunner(manifest=manifest, callbacks=callbacks).invoke(args)
    if result.success:
        return 0
    if result.exception is not None:
        sys.stderr.write(f"dbt failed: {type(result.exception).__name__}: {result.exception}\n")
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
