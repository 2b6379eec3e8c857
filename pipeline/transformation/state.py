"""State-aware dbt runs: a model is built only when its code or one of its inputs changed since its last build.

What dbt sells as "state-aware orchestration", here on Dagster's own versioning (public APIs only):

- **Code version**: dagster-dbt gives every model, seed and snapshot dbt's checksum of its file as its code version;
  Dagster records it on each materialization (`dagster/code_version`).
- **Data versions**: a raw partition's is a hash of the files loaded into it (landing key and ETag, see
  `ingestion.ingest.files_version`); a model built here gets a new one per build; a model reused gets its previous
  one again. Dagster records them on each materialization (`dagster/data_version`).
- **What a model saw**: each materialization of a dbt node carries `dbt_state_inputs`, for each parent the storage id
  of its latest materialization at that time.

A parent changed since then when a materialization of it came later (outside the run that built the model) with a
data version other than the one before it for the same partition: a raw day re-loaded from the same files, or a
model reused, is no change. A model is built when it is new, its code changed, a parent changed or is built in the
same run, a parent was never materialized in Dagster (data it cannot version: always read afresh), or it opts out
(`meta: {state_aware: false}`). A model that sets dbt's `freshness.build_after` is built on new data only once that
long has passed since its last build (`updates_on: all`: only once every parent changed); a code change builds it
at once. Anything else is *reused*: not run by dbt, and recorded as a materialization with its previous data version
and `dbt_state: reused`, so freshness checks, the sync gates and the graph see it as current.

Why not Dagster's stale status (`CachingStaleStatusResolver`): it is internal, and it stops versioning a partitioned
input beyond 99 partitions (a year of landing days is more), where it compares only the latest partition's version.

Which runs are state-aware: those the schedules, sensors (declarative automation) and backfills launch, and any run
tagged `pipeline/state_aware: on`; a run a person launches on a selection builds what they selected, as does one
tagged `pipeline/state_aware: off`, and a retry (it rebuilds what the failed attempt did not finish).
`DBT_STATE_AWARE=0` turns it off everywhere.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import timedelta
from graphlib import TopologicalSorter
from typing import Any

import dagster as dg
from dagster_dbt.asset_utils import DAGSTER_DBT_UNIQUE_ID_METADATA_KEY as UNIQUE_ID_METADATA_KEY

RUN_TAG = "pipeline/state_aware"
#: tags Dagster puts on the runs its schedules, sensors and backfills launch
AUTOMATED_RUN_TAGS = ("dagster/schedule_name", "dagster/sensor_name", "dagster/backfill")
DATA_VERSION_TAG = "dagster/data_version"
CODE_VERSION_TAG = "dagster/code_version"
STATE = "dbt_state"
REASON = "dbt_state_reason"
INPUTS = "dbt_state_inputs"
BUILT_IN_RUN = "dbt_state_built_in_run"
ROW_COUNT = "dagster/row_count"
#: more materializations of one parent than this since a model's build: counted as changed without looking closer
MAX_NEW_RECORDS = 50
PERIODS = {"minute": 60, "hour": 3600, "day": 86400}


def applies(enabled: bool, run_tags: Mapping[str, str], retry: bool) -> bool:
    """Whether a run decides model by model (see the module's docstring)."""
    if not enabled or retry:
        return False
    asked = run_tags.get(RUN_TAG, "").lower()
    if asked in ("on", "off"):
        return asked == "on"
    return any(tag in run_tags for tag in AUTOMATED_RUN_TAGS)


@dataclass(frozen=True)
class BuildAfter:
    """dbt's `freshness.build_after`: build on new data at most once per `seconds`; `all`: only once every parent
    has new data."""

    seconds: float
    all_parents: bool = False

    @classmethod
    def of(cls, node: Mapping[str, Any]) -> BuildAfter | None:
        """From a manifest node's `config.freshness.build_after` (or `meta.build_after`); None when unset. A bad
        value is an error naming the model and what dbt accepts."""
        config = node.get("config") or {}
        raw = ((config.get("freshness") or {}).get("build_after")) or (config.get("meta") or {}).get("build_after")
        if not raw:
            return None
        count, period = raw.get("count"), raw.get("period")
        if not isinstance(count, int) or count < 0 or period not in PERIODS:
            raise ValueError(
                f"{node.get('unique_id')}: freshness.build_after must have a whole `count` >= 0 and a `period` of"
                f" {', '.join(PERIODS)}; got {raw}"
            )
        return cls(count * PERIODS[period], raw.get("updates_on", "any") == "all")


def opted_out(node: Mapping[str, Any]) -> bool:
    """`meta: {state_aware: false}` on the model (in its YAML or config block)."""
    for meta in (node.get("meta") or {}, (node.get("config") or {}).get("meta") or {}):
        if meta.get("state_aware") is False:
            return True
    return False


@dataclass(frozen=True)
class Node:
    """A dbt node of the step, as the decision needs it."""

    key: dg.AssetKey
    code_version: str | None
    parents: frozenset[dg.AssetKey]
    unique_id: str = ""
    #: the step's output of the node
    output_name: str = ""
    opted_out: bool = False
    build_after: BuildAfter | None = None


@dataclass
class Decision:
    """The verdict of one run: which nodes dbt builds and which are reused, each with its reason; the cursors to
    record on what is built or reused."""

    build: dict[dg.AssetKey, str] = field(default_factory=dict)
    reuse: dict[dg.AssetKey, str] = field(default_factory=dict)
    #: node -> the previous materializations reused (one per partition of the run; their data versions)
    reused_records: dict[dg.AssetKey, list[dg.EventLogRecord]] = field(default_factory=dict)
    #: parent -> storage id of its latest materialization when the run decided
    cursors: dict[dg.AssetKey, int] = field(default_factory=dict)

    def inputs_of(self, node: Node) -> str:
        """The `dbt_state_inputs` of a node built or reused by this run: each parent's cursor when the run decided
        (a parent this run builds comes later, and is known as seen by its run id: see `changed_since`)."""
        return json.dumps({p.to_user_string(): self.cursors.get(p, 0) for p in sorted(node.parents)})


def topological(nodes: Iterable[Node]) -> list[Node]:
    """Parents first (within the given nodes)."""
    by_key = {n.key: n for n in nodes}
    order = TopologicalSorter({k: [p for p in n.parents if p in by_key] for k, n in by_key.items()}).static_order()
    return [by_key[k] for k in order]


def new_data_version(run_id: str, key: dg.AssetKey) -> dg.DataVersion:
    """A built node's data version: new with every build."""
    return dg.DataVersion(hashlib.sha256(f"{run_id}/{key.to_user_string()}".encode()).hexdigest()[:20])


def _version(record: dg.EventLogRecord) -> str | None:
    materialization = record.asset_materialization
    return materialization.tags.get(DATA_VERSION_TAG) if materialization and materialization.tags else None


def _partition(record: dg.EventLogRecord) -> str | None:
    materialization = record.asset_materialization
    return materialization.partition if materialization else None


class StateReader:
    """What the instance knows of the nodes and their parents, fetched in few queries."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.instance = instance
        #: each key's latest materialization, as `latest` read it (one query per 100 keys)
        self.latest: dict[dg.AssetKey, dg.EventLogRecord] = {}
        self._changed: dict[tuple[dg.AssetKey, int, str], bool] = {}

    def read_latest(self, keys: Iterable[dg.AssetKey]) -> dict[dg.AssetKey, dg.EventLogRecord]:
        """Each key's latest materialization (keys never materialized are left out), kept for `last_builds`."""
        wanted = [k for k in dict.fromkeys(keys) if k not in self.latest]
        for start in range(0, len(wanted), 100):
            for record in self.instance.get_asset_records(wanted[start : start + 100]):
                last = record.asset_entry.last_materialization_record
                if last is not None:
                    self.latest[record.asset_entry.asset_key] = last
        return self.latest

    def latest_storage_ids(self, keys: Iterable[dg.AssetKey]) -> dict[dg.AssetKey, int]:
        """Storage id of each key's latest materialization (keys never materialized are left out)."""
        keys = list(keys)
        latest = self.read_latest(keys)
        return {k: latest[k].storage_id for k in keys if k in latest}

    def last_builds(self, key: dg.AssetKey, partitions: Sequence[str] | None) -> list[dg.EventLogRecord] | None:
        """The node's latest materialization (per partition of the run, for a partitioned one); None when one is
        missing."""
        if not partitions:
            if key in self.latest:  # read with the others (`read_latest`)
                return [self.latest[key]]
            event = self.instance.fetch_materializations(key, limit=1).records
            return list(event) or None
        records = []
        for partition in partitions:
            found = self.instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
            ).records
            if not found:
                return None
            records.append(found[0])
        return records

    def changed_since(self, parent: dg.AssetKey, cursor: int, seen: dg.EventLogRecord) -> bool:
        """Whether `parent` has data that the node's materialization `seen` (whose run decided at `cursor`) did not
        see. Asked once per (parent, cursor, run): the nodes one run built saw their common parents at one cursor."""
        latest = self.latest.get(parent)
        if latest is not None and latest.storage_id <= cursor:
            return False  # nothing of it came later
        if latest is not None and seen.run_id and latest.run_id == seen.run_id and latest.storage_id < seen.storage_id:
            # Its latest materialization came earlier in the node's own run (dbt's order, or an earlier step):
            # the node read the table after that, and so after every earlier write too.
            return False
        seen_run = seen.run_id
        asked = (parent, cursor, seen_run)
        if asked not in self._changed:
            self._changed[asked] = self._changed_since(parent, cursor, seen_run)
        return self._changed[asked]

    def _changed_since(self, parent: dg.AssetKey, cursor: int, seen_run: str) -> bool:
        later = self.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=parent, after_storage_id=cursor), limit=MAX_NEW_RECORDS + 1
        ).records
        if len(later) > MAX_NEW_RECORDS:
            return True
        for record in later:
            if seen_run and record.run_id == seen_run:
                continue  # built before the node in the same run: the node saw it (runless events have no run)
            partition = _partition(record)
            before = self.instance.fetch_materializations(
                dg.AssetRecordsFilter(
                    asset_key=parent,
                    asset_partitions=[partition] if partition is not None else None,
                    before_storage_id=record.storage_id,
                ),
                limit=1,
            ).records
            if not before or _version(before[0]) is None or _version(before[0]) != _version(record):
                return True
        return False


