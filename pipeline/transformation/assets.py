"""The dbt assets: one `dbt build` per run for whatever subset of the project is selected."""

import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from collections.abc import Set as AbstractSet
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from functools import cache, lru_cache
from typing import Any

import dagster as dg
import orjson
from dagster_dbt import (
    DagsterDbtCliRuntimeError,
    DagsterDbtTranslator,
    DbtCliInvocation,
    DbtCliResource,
    DbtProject,
    dbt_assets,
)
from dagster_dbt.asset_utils import get_asset_check_key_for_test
from dagster_dbt.core.dbt_cli_event import DbtCoreCliEventMessage

from ..automation.conditions import dbt_depth
from ..core.environment import environment
from ..core.resources import DbtArtifactsResource
from ..core.settings import WAREHOUSE_POOL, Settings
from ..fastpaths.check_targets import latest_materialization_target
from ..fastpaths.dagster_dbt import indirect_selection, subset_selection_without_copy
from . import state
from .artifacts import (
    ArtifactStore,
    remove_invocation_folder,
    summary,
    sweep_invocation_folders,
    unfinished_nodes,
)
from .dbt_launcher import seeds_feeding_sources
from .project import dbt_project, dbt_resource
from .translator import PipelineTranslator

EXTERNAL_SOURCES_GROUP = "external_sources"

#: Environment dbt runs with, unless the environment already sets the variable (dagster-dbt passes ours on).
DBT_ENV_DEFAULTS = {
    # dagster-dbt reads this when it builds the command (and overrides it with `empty` when it selects tests
    # explicitly). With dbt's default, `eager`, a subset run — as an asset backfill launches for the dbt assets
    # whose upstream partitions are done — also runs every relationships test touching a selected model, including
    # tests whose other model is not built yet, which fails on a fresh warehouse. `buildable` runs a test only when
    # all its parents are selected or upstream of the selection.
    "DBT_INDIRECT_SELECTION": "buildable",
    # dagster-dbt sets DBT_LOG_FORMAT=json to parse dbt's events from stdout, and dbt then writes its debug log file
    # (target/<invocation>/dbt.log) as JSON too: ~10 JSON events per node, serialized with their node info, costing
    # ~0.45 s of a demo build (bench P2). The file gets dbt's own default instead, the text debug log a bare
    # `dbt build` writes (and which dagster-dbt's error message points to). Stdout stays JSON where dagster-dbt
    # streams it (adapters other than DuckDB; on DuckDB `dbt_log_args` makes it text).
    "DBT_LOG_FORMAT_FILE": "debug",
}


def dbt_env_defaults() -> AbstractContextManager[None]:
    """Set `DBT_ENV_DEFAULTS` that the environment does not set, while dagster-dbt starts dbt."""
    return environment(**{name: value for name, value in DBT_ENV_DEFAULTS.items() if name not in os.environ})


