"""A sync's three steps as plain functions — plan, send, acknowledge (see `outbox` for why three) — and what they
decide on the way: the gates, the approval of the plan, the classification of a failed send, the metadata.

The ops in `assets` only hand them the resources, the run config and the instance's facts; everything here runs
without a Dagster context, so the unit tests call it directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import dagster as dg

from ..core.resources import WarehouseResource
from ..core.transport import Delivery, RetryingSender, TerminalHTTPError
from . import destinations
from .destinations import HttpDestinationResource
from .gates import INPUT_ACTION, UpstreamFacts, blast_radius_refusal, describe, input_refusals
from .journal import journal_path, open_journal
from .outbox import (
    REJECTED,
    Destination,
    DiffCounts,
    SyncOutcome,
    apply_acknowledged,
    outcome,
    prepare,
    rejected_sample,
    send_pending,
)
from .syncs import ResolvedSync, SyncSpec, relation_problem


class Log(Protocol):
    def info(self, msg: str) -> Any: ...
    def warning(self, msg: str) -> Any: ...


class SyncConfig(dg.Config):
    """Run config of a sync asset."""

    full_resync: bool = False  # send every record again, whatever the state says (no blast-radius limit)
    dry_run: bool = False  # compute the diff, record counts and a sample in metadata, send nothing
    force: bool = False  # send despite failed upstream checks, stale input or the blast-radius limit


def send_pool(sync: str) -> str:
    """The pool of a sync's send step: one slot (the instance's default limit), so two runs never send one sync at
    once, and the warehouse's slot is free while it sends."""
    return f"sync_{sync}"


@dataclass(frozen=True)
class Planned:
    """What the plan step hands the send and acknowledge steps (small: the batches are in the journal)."""

    plan_id: str
    journal: str
    dry_run: bool
    counts: DiffCounts
    sample: list[dict]
    seconds: float


@dataclass(frozen=True)
class Sent:
    retries: int
    seconds: float


@contextmanager
def open_destination(
    spec: SyncSpec, resource: HttpDestinationResource, sender: RetryingSender
) -> Iterator[Destination]:
    """The sync's destination (its type's, see `destinations`) over one pooled client, closed when the send is
    done."""
    with resource.client() as client:
        yield destinations.get(spec.destination).open(spec, resource, client, sender)


def input_failure(reasons: list[str], force: bool) -> dg.Failure | None:
    """The gates' verdict on the input: a failure to raise (not retried: waiting does not fix the data), or None
    when nothing is wrong or `force` overrides."""
    if not reasons or force:
        return None
    return dg.Failure(
        describe(reasons, INPUT_ACTION),
        metadata={"refusals": dg.MetadataValue.json(reasons)},
        allow_retries=False,
    )


def approval(spec: SyncSpec, config: SyncConfig) -> Callable[[DiffCounts, int], None]:
    """The plan's approval: refuses (raises a failure, nothing written) a change above the sync's blast radius,
    unless forced. A full resync changes everything by design: asking for it is the confirmation."""

    def approve(counts: DiffCounts, state_rows: int) -> None:
        exempt = config.force or config.full_resync
        refusal = None if exempt else blast_radius_refusal(counts, state_rows, spec.max_change_share)
        if refusal:
            raise dg.Failure(
                describe([refusal]),
                metadata={"planned": counts.planned, "state_rows": state_rows},
                allow_retries=False,
            )

    return approve


def plan_sync(
    sync: ResolvedSync,
    warehouse: WarehouseResource,
    resource: HttpDestinationResource,
    plan_id: str,
    facts: UpstreamFacts,
    config: SyncConfig,
    log: Log,
) -> Planned:
    """The plan step: the gates, then (holding the warehouse) apply earlier acknowledgements, diff, write the
    outbox and hand the batches to the journal."""
    started = time.monotonic()
    spec = sync.spec
    reasons = input_refusals(facts, spec.model)
    failure = input_failure(reasons, config.force)
    if failure is not None:
        raise failure
    for reason in reasons:
        log.warning(f"Forced past: {reason}")
    journal = journal_path(warehouse.path, spec.name, warehouse.journal_dir)
    with warehouse.connect() as conn, open_journal(journal) as opened:
        unreadable = relation_problem(conn, sync, warehouse.path)
        if unreadable:
            raise dg.Failure(unreadable, allow_retries=False)
        counts, sample = prepare(
            conn,
            opened,
            spec,
            sync.relation,
            plan_id,
            destinations.get(spec.destination).open(spec, resource),  # shapes the batches, sends nothing
            full_resync=config.full_resync,
            approve=approval(spec, config),
            dry_run=config.dry_run,
        )
    return Planned(plan_id, str(journal), config.dry_run, counts, sample, time.monotonic() - started)


