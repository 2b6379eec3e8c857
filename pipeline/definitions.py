"""The code location: every stage's definitions, merged. Nothing else lives here."""

import gc
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from . import fastpaths
from .activation.assets import activation_defs
from .automation.alerts import build_run_failure_alert
from .automation.conditions import AUTOMATION_SENSOR
from .automation.execution import EXECUTOR
from .automation.freshness import freshness_defs
from .automation.schedules import build_daily_schedule, daily_build_job
from .core.resources import build_resources
from .core.settings import ConfigurationError, Settings
from .fastpaths import dagster_patches
from .ingestion.assets import CONTRACT_CHECK, ingestion_defs, raw_partitions
from .transformation.assets import transformation_defs
from .transformation.cloud import cloud_transformation_defs

#: the dbt folder whose models are marts (groups come from folders): freshness-checked
MARTS_GROUP = "marts"


@contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while the definitions are built.

    Building them allocates hundreds of thousands of objects that all stay alive (the parsed dbt manifest, a spec,
    an output and a condition per node), so the collector's passes find nothing to free; yet each full pass walks
    every live object, the manifest included, and the allocations trigger several: ~0.3 s of a 1,000-model load
    here (bench P1), more on larger projects. Whatever garbage the load does leave is collected by the next
    passes after it.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


#: Dagster warnings about APIs we use on purpose, each with no non-beta equivalent that fits (category, message).
#: They would be printed by every process that loads the code location — the webserver's and the daemon's code
#: servers and every run worker: ~20 lines per load that look like trouble and are not.
KNOWN_WARNINGS = (
    # `@asset(backfill_policy=...)`: the raw tables load a backfill's range in one run. Only the parameter of
    # `@asset` is marked beta; the same BackfillPolicy on `@multi_asset` (dagster-dbt's assets carry one) is not.
    (dg.BetaWarning, r"Parameter `backfill_policy` of function `asset` is currently in beta"),
    # Dagster's freshness check sensor, superseded by FreshnessPolicy, which cannot ask for a landing day or judge
    # an asset that was never built (see automation/freshness.py); the sensor works with our checks unchanged.
    (dg.SupersessionWarning, r"Function `build_sensor_for_freshness_checks` is superseded"),
    # dagster-dbt's dbt Cloud workspace keeps the manifest it fetched with the definitions (so run workers do not
    # parse the project in dbt Cloud again) through this preview API, on every load of the dbt Cloud engine.
    (dg.PreviewWarning, r"Function `Definitions.with_reconstruction_metadata` is currently in preview"),
)


@contextmanager
def known_warnings_ignored() -> Iterator[None]:
    """Exactly KNOWN_WARNINGS silenced while the definitions are built; every other warning still shows."""
    with warnings.catch_warnings():
        for category, message in KNOWN_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield


@dg.definitions
def defs() -> dg.Definitions:
    try:
        with gc_paused(), known_warnings_ignored():
            return build_defs()
    except ConfigurationError as exc:
        # A bad setting or declared file: the message names it and what to do. Raised as a Dagster error, Dagster
        # shows it as the load error itself rather than wrapped in a DagsterUserCodeLoadError under its own
        # traceback, and `from None` leaves out the frames that found the problem.
        raise dg.DagsterInvalidDefinitionError(str(exc)) from None


def build_defs() -> dg.Definitions:
    settings = Settings.from_env()
    if fastpaths.enabled():
        # Every process that builds the definitions (code server, run worker, step process) runs its steps with
        # Dagster's step execution patched for speed (see fastpaths/dagster_patches.py); PIPELINE_FAST_PATHS=off
        # leaves Dagster as it is.
        dagster_patches.apply()
    ingestion = ingestion_defs(settings)
    ingested = {key for a in ingestion.assets or [] if isinstance(a, dg.AssetsDefinition) for key in a.keys}
    dbt = (  # dbt Core runs the project, or dbt Cloud does when its settings are set
        cloud_transformation_defs(settings, ingested)
        if settings.dbt_cloud is not None
        else transformation_defs(settings, ingested, raw_partitions(settings))
    )
    activation = activation_defs(settings, dbt, {key: [CONTRACT_CHECK] for key in ingested})
    stages = [ingestion, dbt.defs, activation]
    specs = [spec for stage in stages for spec in asset_specs(stage)]
    owners = {spec.key: list(spec.owners) for spec in specs if spec.owners}
    marts = [spec.key for spec in specs if spec.group_name == MARTS_GROUP]
    raw = [a for a in ingestion.assets or [] if isinstance(a, dg.AssetsDefinition)]
    automation = dg.Definitions(
        jobs=[daily_build_job()],
        schedules=[build_daily_schedule(settings)],
        sensors=[AUTOMATION_SENSOR, build_run_failure_alert(owners)],
    )
    return dg.Definitions.merge(
        *stages,
        automation,
        freshness_defs(settings, raw, marts, owners),
        dg.Definitions(resources=build_resources(settings), executor=EXECUTOR),
    )


def asset_specs(stage: dg.Definitions) -> list[dg.AssetSpec]:
    """The specs of a stage's assets (materializable and external), without resolving the whole repository."""
    specs: list[dg.AssetSpec] = []
    for item in stage.assets or []:
        specs.extend(
            item.specs if isinstance(item, dg.AssetsDefinition) else [item] if isinstance(item, dg.AssetSpec) else []
        )
    return specs
