"""Activation assets: one per declared sync, its destination object, and a Slack run summary."""

import time
from collections.abc import Iterator

import dagster as dg

from ..external import destination_spec
from ..resources import CrmResource, SlackResource, WarehouseResource
from ..settings import WAREHOUSE_POOL, Settings
from .crm import UpsertSummary, post_batch, upsert_inputs
from .gates import blast_radius_refusal, describe, gather, input_refusals
from .outbox import Batch, DiffCounts, run_sync
from .syncs import ResolvedSync, load_syncs, resolve_syncs
from .transport import RetryingSender

ACTIVATION_GROUP = "activation"
DESTINATION_KEYS = {"crm_contacts": dg.AssetKey(["crm", "contacts"])}


class SyncConfig(dg.Config):
    """Run config of a sync asset."""

    full_resync: bool = False  # send every record again, whatever the state says (no blast-radius limit)
    dry_run: bool = False  # compute the diff, record counts and a sample in metadata, send nothing
    force: bool = False  # send despite failed upstream checks, stale input or the blast-radius limit


def build_sync_asset(sync: ResolvedSync) -> dg.AssetsDefinition:
    spec = sync.spec

    @dg.asset(
        name=spec.name,
        description=f"{spec.description}\n\nReads `{spec.model}`, {spec.mode}s into `{spec.destination}`; sends only "
        "what changed since the last acknowledged send (state and outbox in the warehouse's `activation` schema).",
        group_name=ACTIVATION_GROUP,
        kinds={"python", "http"},
        deps=[sync.model_key],
        # Reads the model and writes the sync's state and outbox: a warehouse writer.
        pool=WAREHOUSE_POOL,
        metadata={
            "model": spec.model,
            "destination": spec.destination,
            "mode": spec.mode,
            "fields": dg.MetadataValue.json(spec.fields),
        },
    )
    def _sync(
        context: dg.AssetExecutionContext, config: SyncConfig, warehouse: WarehouseResource, crm: CrmResource
    ) -> dg.MaterializeResult:
        started = time.monotonic()
        summary = UpsertSummary()
        sender = RetryingSender(policy=crm.retry_policy())
        reasons = input_refusals(gather(context.instance, sync.model_key, sync.upstream, sync.checks), spec.model)
        if reasons and not config.force:
            raise dg.Failure(describe(reasons), metadata={"refusals": dg.MetadataValue.json(reasons)})
        for reason in reasons:
            context.log.warning(f"Forced past: {reason}")

        def approve(counts: DiffCounts, state_rows: int) -> None:
            # A full resync changes everything by design: asking for it is the confirmation.
            exempt = config.force or config.full_resync
            refusal = None if exempt else blast_radius_refusal(counts, state_rows, spec.max_change_share)
            if refusal:
                raise dg.Failure(describe([refusal]), metadata={"planned": counts.planned, "state_rows": state_rows})

        def to_payload(rows: list[dict]) -> dict:
            return {"inputs": list(upsert_inputs(rows, spec.primary_key, spec.fields, crm.id_property))}

        with warehouse.connect() as conn, crm.client() as client:

            def send(batch: Batch) -> None:
                summary.add(post_batch(client, batch.payload, batch.idempotency_key, sender), len(batch.record_keys))

            outcome = run_sync(
                conn,
                spec,
                sync.relation,
                context.run_id,
                to_payload,
                crm.batch_size,
                send,
                full_resync=config.full_resync,
                approve=approve,
                dry_run=config.dry_run,
            )
        duration = time.monotonic() - started
        counts = outcome.counts
        if config.dry_run:
            context.log.info(
                f"Dry run: would send {counts.planned} records ({counts.adds} new, {counts.changes} changed)"
            )
            return dg.MaterializeResult(
                metadata={
                    "dry_run": True,
                    "planned": counts.planned,
                    "adds": counts.adds,
                    "changes": counts.changes,
                    "deletes": counts.deletes,
                    "unchanged": counts.unchanged,
                    "sent": 0,
                    "sample": dg.MetadataValue.json(outcome.sample),
                }
            )
        context.log.info(
            f"{spec.destination}: {counts.adds} new, {counts.changes} changed, {counts.unchanged} unchanged;"
            f" sent {summary.sent} records in {summary.batches} batches"
            + (f" ({outcome.resent} left pending by an earlier run)" if outcome.resent else "")
        )
        return dg.MaterializeResult(
            metadata={
                "planned": counts.planned,
                "adds": counts.adds,
                "changes": counts.changes,
                "deletes": counts.deletes,
                "unchanged": counts.unchanged,
                "sent": summary.sent,
                "created": summary.created,
                "updated": summary.updated,
                "batches": summary.batches,
                "resent_batches": outcome.resent,
                "retries": sender.retries,
                "duration_seconds": round(duration, 3),
                "records_per_second": round(summary.sent / duration, 1) if duration else 0.0,
                "destination_url": dg.MetadataValue.url(crm.base_url),
            }
        )

    return _sync


def destination_specs(syncs: list[ResolvedSync], crm_url: str) -> list[dg.AssetSpec]:
    return [
        destination_spec(
            DESTINATION_KEYS[s.spec.destination],
            upstream=dg.AssetKey([s.spec.name]),
            description="Contacts in the CRM (HubSpot CRM v3 shape), written by the contacts sync.",
            url=f"{crm_url}/crm/v3/objects/contacts",
        )
        for s in syncs
    ]


def summary_text(results: dict[str, dict]) -> str:
    lines = ["*Activation run summary*"]
    for name, meta in sorted(results.items()):
        if not meta:
            lines.append(f"• `{name}`: not materialized yet")
            continue
        lines.append(
            f"• `{name}`: {meta.get('sent', 0)} sent ({meta.get('created', 0)} created, "
            f"{meta.get('updated', 0)} updated) in {meta.get('batches', 0)} batches, "
            f"{meta.get('duration_seconds', 0)} s"
        )
    return "\n".join(lines)


def build_slack_summary_asset(syncs: list[ResolvedSync]) -> dg.AssetsDefinition:
    sync_keys = [dg.AssetKey([s.spec.name]) for s in syncs]

    @dg.asset(
        name="slack_run_summary",
        description="Posts the latest sync results to the Slack incoming webhook (SLACK_WEBHOOK_URL); "
        "skipped (posted: 0, with the reason), not failed, when no webhook is configured.",
        group_name=ACTIVATION_GROUP,
        kinds={"slack"},
        deps=sync_keys,
    )
    def _slack(context: dg.AssetExecutionContext, slack: SlackResource) -> Iterator[dg.MaterializeResult]:
        if not slack.enabled:
            # Recorded (posted: 0) rather than left unmaterialized: a backfill counts an asset it asked for and
            # did not get as failed, and "Materialize all" must succeed without Slack configured.
            message = "Slack summary skipped: SLACK_WEBHOOK_URL is not set (see .env.example)"
            context.log.warning(message)
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


def activation_defs(
    settings: Settings, manifest: dict, key_of, extra_checks: dict[dg.AssetKey, list[str]] | None = None
) -> dg.Definitions:
    syncs = resolve_syncs(load_syncs(), manifest, key_of, extra_checks)
    if not syncs:
        return dg.Definitions()
    return dg.Definitions(
        assets=[
            *(build_sync_asset(s) for s in syncs),
            *destination_specs(syncs, settings.crm_url),
            build_slack_summary_asset(syncs),
        ]
    )
