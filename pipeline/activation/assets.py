"""Activation assets: one per declared sync, its destination object, and a Slack run summary."""

import time
from collections.abc import Iterator

import dagster as dg

from ..external import destination_spec
from ..ingestion.loader import quote_ident
from ..resources import CrmResource, SlackResource, WarehouseResource
from ..settings import WAREHOUSE_POOL, Settings
from .crm import batched, send_upserts, upsert_inputs
from .syncs import ResolvedSync, load_syncs, resolve_syncs

ACTIVATION_GROUP = "activation"
DESTINATION_KEYS = {"crm_contacts": dg.AssetKey(["crm", "contacts"])}


def read_model(warehouse: WarehouseResource, sync: ResolvedSync) -> list[dict]:
    columns = ", ".join(quote_ident(c) for c in sync.spec.columns)
    with warehouse.connect(read_only=True) as conn:
        cursor = conn.execute(f"SELECT {columns} FROM {sync.relation} ORDER BY {quote_ident(sync.spec.primary_key)}")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def build_sync_asset(sync: ResolvedSync) -> dg.AssetsDefinition:
    spec = sync.spec

    @dg.asset(
        name=spec.name,
        description=f"{spec.description}\n\nReads `{spec.model}`, {spec.mode}s into `{spec.destination}`.",
        group_name=ACTIVATION_GROUP,
        kinds={"python", "http"},
        deps=[sync.model_key],
        # Reads the DuckDB file, which another process cannot do while a writer holds it.
        pool=WAREHOUSE_POOL,
        metadata={
            "model": spec.model,
            "destination": spec.destination,
            "mode": spec.mode,
            "fields": dg.MetadataValue.json(spec.fields),
        },
    )
    def _sync(context: dg.AssetExecutionContext, warehouse: WarehouseResource, crm: CrmResource):
        started = time.monotonic()
        rows = read_model(warehouse, sync)
        inputs = upsert_inputs(rows, spec.primary_key, spec.fields, crm.id_property)
        with crm.client() as client:
            summary = send_upserts(client, batched(inputs, crm.batch_size))
        duration = time.monotonic() - started
        context.log.info(
            f"Upserted {summary.sent} records into {spec.destination} in {summary.batches} batches "
            f"({summary.created} created, {summary.updated} updated)"
        )
        return dg.MaterializeResult(
            metadata={
                "rows_read": len(rows),
                "sent": summary.sent,
                "created": summary.created,
                "updated": summary.updated,
                "batches": summary.batches,
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


def activation_defs(settings: Settings, manifest: dict, key_of) -> dg.Definitions:
    syncs = resolve_syncs(load_syncs(), manifest, key_of)
    if not syncs:
        return dg.Definitions()
    return dg.Definitions(
        assets=[
            *(build_sync_asset(s) for s in syncs),
            *destination_specs(syncs, settings.crm_url),
            build_slack_summary_asset(syncs),
        ]
    )
