"""Fixes to Dagster 1.13's step execution, applied when the code location builds its definitions
(`pipeline.definitions.build_defs`, unless PIPELINE_FAST_PATHS=off), so in every process that runs its steps.

**Output key sets** (a multi-asset with many outputs: a dbt project).
For every output a step yields, Dagster asks for the set of the step's asset keys
(`StepExecutionContext.get_output_asset_keys`: to check that a multi-asset yields parents before children, and for
data versions) and builds it from scratch: for each of the step's outputs it asks whether the output's key is
selected, and that question (`AssetsDefinition.asset_and_check_keys`) builds a new set of every asset and check of
the step. A dbt build of n models and tests pays n x n x n set operations: 7 s of a 500-model build here (bench P2),
growing with the cube of the project. Both answers are fixed for the life of their object: an AssetsDefinition is
immutable, and a step's outputs and selection do not change while it runs. So each is computed once, as a frozenset
(a caller that tried to change the shared set would fail loudly instead of corrupting it).

**Reading back what the step just stored.** For each materialization a step yields, Dagster records the data
versions of its parents (provenance) and, for each check result, the materialization the check evaluated: both read
the asset's latest materialization record back from the instance (`DataVersionCache`), although the step stored it a
moment before — one `get_asset_records` query and one deserialized event per asset, ~1,000 for a 1,000-model dbt
build (bench P2). Our local instance's event storage (fastpaths/instance_storage.py) remembers the records of the
unpartitioned materializations it committed in this process; for an asset this very run materialized, the cache
takes that record — the one the query would return — and asks the instance otherwise (any other storage, another
run's materialization, partitioned assets and inputs).

**Failures without a stack.** A step failed by a `dg.Failure` is recorded with its message and metadata but without a
stack trace. Dagster records a Failure like any exception — message, the stack of every frame between the raise and the
executor (a dozen framework frames below ours) and the cause — plus the Failure's description and metadata, and the
UI prints "Stack Trace:" under the message of every failed step whose error has a stack, as does the run worker's
log. A Failure is the code saying what went wrong in words meant for a person: a quarantined file (which file,
which line, where it went), a sync gate's refusal, a destination's 4xx, dbt tests that failed. Its stack says
nothing anyone can act on and makes an expected data error look like a crash. So its error keeps the message (the
Failure's description) only, as Dagster's own `SerializableErrorInfo.to_exception_message_only` shapes it; every
other exception — a real crash — keeps its stack. Dagster offers no switch for this: the recorded error is built in
`execute_plan.step_failure_event_from_exc_info`, which the patch wraps (for Failures only).

`apply()` patches only the shapes it knows (a plain property, a plain method, a plain function);
tests/unit/test_dagster_patches.py fails when a Dagster upgrade changes them, so the patches are reviewed (and
dropped once Dagster does the same itself).
"""

import functools
from collections.abc import Set
from typing import Any

import dagster as dg
from dagster._core.definitions.assets.definition.assets_definition import AssetsDefinition
from dagster._core.definitions.data_version import extract_data_version_from_entry
from dagster._core.events import DagsterEvent
from dagster._core.execution.context.data_version_cache import DataVersionCache, InputAssetVersionInfo
from dagster._core.execution.context.system import StepExecutionContext
from dagster._core.execution.plan import execute_plan
from dagster._core.execution.plan.objects import StepFailureData
from dagster._utils.error import SerializableErrorInfo

_STEP_KEYS_ATTRIBUTE = "_pipeline_output_asset_keys"
_PATCHED = "_pipeline_patched"


def _asset_and_check_keys(self: AssetsDefinition) -> frozenset[Any]:
    return frozenset(self.keys) | frozenset(self.check_keys)


def _stored_by_this_run(cache: DataVersionCache, key: Any) -> InputAssetVersionInfo | None:
    """The version info of `key` from the record of the materialization this run stored for it in this process, or
    None where the instance has to be asked: as `DataVersionCache._fetch_input_asset_version_info` makes it for an
    unpartitioned input."""
    context = cache._context  # noqa: SLF001 - the step the cache belongs to
    lookup = getattr(context.instance.event_log_storage, "stored_materialization", None)
    if lookup is None:
        return None
    record = lookup(key, context.run_id)
    if record is None:
        return None
    input_name = context.job_def.asset_layer.get_node_input_name(context.node_handle, key)
    if input_name and context.has_asset_partitions_for_input(input_name):
        return None
    entry = record.event_log_entry
    return InputAssetVersionInfo(
        record.storage_id,
        entry.dagster_event.event_type,  # ty: ignore[possibly-missing-attribute]
        extract_data_version_from_entry(entry),
        record.run_id,
        record.timestamp,
    )