def send_failure(exc: BaseException, spec: SyncSpec) -> dg.Failure | None:
    """A failed send as the step should end: a terminal refusal (4xx other than 429: bad credentials, a wrong URL,
    a refused signature) fails at once, not retried; None for anything else, which the step raises as it is (a
    429 / 5xx / timeout the transport's retries did not heal: the step's retry policy tries again later)."""
    if isinstance(exc, TerminalHTTPError):
        return dg.Failure(
            f"{spec.destination} refused the sync: {exc}. The batch stays pending and is sent first by the next run.",
            allow_retries=False,
        )
    return None


def send_sync(planned: Planned, spec: SyncSpec, resource: HttpDestinationResource) -> Sent:
    """The send step: deliver what the journal holds unacknowledged, journaling the acknowledgements. Holds no
    warehouse. A dry run sends nothing at all, not even what an earlier run left pending."""
    started = time.monotonic()
    if planned.dry_run:
        return Sent(retries=0, seconds=0.0)
    sender = RetryingSender(policy=resource.retry_policy())
    with open_journal(planned.journal) as journal, open_destination(spec, resource, sender) as destination:
        try:
            send_pending(journal, destination.deliver, concurrency=destination.concurrency, name=spec.name)
        except Exception as exc:
            failure = send_failure(exc, spec)
            if failure is not None:
                raise failure from exc
            raise
    return Sent(retries=sender.retries, seconds=time.monotonic() - started)


def acknowledge_sync(
    planned: Planned, sent: Sent, spec: SyncSpec, warehouse: WarehouseResource, destination_url: str, log: Log
) -> dict[str, Any]:
    """The acknowledge step: apply the journaled acknowledgements to the warehouse; returns the asset's metadata."""
    started = time.monotonic()
    if planned.dry_run:
        log.info(dry_run_message(planned.counts, spec.mode))
        return dry_run_metadata(planned.counts, planned.sample)
    with warehouse.connect() as conn, open_journal(planned.journal) as journal:
        applied = apply_acknowledged(conn, journal, spec.name)
        result = outcome(planned.counts, planned.plan_id, applied)
        rejected = rejected_sample(conn, spec.name, [planned.plan_id, *(b.plan_id for b, _ in applied)])
    duration = planned.seconds + sent.seconds + time.monotonic() - started
    metadata = sync_metadata(result, duration, sent.retries)
    log.info(summary_message(spec, result, metadata))
    if metadata["failed"]:
        log.warning(refused_message(spec, metadata["failed"], rejected))
    return {
        **metadata,
        "rejected_sample": dg.MetadataValue.json([{"key": k, "error": e} for k, e in rejected]),
        "rejected_table": REJECTED,
        "destination_url": dg.MetadataValue.url(destination_url),
    }


def count_metadata(counts: DiffCounts) -> dict[str, int]:
    return {
        "planned": counts.planned,
        "adds": counts.adds,
        "changes": counts.changes,
        "deletes": counts.deletes,
        "unchanged": counts.unchanged,
        "skipped": counts.skipped,
        "in_flight": counts.in_flight,
    }


def sync_metadata(outcome: SyncOutcome, duration: float, retries: int) -> dict[str, Any]:
    """Planned / sent / skipped / failed counts, batches and speed, for the UI to plot."""
    deliveries: list[Delivery] = outcome.deliveries
    sent = sum(d.accepted for d in deliveries)
    return {
        **count_metadata(outcome.counts),
        "sent": sent,
        "created": sum(d.created for d in deliveries),
        "updated": sum(d.updated for d in deliveries),
        "deleted": sum(d.deleted for d in deliveries),
        "failed": sum(len(d.rejected) for d in deliveries),
        "batches": len(deliveries),
        "resent_batches": len(outcome.resent),
        "retries": retries,
        "duration_seconds": round(duration, 3),
        "records_per_second": round(sent / duration, 1) if duration else 0.0,
    }


def dry_run_metadata(counts: DiffCounts, sample: list[dict]) -> dict[str, Any]:
    return {"dry_run": True, **count_metadata(counts), "sent": 0, "sample": dg.MetadataValue.json(sample)}


def dry_run_message(counts: DiffCounts, mode: str) -> str:
    return (
        f"Dry run: would send {counts.planned} records ({counts.adds} new, {counts.changes} changed,"
        f" {counts.deletes} gone{'' if mode == 'mirror' else ', not deleted in upsert mode'})"
    )


def summary_message(spec: SyncSpec, outcome: SyncOutcome, metadata: dict[str, Any]) -> str:
    counts = outcome.counts
    return (
        f"{spec.destination}: {counts.adds} new, {counts.changes} changed, {counts.deletes} gone,"
        f" {counts.unchanged} unchanged; sent {metadata['sent']} records in {metadata['batches']} batches"
        + (f" ({len(outcome.resent)} left pending by an earlier run)" if outcome.resent else "")
        + (f"; {counts.in_flight} records in flight in an earlier run's batches" if counts.in_flight else "")
    )


def refused_message(spec: SyncSpec, failed: int, rejected: list[tuple[str, str]]) -> str:
    return (
        f"{failed} records refused by {spec.destination} (kept in {REJECTED}, retried when they change): "
        + "; ".join(f"{key}: {error}" for key, error in rejected[:5])
    )
