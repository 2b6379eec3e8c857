"""Typed view of syncs.yaml, resolved against the loaded dbt manifest."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from ..settings import read_yaml

SYNCS_PATH = Path(__file__).with_name("syncs.yaml")
DESTINATIONS = ("crm_contacts", "webhook")
MODES = ("upsert", "mirror")

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
    #: Refuse to send when more than this share of the records would change at once (unless forced).
    max_change_share: float = 0.5
    #: webhook destination: the path under WEBHOOK_URL the batches are posted to (default: /<sync name>).
    path: str = ""
    #: who answers for the sync (an email or `team:name`); its failure alerts are routed to them
    owner: str | None = None

    @property
    def destination_path(self) -> str:
        return self.path or f"/{self.name}"

    @property
    def columns(self) -> list[str]:
        """Model columns the sync reads: the key first, then every mapped field."""
        return [self.primary_key, *(c for c in self.fields if c != self.primary_key)]


@dataclass(frozen=True)
class ResolvedSync:
    spec: SyncSpec
    model_key: dg.AssetKey
    relation: str
    #: Everything upstream of the model, and the checks on the model and upstream: what the gates look at.
    upstream: frozenset[dg.AssetKey] = frozenset()
    checks: frozenset[dg.AssetCheckKey] = frozenset()


def upstream_ids(manifest: Mapping[str, Any], unique_id: str) -> set[str]:
    parents = manifest.get("parent_map", {})
    seen: set[str] = set()
    todo = list(parents.get(unique_id, []))
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(parents.get(node, []))
    return seen


def gate_scope(
    manifest: Mapping[str, Any], unique_id: str, asset_key_of: Any, extra_checks: Mapping[dg.AssetKey, list[str]]
) -> tuple[frozenset[dg.AssetKey], frozenset[dg.AssetCheckKey]]:
    """The model's upstream assets (from the manifest's lineage) and every check on it or them: dbt tests
    (as dagster-dbt names them: the test's name, on the node it is attached to) plus `extra_checks` (e.g. the
    landing contract check on each raw table)."""
    ids = upstream_ids(manifest, unique_id)
    upstream = frozenset(asset_key_of(i) for i in ids if not i.startswith("test."))
    scope = {unique_id, *ids}
    checks = {
        dg.AssetCheckKey(asset_key_of(node["attached_node"]), node["name"])
        for node in manifest.get("nodes", {}).values()
        if node.get("resource_type") == "test" and node.get("attached_node") in scope
    }
    checks |= {dg.AssetCheckKey(key, name) for key, names in extra_checks.items() if key in upstream for name in names}
    return upstream, frozenset(checks)


def load_syncs(path: Path = SYNCS_PATH) -> list[SyncSpec]:
    document = read_yaml(path) or {}
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
            max_change_share=float(s.get("max_change_share", 0.5)),
            path=str(s.get("path") or ""),
            owner=s.get("owner"),
        )
        if spec.destination not in DESTINATIONS or spec.mode not in MODES or not spec.fields:
            raise ValueError(
                f"{path}: sync {name} needs destination in {DESTINATIONS}, mode in {MODES} and at least one field"
            )
        syncs.append(spec)
    return syncs


def resolve_syncs(
    specs: list[SyncSpec],
    manifest: Mapping[str, Any],
    asset_key_of: Any,
    extra_checks: Mapping[dg.AssetKey, list[str]] | None = None,
) -> list[ResolvedSync]:
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
        upstream, checks = gate_scope(manifest, node["unique_id"], asset_key_of, extra_checks or {})
        resolved.append(ResolvedSync(spec, asset_key_of(node["unique_id"]), node["relation_name"], upstream, checks))
    return resolved
