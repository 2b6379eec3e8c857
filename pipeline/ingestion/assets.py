"""Ingestion assets: one per contract table, key ["raw", <table>], daily-partitioned by landing date."""

import json
from collections.abc import Iterator, Mapping
from datetime import date, timedelta

import dagster as dg

from ..automation.conditions import PARTITIONED_TAG
from ..automation.retries import TRANSIENT_RETRY
from ..core.external import landing_asset_key, landing_specs
from ..core.objectstore import LandedObject, LandingStore
from ..core.resources import LandingResource, WarehouseResource
from ..core.settings import WAREHOUSE_POOL, Settings
from ..fastpaths.check_targets import latest_materialization_target
from .contracts import CONTRACT_CHECK, SourceTable, load_contracts
from .landing import LandingKey
from .loader import ContractViolation, FileLoad, FileToLoad, ensure_table, load_file, table_rows
from .quarantine import PROCESSED_PREFIX, ProcessedAction, mark_processed, quarantine
from .sensor import LANDING_KEY_TAG, LANDING_KEYS_TAG, build_arrival_sensor

INGESTION_GROUP = "ingestion"


def files_for_days(store: LandingStore, contract: SourceTable, days: list[date]) -> list[tuple[str, LandedObject, str]]:
    """(landing key, object, where it is stored) for each file of this table landed on one of `days`.

    Looks under the landing prefix and under processed/ (a backfill re-reads files already loaded), listing
    from the first day with StartAfter so older dates are never listed. Where both hold a key, the landing
    one wins: it is a newer delivery of the same file.
    """
    wanted, first, last = set(days), min(days), max(days)
    found: dict[str, tuple[LandedObject, str]] = {}
    for base in (PROCESSED_PREFIX, ""):
        prefix = f"{base}{contract.system}/"
        for obj in store.list(prefix, start_after=f"{prefix}{first.isoformat()}"):
            landing_key = obj.key.removeprefix(base)
            parsed = LandingKey.parse(landing_key)
            if parsed is None:
                continue
            if parsed.day > last:
                break
            if parsed.name == contract.file and parsed.day in wanted:
                found[landing_key] = (obj, obj.key)
    return [(key, obj, stored_at) for key, (obj, stored_at) in sorted(found.items())]


def arrived_keys(tags: Mapping[str, str]) -> list[str]:
    """The files an arrival-sensor run was requested for (none for a manual run or a backfill)."""
    if LANDING_KEYS_TAG in tags:
        return json.loads(tags[LANDING_KEYS_TAG])
    return [tags[LANDING_KEY_TAG]] if LANDING_KEY_TAG in tags else []


def files_arrived(store: LandingStore, keys: list[str], contract: SourceTable) -> list[tuple[str, LandedObject, str]]:
    """Those of `keys` that are this table's files and still where they landed (a sibling run may have loaded and
    moved one already). A run the sensor requested for several tables lists all their files."""
    mine = [
        key
        for key in keys
        if (parsed := LandingKey.parse(key)) and (parsed.system, parsed.name) == (contract.system, contract.file)
    ]
    objects = [(key, store.head(key)) for key in mine]
    return [(key, obj, key) for key, obj in objects if obj is not None]


def _rows(warehouse: WarehouseResource, contract: SourceTable) -> int:
    with warehouse.connect() as conn:
        ensure_table(conn, contract)
        return table_rows(conn, contract)


def partition_days(context: dg.AssetExecutionContext) -> list[date]:
    start, end = context.partition_time_window
    return [start.date() + timedelta(days=i) for i in range((end.date() - start.date()).days)]


def column_schema(contract: SourceTable) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name, type_, constraints=dg.TableColumnConstraints(nullable=name not in contract.primary_key)
            )
            for name, type_ in contract.all_columns().items()
        ]
    )