def decide(reader: StateReader, nodes: Sequence[Node], partitions: Sequence[str] | None, now: float) -> Decision:
    """Which of `nodes` (a step's selection) to build and which to reuse (see the module's docstring)."""
    ordered = topological(nodes)
    parents = [p for n in ordered for p in n.parents]
    reader.read_latest([*parents, *(n.key for n in ordered)])  # the nodes' own latest builds in the same queries
    decision = Decision(cursors=reader.latest_storage_ids(parents))
    for node in ordered:
        reason, reused = _verdict(reader, decision, node, partitions, now)
        if reused is None:
            decision.build[node.key] = reason
        else:
            decision.reuse[node.key] = reason
            decision.reused_records[node.key] = reused
    return decision


def _verdict(
    reader: StateReader, decision: Decision, node: Node, partitions: Sequence[str] | None, now: float
) -> tuple[str, list[dg.EventLogRecord] | None]:
    """(reason, the records reused) — records None: build it."""
    if node.opted_out:
        return "opted out (meta state_aware: false)", None
    built_here = sorted(p.to_user_string() for p in node.parents if p in decision.build)
    if built_here:
        return f"input built in this run: {', '.join(built_here)}", None
    unversioned = sorted(p.to_user_string() for p in node.parents if p not in decision.cursors)
    if unversioned:
        return f"input never materialized in Dagster (read afresh every time): {', '.join(unversioned)}", None
    records = reader.last_builds(node.key, partitions)
    if records is None:
        return "no earlier build", None
    changed: set[str] = set()
    for record in records:
        materialization = record.asset_materialization
        tags = (materialization.tags if materialization else None) or {}
        if tags.get(CODE_VERSION_TAG) != node.code_version:
            return "code changed (dbt checksum)", None
        raw = materialization.metadata.get(INPUTS) if materialization else None
        if raw is None:
            return "no recorded state (built before state-aware runs)", None
        seen = json.loads(raw.value if hasattr(raw, "value") else raw)
        for parent in node.parents:
            cursor = seen.get(parent.to_user_string())
            if cursor is None:
                return f"new input: {parent.to_user_string()}", None
            if reader.changed_since(parent, cursor, record):
                changed.add(parent.to_user_string())
    if not changed:
        return "unchanged: same code, no new input data since its last build", records
    waiting = _build_after_wait(node, records, changed, now)
    if waiting:
        return waiting, records
    return f"new data in {', '.join(sorted(changed))}", None


