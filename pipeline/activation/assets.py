"""Activation assets: one per declared sync, its destination object, and a Slack run summary."""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import dagster as dg
import httpx

from ..automation.conditions import on_upstream_change
from ..automation.retries import TRANSIENT_RETRY
from ..core.external import destination_spec
from ..core.resources import CrmResource, HttpDestinationResource, SlackResource, WarehouseResource, WebhookResource
from ..core.settings import WAREHOUSE_POOL, Settings
from ..core.transport import RetryingSender
from .destinations import CrmDestination, WebhookDestination
from .gates import INPUT_ACTION, blast_radius_refusal, describe, gather, input_refusals
from .outbox import REJECTED, Destination, DiffCounts, SyncOutcome, run_sync
from .syncs import ResolvedSync, SyncSpec, load_syncs, relation_problem, resolve_syncs

ACTIVATION_GROUP = "activation"
#: destination -> the resource that reaches it
DESTINATION_RESOURCES = {"crm_contacts": "crm", "webhook": "webhook"}


def destination_key(spec: SyncSpec) -> dg.AssetKey:
    if spec.destination == "crm_contacts":
        return dg.AssetKey(["crm", "contacts"])
    return dg.AssetKey(["webhook", spec.destination_path.strip("/").replace("/", "__") or spec.name])


class SyncConfig(dg.Config):
    """Run config of a sync asset."""

    full_resync: bool = False  # send every record again, whatever the state says (no blast-radius limit)
    dry_run: bool = False  # compute the diff, record counts and a sample in metadata, send nothing
    force: bool = False  # send despite failed upstream checks, stale input or the blast-radius limit


@contextmanager
def open_destination(
    spec: SyncSpec, resource: HttpDestinationResource, sender: RetryingSender
) -> Iterator[Destination]:
    """The sync's destination over one pooled client, closed when the sync is done."""
    with resource.client() as client:
        if isinstance(resource, CrmResource):
            yield CrmDestination(
                client, sender, spec, resource.id_property, resource.batch_size, resource.max_concurrency
            )
        elif isinstance(resource, WebhookResource):
            yield WebhookDestination(
                client,
                sender,
                spec,
                spec.destination_path,
                resource.secrets(),
                resource.batch_size,
                resource.max_concurrency,
            )
        else:
            raise TypeError(f"no destination for resource {type(resource).__name__}")


def sync_metadata(outcome: SyncOutcome, duration: float, retries: int) -> dict[str, Any]:
    """Planned / sent / skipped / failed counts, batches and speed, for the UI to plot."""
    counts, deliveries = outcome.counts, outcome.deliveries
    sent = sum(d.accepted for d in deliveries)
    return {
        "planned": counts.planned,
        "adds": counts.adds,
        "changes": counts.changes,
        "deletes": counts.deletes,
        "unchanged": counts.unchanged,
        "sent": sent,
        "created": sum(d.created for d in deliveries),
        "updated": sum(d.updated for d in deliveries),
        "deleted": sum(d.deleted for d in deliveries),
        "failed": sum(len(d.rejected) for d in deliveries),
        "skipped": counts.skipped,
        "batches": len(deliveries),
        "resent_batches": len(outcome.resent),
        "retries": retries,
        "duration_seconds": round(duration, 3),
        "records_per_second": round(sent / duration, 1) if duration else 0.0,
    }


def permanent(status_code: int) -> bool:
    """A client error other than 429: retrying the same request cannot succeed."""
    return 400 <= status_code < 500 and status_code != 429