def load_metadata(loads: list[FileLoad], rejected: list[tuple[ContractViolation, str]], rows: int) -> dict:
    meta: dict = {
        "dagster/row_count": rows,
        "rows_loaded": sum(f.rows_loaded for f in loads),
        "rows_replaced": sum(f.rows_replaced for f in loads),
        "files": len(loads),
        "bytes": sum(f.bytes for f in loads),
        "rejected_files": len(rejected),
        "duration_seconds": round(sum(f.seconds for f in loads), 3),
    }
    if len(loads) == 1:
        meta |= {"landing_key": loads[0].key, "etag": loads[0].etag}
    elif loads:
        meta["landing_keys"] = dg.MetadataValue.json([f.key for f in loads])
    extra = sorted({c for f in loads for c in f.extra_columns})
    if extra:
        meta["extra_columns"] = ", ".join(extra)
    return meta


def contract_result(rejected: list[tuple[ContractViolation, str]], found: int) -> dg.AssetCheckResult:
    """The `landing_contract` verdict on this run's files: how many were checked, which broke the contract, why."""
    return dg.AssetCheckResult(
        check_name=CONTRACT_CHECK,
        passed=not rejected,
        severity=dg.AssetCheckSeverity.ERROR,
        description=quarantine_message(rejected) if rejected else f"{found} landed file(s) met the contract.",
        metadata={
            "files_checked": found,
            "rejected_files": len(rejected),
            **({"rejections": dg.MetadataValue.json([v.reason() for v, _ in rejected])} if rejected else {}),
            **({"quarantined": dg.MetadataValue.json([where for _, where in rejected])} if rejected else {}),
        },
    )


def quarantine_message(rejected: list[tuple[ContractViolation, str]]) -> str:
    """Which file broke the contract, how, and where it went (one line each): the step failure and the check say it."""
    return "\n".join(f"{v} -> quarantined at {where}" for v, where in rejected)


def contract_failed(
    key: dg.AssetKey, result: dg.AssetCheckResult, instance: dg.DagsterInstance
) -> dg.AssetCheckEvaluation:
    """The failed `landing_contract` check of a run that quarantined a file, recorded as the verdict on the table
    as it stands (the file was not loaded; the table is its latest materialization).

    Yielded as an evaluation rather than an `AssetCheckResult`: Dagster ties a check result in a partition's run to
    that partition's latest materialization, while the UI shows an unpartitioned check only when its evaluation
    targets the asset's latest materialization of *any* partition. A file re-delivered for a day loaded before,
    while later days have loaded since, would fail its check and show "Not evaluated". So the evaluation names the
    asset's latest materialization as its target (see `check_targets`).
    """
    return dg.AssetCheckEvaluation(
        asset_key=key,
        check_name=CONTRACT_CHECK,
        passed=False,
        metadata=result.metadata,
        target_materialization_data=latest_materialization_target(instance, key),
        severity=dg.AssetCheckSeverity.ERROR,
        description=result.description,
        blocking=False,
    )


