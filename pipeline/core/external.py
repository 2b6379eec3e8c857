"""Assets that live outside Dagster — the landing location and the CRM objects — so lineage shows the whole path.

Nothing materializes these; they exist so the graph reads bucket -> raw -> dbt -> sync -> CRM.
"""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg

LANDING_GROUP = "landing"
DESTINATIONS_GROUP = "destinations"


def landing_asset_key(system: str) -> dg.AssetKey:
    return dg.AssetKey(["landing", system])


def landing_specs(systems: Iterable[str], landing_url: str) -> list[dg.AssetSpec]:
    """One external asset per source system: the `<landing>/<system>/` prefix its files arrive under."""
    kind = "s3" if landing_url.startswith("s3://") else "file"
    return [
        dg.AssetSpec(
            key=landing_asset_key(system),
            description=f"Files the `{system}` system delivers daily under `{landing_url.rstrip('/')}/{system}/`.",
            group_name=LANDING_GROUP,
            kinds={kind},
            metadata={"landing_prefix": dg.MetadataValue.path(f"{landing_url.rstrip('/')}/{system}/")},
        )
        for system in sorted(set(systems))
    ]


def destination_spec(key: dg.AssetKey, upstream: dg.AssetKey, description: str, url: str) -> dg.AssetSpec:
    """An object in a destination system (e.g. the CRM's contacts), written only by its sync asset."""
    return dg.AssetSpec(
        key=key,
        deps=[upstream],
        description=description,
        group_name=DESTINATIONS_GROUP,
        kinds={"http"},
        metadata={"url": dg.MetadataValue.url(url)},
    )
