"""Activation assets: one per declared sync, its destination object, and a Slack run summary."""

from collections.abc import Iterator
from typing import Protocol

import dagster as dg

from ..automation.conditions import on_upstream_change
from ..automation.retries import TRANSIENT_RETRY
from ..core.resources import SlackResource
from ..core.settings import WAREHOUSE_POOL, Settings
from . import destinations
from .destinations import HttpDestinationResource
from .gates import gather
from .steps import Planned, Sent, SyncConfig, acknowledge_sync, plan_sync, send_pool, send_sync
from .syncs import ResolvedSync, load_syncs, resolve_syncs

ACTIVATION_GROUP = "activation"


def build_sync_asset(sync: ResolvedSync, depth: int = 1) -> dg.AssetsDefinition:
    """The sync as one asset of three steps (see `outbox`): plan and acknowledge in the `warehouse` pool, send in
    the sync's own pool, so no raw load or dbt build waits while the sync talks HTTP. `depth`: levels from the raw
    tables down to this sync (for its automation condition). Run config (`SyncConfig`) is the asset's, as for any
    asset: `ops: {<sync>: {config: {dry_run: true}}}`."""
    spec = sync.spec
    kind = destinations.get(spec.destination)
    resource_key = kind.resource_key

    # Op definitions are named after the sync (one code location holds several syncs); in the graph they are
    # plan / send / acknowledge, so the steps read `<sync>.plan` and so on.
    @dg.op(
        name=f"{spec.name}__plan",
        ins={"model": dg.In(dg.Nothing)},
        pool=WAREHOUSE_POOL,  # reads the model, writes the outbox
        required_resource_keys={"warehouse", resource_key},
        retry_policy=TRANSIENT_RETRY,
    )
    def plan(context: dg.OpExecutionContext, config: SyncConfig) -> Planned:
        facts = gather(context.instance, sync.model_key, sync.upstream, sync.checks)
        resource: HttpDestinationResource = getattr(context.resources, resource_key)
        return plan_sync(sync, context.resources.warehouse, resource, context.run_id, facts, config, context.log)

    @dg.op(
        name=f"{spec.name}__send",
        pool=send_pool(spec.name),  # HTTP only: never the warehouse's slot
        required_resource_keys={resource_key},
        retry_policy=TRANSIENT_RETRY,
    )
    def send(context: dg.OpExecutionContext, planned: Planned) -> Sent:
        return send_sync(planned, spec, getattr(context.resources, resource_key))

    @dg.op(
        name=f"{spec.name}__acknowledge",
        out=dg.Out(dg.Nothing),
        pool=WAREHOUSE_POOL,  # writes the state
        required_resource_keys={"warehouse", resource_key},
        retry_policy=TRANSIENT_RETRY,
    )
    def acknowledge(context: dg.OpExecutionContext, planned: Planned, sent: Sent) -> None:
        resource: HttpDestinationResource = getattr(context.resources, resource_key)
        warehouse = context.resources.warehouse
        _, url = kind.describe(spec, resource)  # the object's URL (e.g. the CRM's contacts), not the API's base
        context.add_output_metadata(acknowledge_sync(planned, sent, spec, warehouse, url, context.log))

    @dg.graph_asset(
        name=spec.name,
        description=f"{spec.description}\n\nReads `{spec.model}`, {spec.mode}s into `{spec.destination}`; sends only "
        "what changed since the last acknowledged send (state, outbox and rejected records in the warehouse's "
        "`activation` schema). Steps: plan (warehouse), send (HTTP, no warehouse), acknowledge (warehouse).",
        ins={"model": dg.AssetIn(key=sync.model_key, dagster_type=dg.Nothing)},
        config=dg.ConfigMapping(
            config_schema=SyncConfig.to_config_schema(), config_fn=lambda config: {"plan": {"config": config}}
        ),
        group_name=ACTIVATION_GROUP,
        owners=[spec.owner] if spec.owner else None,
        kinds={"python", "http"},
        automation_condition=on_upstream_change(depth),
        metadata={
            "model": spec.model,
            "destination": spec.destination,
            "mode": spec.mode,
            "fields": dg.MetadataValue.json(spec.fields),
        },
    )
    def _sync(model):
        planned = plan.alias("plan")(model)
        return acknowledge.alias("acknowledge")(planned, send.alias("send")(planned))

    return _sync


