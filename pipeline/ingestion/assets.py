"""Ingestion assets: one per contract table, key ["raw", <table>], loading every landing file of that table."""

import time
from contextlib import ExitStack

import dagster as dg

from ..external import landing_asset_key, landing_specs
from ..resources import LandingResource, WarehouseResource
from ..settings import WAREHOUSE_POOL, Settings
from .contracts import SourceTable, load_contracts
from .landing import LandingStore
from .loader import FileToLoad, load_files

INGESTION_GROUP = "ingestion"


def files_of(store: LandingStore, contract: SourceTable):
    """Every landed object that belongs to this contract table, in key (so date) order."""
    for obj in store.list(contract.landing_prefix):
        parsed = obj.parsed
        if parsed is not None and parsed.system == contract.system and parsed.name == contract.file:
            yield obj


def column_schema(contract: SourceTable) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name, type_, constraints=dg.TableColumnConstraints(nullable=name not in contract.primary_key)
            )
            for name, type_ in contract.all_columns().items()
        ]
    )


def build_ingestion_asset(contract: SourceTable) -> dg.AssetsDefinition:
    @dg.asset(
        key=contract.asset_key,
        description=f"{contract.description}\n\nLoaded from `{contract.system}/<date>/{contract.file}.*`.",
        group_name=INGESTION_GROUP,
        kinds={"duckdb"},
        deps=[landing_asset_key(contract.system)],
        pool=WAREHOUSE_POOL,
        metadata={
            "dagster/table_name": contract.qualified_name,
            "dagster/column_schema": column_schema(contract),
            "primary_key": ", ".join(contract.primary_key),
        },
    )
    def _ingest(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource, landing: LandingResource
    ) -> dg.MaterializeResult:
        store = landing.store()
        objects = list(files_of(store, contract))
        if not objects:
            raise dg.Failure(
                f"No landing files for {contract.qualified_name}: expected "
                f"{store.url.rstrip('/')}/{contract.system}/<YYYY-MM-DD>/{contract.file}.<csv|jsonl|parquet>"
            )
        started = time.monotonic()
        with ExitStack() as stack, warehouse.connect() as conn:
            files = [FileToLoad(obj, stack.enter_context(store.local_path(obj.key))) for obj in objects]
            result = load_files(conn, contract, files)
        context.log.info(
            f"Loaded {result.rows_loaded} rows from {result.files} files into {result.table}"
            f" (replaced {result.rows_replaced} rows from earlier loads of the same files)"
        )
        return dg.MaterializeResult(
            metadata={
                "dagster/row_count": result.table_rows,
                "rows_loaded": result.rows_loaded,
                "rows_replaced": result.rows_replaced,
                "files": result.files,
                "bytes": result.bytes,
                "duration_seconds": round(time.monotonic() - started, 3),
                "latest_file": objects[-1].key,
            }
        )

    return _ingest


def build_ingestion_assets(contracts: list[SourceTable]) -> list[dg.AssetsDefinition]:
    return [build_ingestion_asset(c) for c in contracts]


def ingestion_defs(settings: Settings) -> dg.Definitions:
    contracts = load_contracts()
    return dg.Definitions(
        assets=[*landing_specs({c.system for c in contracts}, settings.landing_url), *build_ingestion_assets(contracts)]
    )