def build_ingestion_asset(
    contract: SourceTable, partitions_def: dg.PartitionsDefinition, processed: ProcessedAction
) -> dg.AssetsDefinition:
    key = dg.AssetKey(contract.asset_key)

    @dg.asset(
        key=key,
        description=f"{contract.description}\n\nLoaded from `{contract.system}/<date>/{contract.file}.*`; one "
        "partition per landing date. Files that break the contract are quarantined, never half-loaded.",
        group_name=INGESTION_GROUP,
        owners=[contract.owner] if contract.owner else None,
        kinds={"duckdb"},
        deps=[landing_asset_key(contract.system)],
        partitions_def=partitions_def,
        tags=PARTITIONED_TAG,
        # A backfill of many days is one run that loads every file in the range, not one run per day.
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool=WAREHOUSE_POOL,
        retry_policy=TRANSIENT_RETRY,
        check_specs=[
            dg.AssetCheckSpec(
                CONTRACT_CHECK,
                asset=key,
                description="Every landed file met its contract (columns, types, primary key); "
                "a failure names the file, the line and column, and where it was quarantined.",
            )
        ],
        metadata={
            "dagster/table_name": contract.qualified_name,
            "dagster/column_schema": column_schema(contract),
            "primary_key": ", ".join(contract.primary_key),
            "extra_columns_policy": contract.extra_columns,
            "landing_file": f"{contract.system}/{contract.file}",
        },
    )
    def _ingest(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource, landing: LandingResource
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        store = landing.store()
        days = partition_days(context)
        arrival = arrived_keys(context.run.tags)
        found = files_arrived(store, arrival, contract) if arrival else files_for_days(store, contract, days)
        if arrival and not found:
            # A sibling run (an earlier upload of the same key) already loaded and moved it: nothing left to do.
            context.log.info(
                f"No file of {contract.qualified_name} in {arrival} is still in the landing prefix: already loaded"
                " by an earlier run"
            )
            yield dg.MaterializeResult(
                metadata=load_metadata([], [], rows=_rows(warehouse, contract)),
                check_results=[contract_result([], found=0)],
            )
            return
        if not found:
            span = f"{days[0]}..{days[-1]}" if len(days) > 1 else str(days[0])
            expected = f"{store.url.rstrip('/')}/{contract.system}/<YYYY-MM-DD>/{contract.file}.<csv|jsonl|parquet>"
            raise dg.Failure(
                f"No landing file for {contract.qualified_name} on {span}: expected {expected}", allow_retries=False
            )
        loads: list[FileLoad] = []
        rejected: list[tuple[ContractViolation, str]] = []
        with warehouse.connect() as conn:
            for landing_key, obj, stored_at in found:
                try:
                    with store.local_path(stored_at) as path:
                        loads.append(load_file(conn, contract, FileToLoad(obj, path, landing_key)))
                except ContractViolation as violation:
                    moved_to = quarantine(store, stored_at, violation, context.run_id)
                    context.log.error(f"Rejected {violation}; moved to {moved_to}")
                    rejected.append((violation, moved_to))
                    continue
                now_at = mark_processed(store, stored_at, landing_key, processed, context.run_id)
                context.log.info(f"Loaded {loads[-1].rows_loaded} rows from {landing_key} (now at {now_at})")
            rows = table_rows(conn, contract)
        metadata = load_metadata(loads, rejected, rows)
        if rejected:
            yield contract_failed(key, contract_result(rejected, found=len(found)), context.instance)
            raise dg.Failure(
                description=quarantine_message(rejected),
                metadata={**metadata, "quarantined": dg.MetadataValue.json([where for _, where in rejected])},
                allow_retries=False,  # the file is quarantined: a retry would find nothing to load
            )
        # The check result after the materialization (inside it): it judges this load, and a load of another day
        # that finishes meanwhile cannot make it look like the verdict on an older table (see contract_failed).
        yield dg.MaterializeResult(metadata=metadata, check_results=[contract_result([], found=len(found))])

    return _ingest


def raw_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    """One partition per landing date, including today's (files for today land during today)."""
    return dg.DailyPartitionsDefinition(start_date=settings.landing_start_date, end_offset=1, timezone="UTC")


def ingestion_defs(settings: Settings) -> dg.Definitions:
    contracts = load_contracts()
    partitions = raw_partitions(settings)
    action = ProcessedAction(settings.landing_processed_action)
    return dg.Definitions(
        assets=[
            *landing_specs({c.system for c in contracts}, settings.landing_url),
            *(build_ingestion_asset(c, partitions, action) for c in contracts),
        ],
        sensors=[
            build_arrival_sensor(
                contracts,
                minimum_interval_seconds=settings.sensor_interval_seconds,
                overlap_seconds=settings.sensor_overlap_seconds,
                lookback_days=settings.sensor_lookback_days,
                sweep_minutes=settings.sensor_sweep_minutes,
            )
        ],
    )
