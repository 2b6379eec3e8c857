"""The code location: every stage's definitions, merged. Nothing else lives here."""

import dagster as dg

from .activation.assets import activation_defs
from .automation.conditions import AUTOMATION_SENSOR
from .automation.execution import EXECUTOR
from .automation.schedules import build_daily_schedule, daily_build_job
from .ingestion.assets import CONTRACT_CHECK, ingestion_defs
from .resources import build_resources
from .settings import Settings
from .transformation.assets import transformation_defs


@dg.definitions
def defs() -> dg.Definitions:
    settings = Settings.from_env()
    ingestion = ingestion_defs(settings)
    ingested = {key for a in ingestion.assets or [] if isinstance(a, dg.AssetsDefinition) for key in a.keys}
    dbt = transformation_defs(settings, ingested)
    activation = activation_defs(settings, dbt.manifest, dbt.key_of, {key: [CONTRACT_CHECK] for key in ingested})
    automation = dg.Definitions(
        jobs=[daily_build_job()], schedules=[build_daily_schedule(settings)], sensors=[AUTOMATION_SENSOR]
    )
    return dg.Definitions.merge(
        ingestion,
        dbt.defs,
        activation,
        automation,
        dg.Definitions(resources=build_resources(settings), executor=EXECUTOR),
    )
