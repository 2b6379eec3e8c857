"""Typed view of syncs.yaml, resolved against the loaded dbt manifest.

The file is checked whole when the definitions load, every problem reported at once as file:line. It names the
dbt project it is written for (`dbt_project:`, the `name` in that project's dbt_project.yml): with that project
loaded, a sync whose model the project lacks is a load error at the sync's line (a typo, a renamed model); with
another project loaded (DBT_PROJECT_DIR pointing at another team's), the file's syncs do not apply and a warning
says so, so any dbt project loads under the default settings and nothing is dropped silently.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb

from ..core.config_files import ConfigFileError, MarkedDict, Problems, load_marked, shown_path
from . import destinations

SYNCS_PATH = Path(__file__).with_name("syncs.yaml")
MODES = ("upsert", "mirror")
FILE_KEYS = ("dbt_project", "syncs")
#: the keys of every sync; each destination type adds its own (see `destinations`)
SYNC_KEYS = ("description", "model", "destination", "primary_key", "fields", "mode", "owner", "max_change_share")
#: A sync is an asset named after it.
SYNC_NAME = (re.compile(r"[A-Za-z_][A-Za-z0-9_]*"), "a letter or _, then letters, digits or _ (it names an asset)")
WHAT_TO_DO = "fix the file and reload the code location; the comments at its top describe each key"

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
    #: the destination type's own keys (webhook: `path`), each checked by the type
    options: dict[str, Any] = field(default_factory=dict)
    #: who answers for the sync (an email or `team:name`); its failure alerts are routed to them
    owner: str | None = None
    #: the dbt project (its dbt_project.yml `name`) the declaring file is written for; None: any project
    dbt_project: str | None = field(default=None, compare=False)
    #: the declaring file and the line of the sync's `model`, for errors that point there
    source: Path | None = field(default=None, compare=False)
    model_line: int = field(default=0, compare=False)

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
    """Every sync of the file, or ConfigFileError listing each problem as file:line."""
    problems = Problems(path)
    document = problems.mapping(load_marked(path), 1, "the file")
    syncs: list[SyncSpec] = []
    writers: list[SyncSpec] = []  # the syncs whose destination and its keys are valid: their objects are known
    if document is not None:
        problems.keys(document, FILE_KEYS, "the file")
        project = problems.text(document, "dbt_project", "the file")
        if "dbt_project" not in document:
            problems.add(1, "the file: `dbt_project` is required: the `name` in the dbt_project.yml the syncs are for")
        declared = problems.mapping(document.get("syncs"), document.line_of("syncs", 1), "`syncs`")
        for name in declared or {}:
            sync, known = _sync(problems, declared, name, project, path)
            if sync is not None:
                syncs.append(sync)
                if known:
                    writers.append(sync)
        _check_destinations(problems, writers, declared)
    problems.raise_if_any(WHAT_TO_DO)
    return syncs


def _sync(
    problems: Problems, declared: MarkedDict, key: Any, project: str | None, path: Path
) -> tuple[SyncSpec | None, bool]:
    """The sync, and whether its destination and the destination's own keys are valid (its object is known)."""
    name = str(key)
    where = f"sync {name}"
    spec, line = problems.entry(declared, key, where, SYNC_NAME, sync_keys())
    if spec is None:
        return None, False
    at = {key: spec.line_of(key, line) for key in SYNC_KEYS}
    destination, options = _destination(problems, spec, where, line)
    mode = spec.get("mode", "upsert")
    if mode not in MODES:
        problems.add(at["mode"], f"{where}: mode {mode!r} is not one of {', '.join(MODES)}")
    share = spec.get("max_change_share", 0.5)
    if isinstance(share, str):  # YAML 1.1 reads 1e-3 (no '.') as text
        with contextlib.suppress(ValueError):
            share = float(share)
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
        problems.add(at["max_change_share"], f"{where}: max_change_share {share!r} must be a number above 0, at most 1")
    sync = SyncSpec(
        name=name,
        description=problems.text(spec, "description", where) or "",
        model=problems.text(spec, "model", where, required=True, line=line) or "",
        destination=destination,
        primary_key=problems.text(spec, "primary_key", where, required=True, line=line) or "",
        mode=str(mode),
        fields=_fields(problems, spec, where, line),
        max_change_share=float(share) if isinstance(share, int | float) else 0.5,
        options=options or {},
        owner=problems.text(spec, "owner", where),
        dbt_project=project,
        source=path,
        model_line=at["model"],
    )
    return sync, options is not None


def sync_keys() -> tuple[str, ...]:
    """The keys a sync may have: the common ones and every registered destination type's own."""
    own = {key for kind in destinations.registered().values() for key in kind.options}
    return SYNC_KEYS + tuple(sorted(own - set(SYNC_KEYS)))


def _destination(problems: Problems, spec: MarkedDict, where: str, line: int) -> tuple[str, dict[str, Any] | None]:
    """The sync's destination and that type's own keys (webhook: `path`), each checked by the type; the keys are
    None when the destination or one of them is wrong. A key of another type is named with the types that take it
    (unknown keys are reported by `Problems.entry`)."""
    name = problems.text(spec, "destination", where, required=True, line=line)
    if name is None:
        return "", None
    try:
        kind = destinations.get(name)
    except destinations.UnknownDestinationError as exc:
        problems.add(spec.line_of("destination"), f"{where}: {exc}")
        return name, None
    valid = True
    for key in spec:
        owners = [other.name for other in destinations.registered().values() if key in other.options]
        if owners and key not in kind.options and key not in SYNC_KEYS:
            problems.add(spec.line_of(key), f"{where}: `{key}` applies to {' and '.join(owners)} destinations only")
    options: dict[str, Any] = {}
    for key, check in kind.options.items():
        value = spec.get(key)
        problem = check(value)
        if problem:
            valid = False
            shown = f"`{key}`" if value is None else f"{key} {value!r}"
            problems.add(spec.line_of(key, line), f"{where}: {shown} {problem}")
        elif value is not None:
            options[key] = value
    return name, options if valid else None