#: dbt is retried when it *errored* (a lock, a dropped connection): the retry runs only what the failed attempt did
#: not finish. Failing tests are data, not luck: the step fails at once (see `_fail`).
DBT_RETRY = dg.RetryPolicy(max_retries=2, delay=15, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


#: dbt `meta` key of an incremental model: `true` partitions it by landing day although it reads no raw table of
#: ours (its SQL reads `window_start` / `window_end`), `false` keeps it unpartitioned although it does.
PARTITION_META_KEY = "partition_by_landing_date"


def incremental_models(manifest: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(
        u
        for u, n in manifest["nodes"].items()
        if n["resource_type"] == "model" and n["config"].get("materialized") == "incremental"
    )


def partition_opt_in(node: Mapping[str, Any]) -> bool | None:
    """An incremental model's `meta.partition_by_landing_date` (config or properties): True, False, or None (unset).

    Raises ValueError naming the model and its file when the value is not a boolean.
    """
    for meta in ((node.get("config") or {}).get("meta") or {}, node.get("meta") or {}):
        if PARTITION_META_KEY in meta:
            value = meta[PARTITION_META_KEY]
            if not isinstance(value, bool):
                raise ValueError(
                    f"meta.{PARTITION_META_KEY} of dbt model {node.get('name')} ({node.get('original_file_path')}) "
                    f"must be true or false, got {value!r}"
                )
            return value
    return None


def partitioned_models(manifest: Mapping[str, Any], landing_sources: AbstractSet[str]) -> frozenset[str]:
    """The dbt models run with daily partitions by landing day, like the raw tables.

    An incremental model is partitioned when it reads (through any chain of nodes) a source in `landing_sources`
    — the dbt sources our daily-partitioned ingestion assets load (`meta.dagster.asset_key`) — so its increments
    follow the landing days (see fct_orders.sql), or when its `meta.partition_by_landing_date` is true; that key set
    to false keeps it unpartitioned either way. An incremental model of a project brought through DBT_PROJECT_DIR,
    whose logic has nothing to do with our landing dates, thus stays unpartitioned: `dbt build` runs it as dbt would.

    With a partitioned incremental model, so are the models *between* it and the raw tables (upstream of it and
    downstream of a landing source), so the chain from a raw partition to the incremental model is partitioned all
    the way: Dagster's asset backfills (and automation) go from a partitioned parent to its partitioned children;
    with an unpartitioned view in between, a backfill of a day range would never reach the incremental model. Models
    upstream of it that read no raw table (over a seed, say) stay unpartitioned, as do the models downstream (the
    marts): they run once all the partitions they read are done.
    """
    nodes, parent_map = manifest["nodes"], manifest.get("parent_map", {})

    @cache
    def reads_landing(unique_id: str) -> bool:
        return any(p in landing_sources or reads_landing(p) for p in parent_map.get(unique_id, ()))

    roots = []
    for unique_id in sorted(incremental_models(manifest)):
        opted = partition_opt_in(nodes[unique_id])
        if opted or (opted is None and reads_landing(unique_id)):
            roots.append(unique_id)
    chain, todo = set(roots), list(roots)
    while todo:
        for parent in parent_map.get(todo.pop(), ()):
            if parent in nodes and parent not in chain and reads_landing(parent):
                chain.add(parent)
                todo.append(parent)
    return frozenset(u for u in chain if nodes[u]["resource_type"] == "model")


def landing_sources(manifest: Mapping[str, Any], ingested: AbstractSet[dg.AssetKey]) -> frozenset[str]:
    """unique_ids of the dbt sources that name an ingestion asset through `meta.dagster.asset_key` (dagster-dbt's
    own reading of a source's key)."""
    translator = DagsterDbtTranslator()
    return frozenset(
        uid for uid in manifest.get("sources", {}) if translator.get_asset_spec(manifest, uid, None).key in ingested
    )


def dbt_selection(manifest: Mapping[str, Any], unique_ids: AbstractSet[str]) -> str:
    """A dbt selection of exactly these nodes, by fully qualified name (as dagster-dbt selects a subset)."""
    return " ".join(sorted(".".join(manifest["nodes"][u]["fqn"]) for u in unique_ids))


def build_dbt_assets(
    project: DbtProject,
    manifest: dict,
    translator: PipelineTranslator,
    partitions_def: dg.TimeWindowPartitionsDefinition | None,
    lookback_days: int,
    state_aware: bool = True,
) -> list[dg.AssetsDefinition]:
    """`dbt_build` for the project (`manifest`: its parsed manifest, read once at load). The models the translator
    partitions (`partitioned_models`; DBT_PARTITION_INCREMENTAL, on by default) are `dbt_incremental` instead:
    partitioned by landing day (`partitions_def`), run with the partition range (widened by `lookback_days`) as vars
    `window_start`/`window_end`, a backfill of many days in one dbt invocation."""
    partitioned = dbt_selection(manifest, translator.partitioned) if partitions_def is not None else ""

    def window_vars(context: dg.AssetExecutionContext) -> list[str]:
        window = context.partition_time_window
        start = window.start.date() - timedelta(days=lookback_days)
        end = window.end.date() - timedelta(days=1)  # the window's end is exclusive
        return ["--vars", json.dumps({"window_start": start.isoformat(), "window_end": end.isoformat()})]

    every_check: set[dg.AssetCheckKey] = set()  # of both steps: filled below, read by the steps at run time
    assets = [
        _dbt_multi_asset(
            project,
            manifest,
            translator,
            "dbt_build",
            every_check,
            exclude=partitioned or None,
            state_aware=state_aware,
        ),
    ]
    if partitioned:
        assets.append(
            _dbt_multi_asset(
                project,
                manifest,
                translator,
                "dbt_incremental",
                every_check,
                select=partitioned,
                partitions_def=partitions_def,
                extra_args=window_vars,
                state_aware=state_aware,
            )
        )
    every_check.update(key for asset in assets for key in asset.check_keys)
    return assets


def _dbt_multi_asset(
    project: DbtProject,
    manifest: dict,
    translator: PipelineTranslator,
    name: str,
    every_check: AbstractSet[dg.AssetCheckKey],
    *,
    select: str = "fqn:*",
    exclude: str | None = None,
    partitions_def: dg.PartitionsDefinition | None = None,
    extra_args: Callable[[dg.AssetExecutionContext], list[str]] | None = None,
    state_aware: bool = True,
) -> dg.AssetsDefinition:
    @dbt_assets(
        manifest=manifest,
        project=project,
        dagster_dbt_translator=translator,
        name=name,
        select=select,
        exclude=exclude,
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run() if partitions_def else None,
        pool=WAREHOUSE_POOL,
        retry_policy=DBT_RETRY,
    )
    def _dbt(
        context: dg.AssetExecutionContext, dbt: DbtCliResource, dbt_artifacts: DbtArtifactsResource
    ) -> Iterator[Any]:
        """dbt writes the warehouse, so the whole build holds the one `warehouse` pool slot."""
        store = ArtifactStore(dbt_artifacts.store())
        attempt = context.retry_number
        step = context.op.name
        extra = [*(extra_args(context) if extra_args else []), *dbt_log_args(dbt)]
        redo = retry_selection(store, context.run_id, step, attempt, manifest) if attempt else None
        decision, nodes = state.plan_step(context, manifest, state_aware, retry=attempt > 0, now=time.time())
        if decision.reuse:
            context.log.info(state.summary(decision))
            yield from state.reused_events(decision, nodes, state.read_elsewhere(context))
        if not decision.build:
            context.log.info("Nothing to build: every selected dbt node is unchanged (no dbt invocation)")
            return
        marks = state.StateMarks(decision, nodes, context.run_id)
        with dbt_env_defaults():
            if redo:
                context.log.info(
                    f"Attempt {attempt + 1}: `dbt build` of the {len(redo)} nodes attempt {attempt} did not finish"
                    f" (dbt retry semantics): {', '.join(redo[:20])}{' ...' if len(redo) > 20 else ''}"
                )
                # Our selection, not the step's (dbt would union the two): then report events as the step's.
                args = ["build", *extra, "--select", " ".join(redo)]
                invocation = dbt.cli(args, manifest=manifest, dagster_dbt_translator=translator)
                invocation.context = context
            elif decision.reuse:  # a state-aware run builds part of the selection: exactly those nodes
                unique_ids = {nodes[k].unique_id for k in decision.build}
                args = ["build", *extra, "--select", dbt_selection(manifest, unique_ids)]
                invocation = dbt.cli(args, manifest=manifest, dagster_dbt_translator=translator)
                invocation.context = context
            elif (subset := subset_selection_without_copy(context, manifest, translator)) is not None:
                selection, indirect = subset
                context.log.info(f"A subset of {len(selection[-1].split())} dbt nodes, selected on dbt's command line")
                with indirect_selection(indirect):
                    invocation = dbt.cli(
                        ["build", *extra, *selection], manifest=manifest, dagster_dbt_translator=translator
                    )
                invocation.context = context
            else:
                invocation = dbt.cli(["build", *extra], context=context)
        run_results: dict[str, Any] | None = None
        try:
            yield from events_with_run_metadata(invocation, getattr(dbt, "duckdb_path", None), every_check, marks)
        except DagsterDbtCliRuntimeError as exc:
            run_results = read_run_results(invocation)
            _fail(exc, run_results)
        finally:
            run_results = run_results or read_run_results(invocation)
            if run_results is not None:
                context.log.info(f"dbt invocation: {json.dumps(summary(run_results, manifest))}")
            succeeded = invocation.is_successful()
            saved = store.save(context.run_id, step, attempt, invocation.target_path, succeeded=succeeded)
            context.log.info(f"dbt artifacts of attempt {attempt} kept in {store.url}: {', '.join(saved)}")
            # Kept: the invocation's own folder is not needed any more (a failed one stays a while, for dbt.log).
            if succeeded:
                remove_invocation_folder(invocation.target_path)
            sweep_invocation_folders(invocation.target_path.parent)

    return _dbt


def retry_selection(store: ArtifactStore, run_id: str, step: str, attempt: int, manifest: dict) -> list[str] | None:
    """Names of the nodes the previous attempt did not finish, or None to build the step's whole selection (the
    attempt left no run_results, e.g. dbt could not start)."""
    previous = store.run_results(run_id, step, attempt - 1)
    if previous is None:
        return None
    nodes = {**manifest.get("nodes", {}), **manifest.get("unit_tests", {})}
    names = sorted({nodes[u]["name"] for u in unfinished_nodes(previous) if u in nodes})
    return names or None


def _fail(exc: Exception, run_results: dict[str, Any] | None) -> None:
    """Re-raise a failed dbt build; without retries when only tests failed (a retry would fail them again)."""
    if run_results is None:  # dbt died before writing it: treat as transient
        raise exc from None
    results = run_results.get("results", [])
    errored = [r for r in results if r.get("status") in ("error", "runtime error")]
    failed_tests = [r["unique_id"] for r in results if r.get("status") == "fail"]
    if errored:  # what dagster-dbt parses from dbt's JSON log, which a text log (`dbt_log_args`) does not give it
        details = "\n".join(f"- {r['unique_id']}: {(r.get('message') or '').strip()[:500]}" for r in errored[:20])
        raise DagsterDbtCliRuntimeError(description=f"{exc.description}\n\nErrored dbt nodes:\n{details}") from exc
    if not failed_tests:
        raise exc
    raise dg.Failure(
        f"dbt tests failed: {', '.join(failed_tests[:20])}. Not retried: the data has to change first.",
        allow_retries=False,
    ) from exc


def dbt_log_args(dbt: DbtCliResource) -> list[str]:
    """`--log-format text` where dbt runs through `dbt_launcher.py` (DuckDB), which reports the results.

    dagster-dbt runs dbt with a JSON log on stdout to turn each result line into a Dagster event as it comes.
    dbt serializes every log event of a build to JSON then (~1 KB each, several per node): ~0.5 s of a 100-model
    build here (bench P2). On DuckDB dbt prints the text log a bare `dbt build` prints instead (dagster-dbt copies
    it to the step's compute log line by line), and the launcher adds one JSON line per node result, with the
    row count of each table it built, which `events_with_run_metadata` turns into events while dbt runs.
    """
    return ["--log-format", "text"] if getattr(dbt, "reports_through_launcher", False) else []


def read_run_results(invocation: DbtCliInvocation) -> dict[str, Any] | None:
    """The invocation's run_results.json, or None when dbt died before writing it."""
    try:
        return invocation.get_artifact("run_results.json")
    except Exception:
        return None


def events_with_run_metadata(
    invocation: DbtCliInvocation,
    duckdb_path: str | None = None,
    every_check: AbstractSet[dg.AssetCheckKey] = frozenset(),
    marks: state.StateMarks | None = None,
) -> Iterator[Any]:
    """Stream a dbt invocation's events, each model's with its figures (`ModelFigures`), as dbt reports them.

    On DuckDB the dbt process holds the file's only write lock until it exits, so dagster-dbt's
    `fetch_row_counts()` (a second connection, while dbt runs) cannot read it: there dbt runs through
    `dbt_launcher.py`, which counts each table's rows inside the dbt process and reports every result on a line
    of its own (`dbt_log_args`); results become events as they come, so the UI follows the build and Dagster
    records it while dbt runs. With a dbt executable of your own on DuckDB (no launcher), dbt's JSON log is read
    the same way, without row counts. Other adapters use dagster-dbt's stream and `fetch_row_counts()`.
    `duckdb_path`: the resource's DuckDB file (None off DuckDB); it selects this path, nothing reads the file here.
    `every_check`: the checks of every dbt step of the code location (see `ChecksOfOtherSteps`).
    """
    adapter = invocation.adapter
    if duckdb_path is None and adapter is not None and adapter.type() == "duckdb":
        duckdb_path = str(adapter.config.credentials.path)
    figures = ModelFigures(invocation.context, marks)
    if duckdb_path is None:
        for event in invocation.stream().fetch_row_counts():
            yield figures.mark(event)
        return

    elsewhere = ChecksOfOtherSteps(invocation, every_check)
    failure: BaseException | None = None
    try:
        for raw_event in invocation._stream_stdout():  # noqa: SLF001 - dagster-dbt's own line reader
            if isinstance(raw_event, str):  # dbt's text log: to the compute log, as dagster-dbt does
                sys.stdout.write(raw_event + "\n")
                sys.stdout.flush()
                continue
            message = DbtCoreCliEventMessage(raw_event=raw_event, event_history_metadata={})
            if raw_event["info"].get("msg"):  # a JSON log's message (the launcher's result lines have none)
                sys.stdout.write(f"{message}\n")
                sys.stdout.flush()
            if not message.is_result_event:
                continue
            evaluation = elsewhere.evaluation(message)
            if evaluation is not None:
                yield evaluation
                continue
            events = message.to_default_asset_events(
                manifest=invocation.manifest,
                dagster_dbt_translator=invocation.dagster_dbt_translator,
                context=invocation.context,
                target_path=invocation.target_path,
                project=invocation.project,
            )
            for event in events:
                yield from figures.add(event, raw_event["data"])
        error = invocation.get_error()  # the exit code (stdout is read to its end by now)
        if error is not None and invocation.raise_on_error:
            raise error
    except Exception as exc:  # dbt failed: still report what it did build, then re-raise
        failure = exc
    yield from figures.rest()
    if failure is not None:
        raise failure


class ChecksOfOtherSteps:
    """A dbt test that ran here but is a check of an asset another step builds, recorded on its check all the same.

    A relationships test compares two models, and dagster-dbt makes it a check of the model it is declared on. When
    that model is partitioned by landing day and the other is not (`fct_orders.customer_id` must be in
    `dim_customers`), the two are built by different dbt invocations: the partitioned step plans the check, but
    its dbt run leaves the test out (its other parent is not selected); the unpartitioned step's `dbt build` runs
    it (dbt's eager indirect selection) and dagster-dbt, finding it outside the step's checks, logs it as an
    observation with a warning. So the check was never evaluated: shown as skipped, and a failing test blocked
    nothing. Here such a result becomes an `AssetCheckEvaluation` of its own check, judging its asset's latest
    materialization (see `check_targets`); the syncs' gates read it like any other.

    `every_check`: the checks of every dbt step of the code location. A run's own job knows only the assets it
    selected (a backfill's or automation's run of the unpartitioned models does not hold the partitioned models'
    checks), so the steps are given the set they share.
    """

    def __init__(self, invocation: DbtCliInvocation, every_check: AbstractSet[dg.AssetCheckKey]) -> None:
        context = invocation.context
        self._invocation = invocation
        self._context = context if context is not None and context.has_assets_def else None
        self._own: AbstractSet[dg.AssetCheckKey] | None = None  # this step's checks, once a test result comes
        self._every_check = every_check

    def evaluation(self, message: DbtCoreCliEventMessage) -> dg.AssetCheckEvaluation | None:
        """The evaluation to record for this result, or None when dagster-dbt's own events are right for it."""
        context, invocation = self._context, self._invocation
        unique_id = message.raw_event["data"]["node_info"]["unique_id"]
        if context is None or not unique_id.startswith("test."):
            return None
        manifest = invocation.manifest
        if len(manifest["nodes"].get(unique_id, {}).get("depends_on", {}).get("nodes", ())) < 2:
            return None  # a test of one model runs in that model's step: dagster-dbt's result is right
        key = get_asset_check_key_for_test(
            manifest, invocation.dagster_dbt_translator, unique_id, project=invocation.project
        )
        if key is None:
            return None
        if self._own is None:
            self._own = message._get_result_check_keys(context)  # noqa: SLF001 - dagster-dbt's own choice
        if key in self._own or key not in self._every_check:
            return None
        properties = message._get_check_properties(key, manifest)  # noqa: SLF001 - as dagster-dbt builds a result
        return dg.AssetCheckEvaluation(
            **{**properties, "metadata": {**properties["metadata"], "dbt_invocation_step": context.op.name}},
            target_materialization_data=latest_materialization_target(context.instance, key.asset_key),
        )


class ModelFigures:
    """Puts each model's figures on its materialization: `execution_seconds` and `dagster/row_count` from its
    result, and, when the step selected tests of the model, `dbt_tests_passed` / `dbt_tests_failed` for those in
    this run (numbers the UI plots on the asset's page). A materialization is therefore held until the results of
    its selected checks have come (`dbt build` runs a model's tests before anything downstream of it), then yielded
    with them. Materializations leave in the order dbt reported them, which is the topological order Dagster
    requires; what is still held when dbt ends (behind a test that did not run) is yielded then."""

    def __init__(
        self, context: dg.AssetExecutionContext | dg.OpExecutionContext | None, marks: state.StateMarks | None = None
    ) -> None:
        self._marks = marks
        self._keys_by_output = {}
        self._expected: dict[dg.AssetKey, int] = {}
        if context is not None and context.has_assets_def:
            self._keys_by_output = context.assets_def.keys_by_output_name
            for check_key in context.selected_asset_check_keys:
                self._expected[check_key.asset_key] = self._expected.get(check_key.asset_key, 0) + 1
        #: held materializations in the order dbt reported them: event, its figures, its check results
        self._held: dict[dg.AssetKey, tuple[Any, dict[str, Any], list[Any]]] = {}

    def _key(self, event: Any) -> dg.AssetKey | None:
        if isinstance(event, dg.Output):
            return self._keys_by_output.get(event.output_name)
        return getattr(event, "asset_key", None)

    def add(self, event: Any, result: dict[str, Any]) -> Iterator[Any]:
        key = self._key(event)
        if isinstance(event, dg.Output | dg.AssetMaterialization) and key is not None:
            extra: dict[str, Any] = {"execution_seconds": round(float(result.get("execution_time") or 0.0), 3)}
            if result.get("row_count") is not None:
                extra["dagster/row_count"] = result["row_count"]
            self._held[key] = (event, extra, [])
        elif isinstance(event, dg.AssetCheckResult | dg.AssetCheckEvaluation) and key in self._held:
            self._held[key][2].append(event)
        else:  # a check of an asset this step did not build (a source), an observation
            yield event
            return
        while self._held:  # release from the front while its checks are in
            first = next(iter(self._held))
            if len(self._held[first][2]) < self._expected.get(first, 0):
                break
            yield from self._release(first)

    def _release(self, key: dg.AssetKey) -> Iterator[Any]:
        event, extra, checks = self._held.pop(key)
        if key in self._expected:  # the step selected checks (dbt tests) of this model
            passed = sum(1 for c in checks if c.passed)
            extra.update(dbt_tests_passed=passed, dbt_tests_failed=len(checks) - passed)
        yield self._marked(key, event, extra)
        yield from checks

    def _marked(self, key: dg.AssetKey | None, event: Any, extra: dict[str, Any]) -> Any:
        if self._marks is None:
            return event.with_metadata({**event.metadata, **extra}) if extra else event
        return self._marks.apply(key, event, extra)

    def mark(self, event: Any) -> Any:
        """An event of dagster-dbt's own stream, with the state when it is an output of a node of the step."""
        return self._marked(self._key(event), event, {})

    def rest(self) -> Iterator[Any]:
        for key in list(self._held):
            yield from self._release(key)


@dataclass(frozen=True)
class DbtStage:
    """The dbt part of the graph, plus what later stages need to find models in it."""

    defs: dg.Definitions
    manifest: dict
    key_of: Callable[[str], dg.AssetKey]
    #: levels from the raw tables down to the deepest dbt node (for the automation conditions below it)
    depth: int


def external_source_specs(
    manifest: dict,
    key_of: Callable[[str], dg.AssetKey],
    defined: set[dg.AssetKey],
    skip: AbstractSet[str] = frozenset(),
) -> list[dg.AssetSpec]:
    """dbt sources that no ingestion asset feeds (e.g. in a project brought via DBT_PROJECT_DIR) appear as
    external assets, so their lineage is visible instead of dangling; `skip`: sources that are no asset of their own
    (a seed loads them: the seed is upstream of their readers instead)."""
    specs: dict[dg.AssetKey, dg.AssetSpec] = {}
    for unique_id, source in manifest.get("sources", {}).items():
        if unique_id in skip:
            continue
        key = key_of(unique_id)
        if key in defined or key in specs:
            continue
        specs[key] = dg.AssetSpec(
            key=key,
            description=source.get("description") or f"dbt source {source['source_name']}.{source['name']}",
            group_name=EXTERNAL_SOURCES_GROUP,
            kinds={"dbt"},
            metadata={"relation": source.get("relation_name") or ""},
        )
    return list(specs.values())


def seed_fed_sources(manifest: Mapping[str, Any]) -> dict[str, str]:
    """source unique_id -> the seed loading the same relation (see dbt_launcher.seeds_feeding_sources)."""
    return seeds_feeding_sources(
        {u: n.get("relation_name") for u, n in manifest["nodes"].items() if n["resource_type"] == "seed"},
        {u: s.get("relation_name") for u, s in manifest.get("sources", {}).items()},
    )


def transformation_defs(
    settings: Settings, ingested: set[dg.AssetKey], partitions_def: dg.TimeWindowPartitionsDefinition
) -> DbtStage:
    """The dbt stage. Seeds that load a table the project also reads as a source come before that source's readers,
    in the asset graph (the translator) and in dbt's build order (the dbt resource, `dbt_launcher.py`).

    Built once per process for the same inputs (the settings, the ingestion assets, the partitions, the manifest file
    as it is on disk): a run worker loads the code location twice for a run with an asset selection (Dagster 1.13:
    once for the job, again for its subset), and the dbt stage is most of a load (~2 s of a 1,000-model project's
    run worker, bench P2). Its parts are immutable Dagster definitions, so the second load shares them.
    """
    project = dbt_project(settings)  # under `dagster dev`, parses a stale project first
    manifest_file = project.manifest_path.stat()
    identity = (str(project.manifest_path), manifest_file.st_mtime_ns, manifest_file.st_size, manifest_file.st_ino)
    return _dbt_stage(settings, frozenset(ingested), partitions_def, identity)


@lru_cache(maxsize=4)
def _dbt_stage(
    settings: Settings,
    ingested: frozenset[dg.AssetKey],
    partitions_def: dg.TimeWindowPartitionsDefinition,
    manifest_identity: tuple[str, int, int, int],
) -> DbtStage:
    project = dbt_project(settings)
    manifest = orjson.loads(project.manifest_path.read_bytes())
    partitioned = (
        partitioned_models(manifest, landing_sources(manifest, ingested))
        if settings.dbt_partition_incremental
        else frozenset()
    )
    fed = seed_fed_sources(manifest)
    depth = dbt_depth(manifest)
    translator = PipelineTranslator(depth=depth, partitioned=partitioned, seed_of_source=fed)

    def key_of(unique_id: str) -> dg.AssetKey:
        """The asset of a dbt node or source (a source a seed loads: the seed)."""
        return translator.get_asset_spec(manifest, fed.get(unique_id, unique_id), project).key

    return DbtStage(
        defs=dg.Definitions(
            assets=[
                *build_dbt_assets(
                    project,
                    manifest,
                    translator,
                    partitions_def if partitioned else None,
                    settings.dbt_window_lookback_days,
                    settings.dbt_state_aware,
                ),
                *external_source_specs(manifest, key_of, ingested, skip=fed.keys()),
            ],
            resources={"dbt": dbt_resource(project, seeds_before_sources=bool(fed))},
        ),
        manifest=manifest,
        key_of=key_of,
        depth=depth,
    )