def _build_after_wait(node: Node, records: Sequence[dg.EventLogRecord], changed: set[str], now: float) -> str | None:
    """Why new data waits (build_after), or None to build now."""
    rule = node.build_after
    if rule is None:
        return None
    if rule.all_parents and len(changed) < len(node.parents):
        return f"waiting for every input (build_after updates_on: all): new data only in {', '.join(sorted(changed))}"
    last = max(r.timestamp for r in records)
    if now - last < rule.seconds:
        due = timedelta(seconds=round(rule.seconds - (now - last)))
        return f"new data waits for build_after ({timedelta(seconds=rule.seconds)} since the last build): due in {due}"
    return None


def step_nodes(context: dg.AssetExecutionContext, manifest: Mapping[str, Any]) -> list[Node]:
    """The dbt nodes the step selected (models, seeds, snapshots), with their code versions and parents."""
    assets_def = context.assets_def
    output_names = {key: name for name, key in assets_def.keys_by_output_name.items()}
    nodes = []
    for key in context.selected_asset_keys:
        spec = assets_def.specs_by_key[key]
        unique_id = spec.metadata.get(UNIQUE_ID_METADATA_KEY)
        node = manifest["nodes"].get(unique_id, {}) if unique_id else {}
        nodes.append(
            Node(
                key=key,
                code_version=assets_def.code_versions_by_key.get(key),
                parents=frozenset(assets_def.asset_deps.get(key, ())),
                unique_id=unique_id or "",
                output_name=output_names[key],
                opted_out=opted_out(node),
                build_after=BuildAfter.of(node) if node else None,
            )
        )
    return nodes