def _fields(problems: Problems, spec: MarkedDict, where: str, line: int) -> dict[str, str]:
    """Model column -> destination property; two columns cannot write one property."""
    fields = problems.mapping(spec.get("fields"), spec.line_of("fields", line), f"{where}: `fields`")
    if fields is None:
        return {}
    if not fields:
        problems.add(fields.line, f"{where}: `fields` maps no column")
    found: dict[str, str] = {}
    written: dict[str, str] = {}
    for column, prop in fields.items():
        if not isinstance(prop, str) or not prop.strip() or not isinstance(column, str):
            problems.add(fields.line_of(column), f"{where}: field {column!r} must map a column to a property name")
            continue
        if prop in written:
            problems.add(fields.line_of(column), f"{where}: {column} and {written[prop]} both write property {prop}")
        written.setdefault(prop, column)
        found[column] = prop
    return found


def _check_destinations(problems: Problems, syncs: list[SyncSpec], declared: MarkedDict | None) -> None:
    """One sync per destination object: each is one asset (its type's `asset_key`: crm/contacts, webhook/<path>)
    written by one sync."""
    seen: dict[dg.AssetKey, str] = {}
    for sync in syncs:
        target = destinations.get(sync.destination).asset_key(sync)
        if target in seen and declared is not None:
            problems.add(
                declared.line_of(sync.name),
                f"sync {sync.name}: {seen[target]} writes {target.to_user_string()} already; one sync per"
                " destination object",
            )
        seen.setdefault(target, sync.name)


def resolve_syncs(
    specs: list[SyncSpec],
    manifest: Mapping[str, Any],
    asset_key_of: Any,
    extra_checks: Mapping[dg.AssetKey, list[str]] | None = None,
) -> list[ResolvedSync]:
    """Attach each sync to its model's asset key and relation.

    Syncs written for another dbt project than the loaded one are left out, with a warning; a sync written for
    this project whose model it lacks stops the load (ConfigFileError at the sync's `model` line).
    """
    project = manifest.get("metadata", {}).get("project_name")
    models = {
        node["name"]: node
        for node in manifest.get("nodes", {}).values()
        if node.get("resource_type") in ("model", "snapshot", "seed")
    }
    foreign = [s for s in specs if s.dbt_project is not None and s.dbt_project != project]
    if foreign:
        log.warning(foreign_syncs_warning(foreign, project))
    missing = [s for s in specs if s not in foreign and s.model not in models]
    if missing:
        raise missing_models_error(missing, project, list(models))
    resolved = []
    for spec in specs:
        if spec in foreign:
            continue
        node = models[spec.model]
        upstream, checks = gate_scope(manifest, node["unique_id"], asset_key_of, extra_checks or {})
        resolved.append(ResolvedSync(spec, asset_key_of(node["unique_id"]), node["relation_name"], upstream, checks))
    return resolved


def foreign_syncs_warning(foreign: list[SyncSpec], project: str | None) -> str:
    by_file: dict[str, list[SyncSpec]] = {}
    for spec in foreign:
        by_file.setdefault(shown_path(spec.source) if spec.source else "syncs", []).append(spec)
    return "; ".join(
        f"{where} is written for dbt project {specs[0].dbt_project!r} and the loaded one is {project!r}"
        f" (DBT_PROJECT_DIR): its syncs {', '.join(s.name for s in specs)} are left out. To sync this project's"
        f" models, set `dbt_project: {project}` there and name its models"
        for where, specs in by_file.items()
    )


def missing_models_error(missing: list[SyncSpec], project: str | None, models: list[str]) -> ConfigFileError:
    """One error per declaring file, each sync at its `model` line, with the closest model the project has."""
    problems = []
    for spec in missing:
        close = difflib.get_close_matches(spec.model, models, n=1)
        hint = f"did you mean {close[0]}?" if close else "build or rename the model, or remove the sync"
        problems.append(
            (
                spec.model_line,
                f"sync {spec.name} reads model {spec.model!r}, which dbt project {project!r} lacks ({hint})",
            )
        )
    return ConfigFileError(missing[0].source or SYNCS_PATH, problems, WHAT_TO_DO)


def relation_problem(conn: duckdb.DuckDBPyConnection, sync: ResolvedSync, warehouse: str) -> str | None:
    """Why the sync cannot read its model's table, or None: the table was never built in this warehouse, or it
    lacks a column the sync reads. Waiting does not fix either, so the sync fails at once instead of retrying a
    DuckDB catalog error."""
    spec = sync.spec
    try:
        described = conn.execute(f"DESCRIBE {sync.relation}").fetchall()
    except duckdb.CatalogException:
        return (
            f"Sync {spec.name} reads dbt model {spec.model}, whose table {sync.relation} does not exist in the"
            f" warehouse {warehouse}: the model has not been built there yet. Materialize {spec.model} (with its"
            " upstream assets, or Materialize all), then this sync."
        )
    columns = {row[0].lower() for row in described}
    missing = [c for c in spec.columns if c.lower() not in columns]
    if missing:
        return (
            f"Sync {spec.name} reads column(s) {', '.join(missing)} of {spec.model} ({sync.relation}), which its"
            f" table lacks (it has {', '.join(row[0] for row in described)}): fix the sync's primary_key / fields"
            f" in {shown_path(spec.source or SYNCS_PATH)} or add the column(s) to the model."
        )
    return None
