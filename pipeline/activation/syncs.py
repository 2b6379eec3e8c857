"""Typed view of syncs.yaml, resolved against the loaded dbt manifest."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

SYNCS_PATH = Path(__file__).with_name("syncs.yaml")
DESTINATIONS = ("crm_contacts",)
MODES = ("upsert",)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncSpec:
    name: str
    description: str
    model: str
    destination: str
    primary_key: str
    mode: str
    fields: dict[str, str]

    @property
    def columns(self) -> list[str]:
        """Model columns the sync reads: the key first, then every mapped field."""
        return [self.primary_key, *(c for c in self.fields if c != self.primary_key)]


@dataclass(frozen=True)
class ResolvedSync:
    spec: SyncSpec
    model_key: dg.AssetKey
    relation: str


def load_syncs(path: Path = SYNCS_PATH) -> list[SyncSpec]:
    document = yaml.safe_load(path.read_text()) or {}
    syncs = []
    for name, s in (document.get("syncs") or {}).items():
        spec = SyncSpec(
            name=name,
            description=s.get("description", ""),
            model=s["model"],
            destination=s["destination"],
            primary_key=s["primary_key"],
            mode=s.get("mode", "upsert"),
            fields={str(k): str(v) for k, v in (s.get("fields") or {}).items()},
        )
        if spec.destination not in DESTINATIONS or spec.mode not in MODES or not spec.fields:
            raise ValueError(
                f"{path}: sync {name} needs destination in {DESTINATIONS}, mode in {MODES} and at least one field"
            )
        syncs.append(spec)
    return syncs


def resolve_syncs(specs: list[SyncSpec], manifest: Mapping[str, Any], asset_key_of: Any) -> list[ResolvedSync]:
    """Attach each sync to its model's asset key and relation; syncs whose model is absent are dropped."""
    models = {
        node["name"]: node
        for node in manifest.get("nodes", {}).values()
        if node.get("resource_type") in ("model", "snapshot", "seed")
    }
    resolved = []
    for spec in specs:
        node = models.get(spec.model)
        if node is None:
            log.warning(
                "Sync %s reads dbt model %s, which this dbt project does not have: sync left out", spec.name, spec.model
            )
            continue
        resolved.append(ResolvedSync(spec, asset_key_of(node["unique_id"]), node["relation_name"]))
    return resolved