def plan_step(
    context: dg.AssetExecutionContext, manifest: Mapping[str, Any], enabled: bool, retry: bool, now: float
) -> tuple[Decision, dict[dg.AssetKey, Node]]:
    """The step's decision: model by model in a state-aware run, else everything selected is built (and the
    cursors are read all the same, so the next state-aware run can reuse what this one builds)."""
    nodes = step_nodes(context, manifest)
    by_key = {n.key: n for n in nodes}
    reader = StateReader(context.instance)
    if applies(enabled, context.run.tags, retry):
        partitioned = context.assets_def.partitions_def is not None  # a run's partition tags reach every step
        partitions = list(context.partition_keys) if partitioned else None
        return decide(reader, nodes, partitions, now), by_key
    why = "state-aware runs are off (DBT_STATE_AWARE)" if not enabled else "a run launched by hand builds its selection"
    if retry:
        why = "a retry rebuilds what the failed attempt did not finish"
    decision = Decision(
        build={n.key: why for n in nodes},
        cursors=reader.latest_storage_ids(p for n in nodes for p in n.parents),
    )
    return decision, by_key


@dataclass(frozen=True)
class StateMarks:
    """Puts the state on what dbt built in this run: `dbt_state: built`, the reason, the inputs' cursors, and a new
    data version."""

    decision: Decision
    nodes: Mapping[dg.AssetKey, Node]
    run_id: str

    def apply(self, key: dg.AssetKey | None, event: Any, metadata: Mapping[str, Any]) -> Any:
        """`event` (an Output of the step) with `metadata` and the state added; anything else as it is."""
        node = self.nodes.get(key) if key is not None else None
        if node is None or not isinstance(event, dg.Output):
            return event.with_metadata({**event.metadata, **metadata}) if metadata else event
        state = {STATE: "built", REASON: self.decision.build.get(key, ""), INPUTS: self.decision.inputs_of(node)}
        return dg.Output(
            event.value,
            event.output_name,
            metadata={**event.metadata, **metadata, **state},
            data_version=new_data_version(self.run_id, key),
            tags=event.tags,
        )


