"""Ingestion assets: one per contract table, key ["raw", <table>], daily-partitioned by landing date."""

from collections.abc import Iterator
from datetime import date, timedelta

import dagster as dg

from ..automation.conditions import PARTITIONED_TAG
from ..automation.retries import TRANSIENT_RETRY
from ..core.external import landing_asset_key, landing_specs
from ..core.resources import LandingResource, WarehouseResource
from ..core.settings import WAREHOUSE_POOL, Settings
from ..fastpaths.check_targets import latest_materialization_target
from .contracts import CONTRACT_CHECK, SourceTable, load_contracts
from .ingest import load_files, select_files
from .quarantine import ProcessedAction
from .sensor import build_arrival_sensor

INGESTION_GROUP = "ingestion"


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
        selection = select_files(store, contract, context.run.tags, partition_days(context))
        if selection.already_loaded:
            context.log.info(selection.already_loaded_message())  # and the table as it stands is the result
        elif not selection.files:
            raise dg.Failure(selection.missing_message(store.url), allow_retries=False)
        with warehouse.connect() as conn:
            outcome = load_files(
                conn, store, contract, selection.files, processed=processed, run_id=context.run_id, log=context.log
            )
        if outcome.rejected:
            yield contract_failed(key, outcome.check_result(), context.instance)
            raise outcome.failure()
        yield outcome.materialization(selection.data_version(store))

    return _ingest


def raw_partitions(settings: Settings) -> dg.DailyPartitionsDefinition:
    """One partition per landing date, including today's (files for today land during today)."""
    return dg.DailyPartitionsDefinition(start_date=settings.landing_start_date, end_offset=1, timezone="UTC")


def ingestion_defs(settings: Settings) -> dg.Definitions:
    contracts = load_contracts(settings.landing_contracts_path)
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