def summary_text(results: dict[str, dict]) -> str:
    """One line per sync: the diff, what was sent, refused and skipped, from its latest materialization."""
    lines = ["*Activation run summary*"]
    for name, meta in sorted(results.items()):
        if not meta:
            lines.append(f"• `{name}`: not materialized yet")
            continue
        diff = (
            f"{meta.get('adds', 0)} new, {meta.get('changes', 0)} changed, {meta.get('deletes', 0)} gone,"
            f" {meta.get('unchanged', 0)} unchanged"
        )
        if meta.get("dry_run"):
            lines.append(f"• `{name}` (dry run): {diff}; nothing sent")
            continue
        line = f"• `{name}`: {diff} → {meta.get('sent', 0)} sent in {meta.get('batches', 0)} batches"
        if meta.get("failed") or meta.get("skipped"):
            line += f" ({meta.get('failed', 0)} refused by the destination, {meta.get('skipped', 0)} still refused)"
        lines.append(f"{line}, {meta.get('duration_seconds', 0)} s")
    return "\n".join(lines)


def build_slack_summary_asset(syncs: list[ResolvedSync], depth: int = 1) -> dg.AssetsDefinition:
    sync_keys = [dg.AssetKey([s.spec.name]) for s in syncs]

    @dg.asset(
        name="slack_run_summary",
        description="Posts the latest sync results to the Slack incoming webhook (SLACK_WEBHOOK_URL); "
        "skipped (posted: 0, with the reason), not failed, when no webhook is configured.",
        group_name=ACTIVATION_GROUP,
        kinds={"slack"},
        deps=sync_keys,
        automation_condition=on_upstream_change(depth),
        retry_policy=TRANSIENT_RETRY,
    )
    def _slack(context: dg.AssetExecutionContext, slack: SlackResource) -> Iterator[dg.MaterializeResult]:
        if not slack.enabled:
            # Recorded (posted: 0) rather than left unmaterialized: a backfill counts an asset it asked for and
            # did not get as failed, and "Materialize all" must succeed without Slack configured.
            message = "Slack summary skipped: SLACK_WEBHOOK_URL is not set (see .env.example)"
            context.log.info(message)  # the default on a laptop: no warning in every run
            yield dg.MaterializeResult(metadata={"posted": 0, "skipped_reason": message})
            return
        results = {}
        for key in sync_keys:
            event = context.instance.get_latest_materialization_event(key)
            mat = event.asset_materialization if event else None
            results[key.to_user_string()] = {k: v.value for k, v in mat.metadata.items()} if mat else {}
        text = summary_text(results)
        slack.post({"text": text})
        context.log.info("Posted the run summary to Slack")
        yield dg.MaterializeResult(
            metadata={"posted": 1, "syncs_reported": len(results), "message": dg.MetadataValue.md(text)}
        )

    return _slack


class DbtGraph(Protocol):
    """What activation needs of the dbt stage (the transformation stage's `DbtStage` is one): the manifest, the asset
    key of a dbt node, and how deep the dbt graph is."""

    manifest: dict
    depth: int

    def key_of(self, unique_id: str) -> dg.AssetKey: ...


def activation_defs(
    settings: Settings, dbt: DbtGraph, extra_checks: dict[dg.AssetKey, list[str]] | None = None
) -> dg.Definitions:
    """The sync assets, the objects they write (external assets) and the Slack summary, with every registered
    destination type's resource (so run config and tests name them whatever syncs.yaml declares)."""
    syncs = resolve_syncs(load_syncs(), dbt.manifest, dbt.key_of, extra_checks)
    resources = destinations.resources(settings)
    if not syncs:
        return dg.Definitions(resources=resources)
    depth = dbt.depth
    objects = []
    for sync in syncs:
        kind = destinations.get(sync.spec.destination)
        objects.append(kind.external_spec(sync.spec, resources[kind.resource_key]))
    return dg.Definitions(
        assets=[
            *(build_sync_asset(s, depth + 1) for s in syncs),
            *objects,
            build_slack_summary_asset(syncs, depth + 2),
        ],
        resources=resources,
    )
