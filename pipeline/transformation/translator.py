"""How dbt resources become Dagster assets: groups from folders, owners from `meta`, nothing hard-coded."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtProject

from ..automation.conditions import PARTITIONED_TAG, on_seed_change, on_upstream_change


def group_from_path(resource_props: Mapping[str, Any]) -> str | None:
    """The top folder under the resource's path (models/<staging>/..., seeds/, snapshots/) as a group name.

    A model directly in models/ falls in "models"; sources keep dagster-dbt's default (no group).
    """
    if resource_props.get("resource_type") == "source":
        return None
    parts = PurePosixPath(resource_props.get("original_file_path") or "").parts
    if not parts:
        return None
    folder = parts[1] if len(parts) > 2 else parts[0]
    return re.sub(r"\W", "_", folder) or None


def owners_from_meta(resource_props: Mapping[str, Any]) -> list[str] | None:
    """`meta.owner` (a string or a list): emails stay emails, anything else becomes a `team:` owner."""
    meta = resource_props.get("meta") or (resource_props.get("config") or {}).get("meta") or {}
    raw = meta.get("owner") or meta.get("owners")
    if not raw:
        return None
    owners = [raw] if isinstance(raw, str) else list(raw)
    return [o if "@" in o or o.startswith("team:") else "team:" + re.sub(r"\W", "_", o) for o in owners]


#: key prefix of a dbt source that a seed of the project loads (`PipelineTranslator.seed_deps`): never an asset
SEED_FED_SOURCE_PREFIX = "seed_fed_source"


class PipelineTranslator(DagsterDbtTranslator):
    def __init__(
        self,
        depth: int = 1,
        partitioned: frozenset[str] = frozenset(),
        seed_of_source: Mapping[str, str] | None = None,
    ) -> None:
        """`depth`: levels from the raw tables to the deepest node; `partitioned`: unique_ids of the models run
        with daily partitions (the rest of the project is unpartitioned) — both for the automation condition.
        `seed_of_source`: source unique_id -> the seed that loads the same table (`seed_fed_sources`)."""
        super().__init__(settings=DagsterDbtTranslatorSettings(enable_asset_checks=True))
        self.depth = depth
        self.partitioned = partitioned
        self.seed_of_source = dict(seed_of_source or {})
        self._seed_keys: dict[int, dict[dg.AssetKey, dg.AssetKey]] = {}
        self._conditions: dict[tuple[str, ...], dg.AutomationCondition] = {}
        #: dagster-dbt asks for every node's spec once per multi-asset and again for each node's parents; on a
        #: 5,000-model project that is tens of thousands of calls (bench P1). Specs are immutable, so each is
        #: computed once per (manifest, node, with/without project).
        self._specs: dict[tuple[int, str, bool], dg.AssetSpec] = {}
        self._manifests: dict[int, Mapping[str, Any]] = {}  # kept alive, so an id is never reused for another

    def _condition(self, manifest: Mapping[str, Any], unique_id: str) -> dg.AutomationCondition:
        """A model whose parents include models of the other partitioning waits for those to have updated (see
        `on_upstream_change`)."""
        is_partitioned = unique_id in self.partitioned
        cross = tuple(
            sorted(
                p
                for p in manifest.get("parent_map", {}).get(unique_id, [])
                if p in manifest["nodes"]
                and manifest["nodes"][p]["resource_type"] in ("model", "seed", "snapshot")
                and (p in self.partitioned) != is_partitioned
            )
        )
        if cross not in self._conditions:
            keys = [self.get_asset_spec(manifest, p, None).key for p in cross]  # parents first: a DAG, no cycle
            self._conditions[cross] = on_upstream_change(self.depth, dg.AssetSelection.assets(*keys) if keys else None)
        return self._conditions[cross]

    def get_asset_spec(self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None) -> dg.AssetSpec:
        cache_key = (id(manifest), unique_id, project is None)
        if (cached := self._specs.get(cache_key)) is None:
            self._manifests.setdefault(id(manifest), manifest)
            cached = self._specs[cache_key] = self._asset_spec(manifest, unique_id, project)
        return cached

    def _seed_key_of_source_key(self, manifest: Mapping[str, Any], project: DbtProject | None) -> dict:
        """source asset key -> seed asset key, for the sources a seed loads."""
        if (keys := self._seed_keys.get(id(manifest))) is None:
            keys = self._seed_keys[id(manifest)] = {
                self.get_asset_spec(manifest, source, project).key: self.get_asset_spec(manifest, seed, project).key
                for source, seed in self.seed_of_source.items()
            }
        return keys

    def seed_deps(self, manifest: Mapping[str, Any], spec: dg.AssetSpec, project: DbtProject | None) -> dict:
        """The spec's deps with a seed-fed source replaced by its seed: `{"deps": [...]}`, or {} when it reads none.

        dbt knows no edge from a seed to the models reading a source over the seed's table; in the graph the seed is
        their parent instead of the source, which then is no asset of its own (dagster-dbt refuses a source and a
        seed with one key). Deduplicated: a model may also `ref()` the seed."""
        if not self.seed_of_source or not spec.deps:  # seeds and sources have no deps: no recursion from here
            return {}
        remap = self._seed_key_of_source_key(manifest, project)
        if not any(dep.asset_key in remap for dep in spec.deps):
            return {}
        deps: dict[dg.AssetKey, dg.AssetDep] = {}
        for dep in spec.deps:
            key = remap.get(dep.asset_key)
            deps.setdefault(key or dep.asset_key, dg.AssetDep(key) if key else dep)
        return {"deps": list(deps.values())}

    def _asset_spec(self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        if unique_id in self.seed_of_source:
            # No asset (its readers depend on the seed): a key of its own, as dagster-dbt refuses a source and a seed
            # with one key, which is what a seed in schema `x` and a source named `x` get by default.
            return spec.replace_attributes(key=spec.key.with_prefix(SEED_FED_SOURCE_PREFIX))
        props = self.get_resource_props(manifest, unique_id)
        group = group_from_path(props)
        owners = owners_from_meta(props)
        return spec.replace_attributes(  # one copy of the spec: a copy re-validates its metadata (bench P1)
            **self.seed_deps(manifest, spec, project),
            **({"group_name": group} if group else {}),
            **({"owners": owners} if owners else {}),
            **({"tags": {**spec.tags, **PARTITIONED_TAG}} if unique_id in self.partitioned else {}),
            # Rebuilt when anything upstream (a raw partition, a seed) changes: see pipeline/automation/conditions.
            automation_condition=(
                on_seed_change() if props.get("resource_type") == "seed" else self._condition(manifest, unique_id)
            ),
        )