def build_sync_asset(sync: ResolvedSync, depth: int = 1) -> dg.AssetsDefinition:
    """`depth`: levels from the raw tables down to this sync (for its automation condition)."""
    spec = sync.spec
    resource_key = DESTINATION_RESOURCES[spec.destination]

    @dg.asset(
        name=spec.name,
        description=f"{spec.description}\n\nReads `{spec.model}`, {spec.mode}s into `{spec.destination}`; sends only "
        "what changed since the last acknowledged send (state, outbox and rejected records in the warehouse's "
        "`activation` schema).",
        group_name=ACTIVATION_GROUP,
        owners=[spec.owner] if spec.owner else None,
        kinds={"python", "http"},
        deps=[sync.model_key],
        # Reads the model and writes the sync's state and outbox: a warehouse writer.
        pool=WAREHOUSE_POOL,
        required_resource_keys={"warehouse", resource_key},
        automation_condition=on_upstream_change(depth),
        retry_policy=TRANSIENT_RETRY,
        metadata={
            "model": spec.model,
            "destination": spec.destination,
            "mode": spec.mode,
            "fields": dg.MetadataValue.json(spec.fields),
        },
    )
    def _sync(context: dg.AssetExecutionContext, config: SyncConfig) -> dg.MaterializeResult:
        warehouse: WarehouseResource = context.resources.warehouse
        started = time.monotonic()
        resource: HttpDestinationResource = getattr(context.resources, resource_key)
        sender = RetryingSender(policy=resource.retry_policy())
        reasons = input_refusals(gather(context.instance, sync.model_key, sync.upstream, sync.checks), spec.model)
        if reasons and not config.force:
            raise dg.Failure(
                describe(reasons, INPUT_ACTION),
                metadata={"refusals": dg.MetadataValue.json(reasons)},
                allow_retries=False,
            )
        for reason in reasons:
            context.log.warning(f"Forced past: {reason}")

        def approve(counts: DiffCounts, state_rows: int) -> None:
            # A full resync changes everything by design: asking for it is the confirmation.
            exempt = config.force or config.full_resync
            refusal = None if exempt else blast_radius_refusal(counts, state_rows, spec.max_change_share)
            if refusal:
                raise dg.Failure(
                    describe([refusal]),
                    metadata={"planned": counts.planned, "state_rows": state_rows},
                    allow_retries=False,
                )

        with warehouse.connect() as conn, open_destination(spec, resource, sender) as destination:
            unreadable = relation_problem(conn, sync, warehouse.path)
            if unreadable:
                raise dg.Failure(unreadable, allow_retries=False)
            try:
                outcome = run_sync(
                    conn,
                    spec,
                    sync.relation,
                    context.run_id,
                    destination,
                    full_resync=config.full_resync,
                    approve=approve,
                    dry_run=config.dry_run,
                )
            except httpx.HTTPStatusError as exc:
                if not permanent(exc.response.status_code):
                    raise  # 5xx after the transport's own retries: the step's retry policy tries again later
                # 4xx (not 429): bad credentials, a wrong URL, a refused signature: waiting will not help.
                raise dg.Failure(
                    f"{spec.destination} refused the sync: {exc}. The batch stays pending in the outbox and is sent"
                    " first by the next run.",
                    allow_retries=False,
                ) from exc
            rejected = conn.execute(
                f"SELECT record_key, error FROM {REJECTED} WHERE sync_name = ? AND plan_id = ? ORDER BY record_key"
                " LIMIT 20",
                [spec.name, context.run_id],
            ).fetchall()
        counts = outcome.counts
        if config.dry_run:
            context.log.info(
                f"Dry run: would send {counts.planned} records ({counts.adds} new, {counts.changes} changed,"
                f" {counts.deletes} gone{'' if spec.mode == 'mirror' else ', not deleted in upsert mode'})"
            )
            return dg.MaterializeResult(
                metadata={
                    "dry_run": True,
                    "planned": counts.planned,
                    "adds": counts.adds,
                    "changes": counts.changes,
                    "deletes": counts.deletes,
                    "unchanged": counts.unchanged,
                    "skipped": counts.skipped,
                    "sent": 0,
                    "sample": dg.MetadataValue.json(outcome.sample),
                }
            )
        metadata = sync_metadata(outcome, time.monotonic() - started, sender.retries)
        context.log.info(
            f"{spec.destination}: {counts.adds} new, {counts.changes} changed, {counts.deletes} gone,"
            f" {counts.unchanged} unchanged; sent {metadata['sent']} records in {metadata['batches']} batches"
            + (f" ({len(outcome.resent)} left pending by an earlier run)" if outcome.resent else "")
        )
        if metadata["failed"]:
            context.log.warning(
                f"{metadata['failed']} records refused by {spec.destination} (kept in {REJECTED}, retried when they"
                f" change): " + "; ".join(f"{key}: {error}" for key, error in rejected[:5])
            )
        return dg.MaterializeResult(
            metadata={
                **metadata,
                "rejected_sample": dg.MetadataValue.json([{"key": k, "error": e} for k, e in rejected]),
                "rejected_table": REJECTED,
                "destination_url": dg.MetadataValue.url(f"{resource.base_url}"),
            }
        )

    return _sync


def destination_specs(syncs: list[ResolvedSync], crm_url: str, webhook_url: str) -> list[dg.AssetSpec]:
    specs = []
    for s in syncs:
        if s.spec.destination == "crm_contacts":
            description = "Contacts in the CRM (HubSpot CRM v3 shape), written by the contacts sync."
            url = f"{crm_url}/crm/v3/objects/contacts"
        else:
            description = f"The HTTP endpoint receiving `{s.spec.name}`'s signed batches."
            url = f"{webhook_url}{s.spec.destination_path}"
        specs.append(destination_spec(destination_key(s.spec), dg.AssetKey([s.spec.name]), description, url))
    return specs


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
    syncs = resolve_syncs(load_syncs(), dbt.manifest, dbt.key_of, extra_checks)
    depth = dbt.depth
    if not syncs:
        return dg.Definitions()
    return dg.Definitions(
        assets=[
            *(build_sync_asset(s, depth + 1) for s in syncs),
            *destination_specs(syncs, settings.crm_url, settings.webhook_url),
            build_slack_summary_asset(syncs, depth + 2),
        ]
    )
