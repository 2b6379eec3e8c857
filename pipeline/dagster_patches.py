"""A fix to Dagster 1.13's step execution for a multi-asset with many outputs (a dbt project), applied when the code
location is imported (`pipeline.definitions`), so in every process that runs its steps.

For every output a step yields, Dagster asks for the set of the step's asset keys
(`StepExecutionContext.get_output_asset_keys`: to check that a multi-asset yields parents before children, and for
data versions) and builds it from scratch: for each of the step's outputs it asks whether the output's key is
selected, and that question (`AssetsDefinition.asset_and_check_keys`) builds a new set of every asset and check of
the step. A dbt build of n models and tests pays n x n x n set operations: 7 s of a 500-model build here (bench P2),
growing with the cube of the project. Both answers are fixed for the life of their object: an AssetsDefinition is
immutable, and a step's outputs and selection do not change while it runs. So each is computed once, as a frozenset
(a caller that tried to change the shared set would fail loudly instead of corrupting it).

`apply()` patches only the shapes it knows (a plain property, a plain method); tests/unit/test_dagster_patches.py
fails when a Dagster upgrade changes them, so the patch is reviewed (and dropped once Dagster caches these itself).
"""

import functools
from collections.abc import Set
from typing import Any

from dagster._core.definitions.assets.definition.assets_definition import AssetsDefinition
from dagster._core.execution.context.system import StepExecutionContext

_STEP_KEYS_ATTRIBUTE = "_pipeline_output_asset_keys"


def _asset_and_check_keys(self: AssetsDefinition) -> frozenset[Any]:
    return frozenset(self.keys) | frozenset(self.check_keys)


def apply() -> bool:
    """Patch both, once; True when they are (now or already) patched."""
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
    return is_applied()


def is_applied() -> bool:
    keys_attribute = AssetsDefinition.__dict__.get("asset_and_check_keys")
    method = StepExecutionContext.__dict__.get("get_output_asset_keys")
    return isinstance(keys_attribute, functools.cached_property) and getattr(method, "_pipeline_cached", False)