def apply() -> bool:
    """Apply every patch, once; True when they are (now or already) applied."""
    keys_attribute = AssetsDefinition.__dict__.get("asset_and_check_keys")
    if isinstance(keys_attribute, property):
        cached = functools.cached_property(_asset_and_check_keys)
        cached.__set_name__(AssetsDefinition, "asset_and_check_keys")
        AssetsDefinition.asset_and_check_keys = cached  # ty: ignore[invalid-assignment]
    original = StepExecutionContext.__dict__.get("get_output_asset_keys")
    if callable(original) and not getattr(original, "_pipeline_cached", False):

        @functools.wraps(original)
        def get_output_asset_keys(self: StepExecutionContext) -> Set[Any]:
            keys = self.__dict__.get(_STEP_KEYS_ATTRIBUTE)
            if keys is None:
                keys = self.__dict__[_STEP_KEYS_ATTRIBUTE] = frozenset(original(self))
            return keys

        get_output_asset_keys._pipeline_cached = True  # ty: ignore[unresolved-attribute]
        StepExecutionContext.get_output_asset_keys = get_output_asset_keys  # ty: ignore[invalid-assignment]
    fetch = DataVersionCache.__dict__.get("maybe_fetch_and_get_input_asset_version_info")
    if callable(fetch) and not getattr(fetch, _PATCHED, False):

        @functools.wraps(fetch)
        def maybe_fetch_and_get_input_asset_version_info(self: DataVersionCache, key: Any) -> Any:
            if key not in self.input_asset_version_info:
                stored = _stored_by_this_run(self, key)
                if stored is not None:
                    self.input_asset_version_info[key] = stored
            return fetch(self, key)  # answers from the cache when it holds the key

        setattr(maybe_fetch_and_get_input_asset_version_info, _PATCHED, True)
        DataVersionCache.maybe_fetch_and_get_input_asset_version_info = maybe_fetch_and_get_input_asset_version_info
    failure_event = execute_plan.__dict__.get("step_failure_event_from_exc_info")
    if callable(failure_event) and not getattr(failure_event, "_pipeline_message_only", False):
        execute_plan.step_failure_event_from_exc_info = _message_only_failures(failure_event)  # ty: ignore
    return is_applied()


def _message_only_failures(original: Any) -> Any:
    """Dagster's function, with the error of a `dg.Failure` reduced to its message (what else it records is kept).

    It builds the event itself rather than editing the original's: creating a step event also logs (stores) it.
    """

    @functools.wraps(original)
    def step_failure_event_from_exc_info(
        step_context: Any, exc_info: Any, user_failure_data: Any = None, error_source: Any = None
    ) -> DagsterEvent:
        failure = exc_info[1]
        if not isinstance(failure, dg.Failure):
            return original(step_context, exc_info, user_failure_data, error_source)
        error = SerializableErrorInfo(
            message=failure.description or type(failure).__name__, stack=[], cls_name=type(failure).__name__
        )
        return DagsterEvent.step_failure_event(
            step_context, StepFailureData(error=error, user_failure_data=user_failure_data, error_source=error_source)
        )

    step_failure_event_from_exc_info._pipeline_message_only = True  # ty: ignore[unresolved-attribute]
    return step_failure_event_from_exc_info


def is_applied() -> bool:
    keys_attribute = AssetsDefinition.__dict__.get("asset_and_check_keys")
    method = StepExecutionContext.__dict__.get("get_output_asset_keys")
    fetch = DataVersionCache.__dict__.get("maybe_fetch_and_get_input_asset_version_info")
    failure_event = execute_plan.__dict__.get("step_failure_event_from_exc_info")
    return (
        isinstance(keys_attribute, functools.cached_property)
        and getattr(method, "_pipeline_cached", False)
        and getattr(fetch, _PATCHED, False)
        and getattr(failure_event, "_pipeline_message_only", False)
    )