def read_elsewhere(context: dg.AssetExecutionContext) -> frozenset[dg.AssetKey]:
    """The step's assets that another step of the run may read: a child asset of another step (the other dbt step,
    a sync), or a check of another step (the freshness checks)."""
    layer = context.job_def.asset_layer
    mine, my_checks = set(context.selected_asset_keys), set(context.selected_asset_check_keys)
    in_run = set(layer.selected_asset_keys)

    def read_by_others(key: dg.AssetKey) -> bool:
        node = layer.asset_graph.get(key)
        return any(c in in_run and c not in mine for c in node.child_keys) or any(
            check not in my_checks for check in node.check_keys
        )

    return frozenset(key for key in mine if read_by_others(key))


def reused_events(
    decision: Decision, nodes: Mapping[dg.AssetKey, Node], read_elsewhere: AbstractSet[dg.AssetKey]
) -> Iterable[dg.Output | dg.AssetMaterialization]:
    """What a reused node records: its previous data and code versions again, `dbt_state: reused` and the reason.

    An Output (one for every partition of the run, when they share one version) for a node another step of the run
    reads, which Dagster would skip without it; a materialization per partition otherwise. An Output makes Dagster
    log a STEP_OUTPUT event besides the materialization and look up each parent's latest version for the
    provenance: twice the events and queries for what restates the previous build (bench P6: 214 reused nodes took
    1.5 s as Outputs, 0.9 s as materializations)."""
    for key, records in decision.reused_records.items():
        node = nodes[key]
        metadata = {
            STATE: "reused",
            REASON: decision.reuse[key],
            INPUTS: decision.inputs_of(node),
            **carried_over(records[-1]),
        }
        versions = {_version(r) for r in records}
        if key in read_elsewhere and len(versions) == 1 and None not in versions:
            yield dg.Output(None, node.output_name, metadata=metadata, data_version=dg.DataVersion(versions.pop()))
            continue
        for record in records:
            tags = {CODE_VERSION_TAG: node.code_version or ""}
            if _version(record) is not None:
                tags[DATA_VERSION_TAG] = _version(record)
            yield dg.AssetMaterialization(key, metadata=metadata, partition=_partition(record), tags=tags)


def carried_over(record: dg.EventLogRecord) -> dict[str, Any]:
    """What a reused node keeps from the build it reuses: its row count (the table is the same), and the run that
    built it (`dbt_state_built_in_run`), so its page still shows both."""
    materialization = record.asset_materialization
    metadata = materialization.metadata if materialization else {}
    kept: dict[str, Any] = {BUILT_IN_RUN: metadata[BUILT_IN_RUN].value if BUILT_IN_RUN in metadata else record.run_id}
    if ROW_COUNT in metadata:
        kept[ROW_COUNT] = metadata[ROW_COUNT].value
    return kept


def summary(decision: Decision) -> str:
    """The run log's account of the decision."""
    lines = [f"State-aware: {len(decision.build)} to build, {len(decision.reuse)} reused"]
    for title, verdicts in (("reused", decision.reuse), ("built", decision.build)):
        by_reason: dict[str, list[str]] = {}
        for key, reason in verdicts.items():
            by_reason.setdefault(reason, []).append(key.to_user_string())
        for reason, keys in sorted(by_reason.items()):
            shown = ", ".join(sorted(keys)[:15]) + (f" and {len(keys) - 15} more" if len(keys) > 15 else "")
            lines.append(f"- {title} ({reason}): {shown}")
    return "\n".join(lines)
