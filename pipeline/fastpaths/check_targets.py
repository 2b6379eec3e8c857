"""Which materialization a check evaluation recorded outside its asset's own step judges.

Dagster ties a check result to a materialization of the step that yields it. An evaluation recorded elsewhere — the
failed `landing_contract` of a load that quarantined its file (nothing materialized), a dbt relationships test that
ran in the other model's dbt invocation — names its target itself. Without one Dagster's UI falls back to "evaluated
after the latest materialization", compared on a creation time rounded to the second, and shows "Not evaluated"
when the two fall in the same second.
"""

from __future__ import annotations

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluationTargetMaterializationData

from . import enabled as fast_paths_enabled


def latest_materialization_target(
    instance: dg.DagsterInstance, key: dg.AssetKey
) -> AssetCheckEvaluationTargetMaterializationData | None:
    """The asset's latest materialization (of any partition) as an evaluation's target; None if it has none, and
    with PIPELINE_FAST_PATHS=off (Dagster then pairs the evaluation with the latest materialization itself, by time)."""
    if not fast_paths_enabled():
        return None
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=1).records
    if not records:
        return None
    latest = records[0]
    return AssetCheckEvaluationTargetMaterializationData(
        storage_id=latest.storage_id, run_id=latest.run_id, timestamp=latest.timestamp
    )
