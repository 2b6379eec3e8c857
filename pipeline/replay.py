"""Replay a quarantined file: put it back at its landing key and load its partition again.

    python -m pipeline.replay quarantine/2026-11-02/shop/customers.csv           # via the running Dagster
    python -m pipeline.replay quarantine/2026-11-02/shop/customers.csv --in-process

Fix the file first (overwrite the quarantined object with the corrected one), or fix the contract. The load is
requested directly rather than left to the arrival sensor: a replay of unchanged content after a contract fix
has the same key and ETag as the rejected delivery, which the sensor (rightly) never requests twice. By default
the run is submitted to the Dagster webserver (DAGSTER_UI_BASE_URL), so it queues for the `warehouse` pool like
any other; `--in-process` runs it here, for when no Dagster is running, and records the run in the instance at
DAGSTER_HOME, or `make dev`'s (`.dagster_home/`) when DAGSTER_HOME is not set.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import dagster as dg
import httpx

from .core.settings import REPO_ROOT, Settings
from .ingestion.contracts import load_contracts
from .ingestion.landing import LandingKey
from .ingestion.quarantine import release
from .ingestion.sensor import LANDING_KEY_TAG

log = logging.getLogger("pipeline.replay")
REPLAY_TAG = "pipeline/replay"


def replay(quarantined: str, *, in_process: bool, settings: Settings | None = None) -> str:
    """Release the file and request its load; returns the run id."""
    from .core.resources import build_resources
    from .definitions import defs as load_definitions

    settings = settings or Settings.from_env()
    if not in_process:
        require_webserver(settings.ui_base_url)  # before the release: a file left released would load unreplayed
    store = build_resources(settings)["landing"].store()
    key = release(store, quarantined)
    parsed = LandingKey.parse(key)
    contract = next(
        c for c in load_contracts(settings.landing_contracts_path) if (c.system, c.file) == (parsed.system, parsed.name)
    )
    table = dg.AssetKey(contract.asset_key)
    tags = {LANDING_KEY_TAG: key, REPLAY_TAG: quarantined}
    log.info("Released %s to %s; loading %s partition %s", quarantined, key, table.to_user_string(), parsed.day)
    if in_process:
        job = load_definitions().resolve_implicit_global_asset_job_def().get_subset(asset_selection={table})
        result = job.execute_in_process(
            partition_key=parsed.day.isoformat(), tags=tags, raise_on_error=False, instance=_instance()
        )
        if not result.success:
            raise SystemExit(f"replay of {key} failed again: see run {result.run_id} (the file is back in quarantine)")
        return result.run_id
    from dagster_graphql import DagsterGraphQLClient

    ui = urlparse(settings.ui_base_url)
    client = DagsterGraphQLClient(ui.hostname or "127.0.0.1", port_number=ui.port, use_https=ui.scheme == "https")
    return client.submit_job_execution(
        "__ASSET_JOB",
        asset_selection=[table],
        tags={**tags, "dagster/partition": parsed.day.isoformat()},
    )


def require_webserver(ui_base_url: str) -> None:
    """Stop with what to do when no Dagster webserver answers at DAGSTER_UI_BASE_URL."""
    try:
        httpx.get(f"{ui_base_url.rstrip('/')}/server_info", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        raise SystemExit(
            f"No Dagster webserver answers at {ui_base_url} (DAGSTER_UI_BASE_URL): {exc}. Start it (`make dev`), set"
            " DAGSTER_UI_BASE_URL to where it runs, or replay with --in-process. The file is still in quarantine."
        ) from None


#: Where `make dev` keeps its Dagster instance (the Makefile's DAGSTER_HOME).
DEV_HOME = REPO_ROOT / ".dagster_home"


def instance_home(environ: Mapping[str, str], dev_home: Path = DEV_HOME) -> Path | None:
    """The Dagster instance an in-process replay records its run in: DAGSTER_HOME, else `make dev`'s (a replay
    typed in a second terminal has no DAGSTER_HOME, and a run recorded elsewhere leaves the UI showing the
    partition failed, which keeps the syncs' gates shut), else None (no instance: the run is recorded nowhere)."""
    if environ.get("DAGSTER_HOME"):
        return Path(environ["DAGSTER_HOME"])
    return dev_home if (dev_home / "dagster.yaml").is_file() else None


def _instance() -> dg.DagsterInstance:
    home = instance_home(os.environ, DEV_HOME)
    if home is None:
        log.warning(
            "No DAGSTER_HOME and no `make dev` instance in %s: the run is recorded nowhere, so Dagster's UI still"
            " shows the partition's last load as failed. Set DAGSTER_HOME to the instance's folder to record it.",
            DEV_HOME,
        )
        return dg.DagsterInstance.ephemeral()
    log.info("Recording the run in the Dagster instance at %s", home)
    os.environ["DAGSTER_HOME"] = str(home)  # the local instance's storage finds its folders through it
    return dg.DagsterInstance.get()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("quarantined", help="quarantine/<date>/<system>/<file> key, as in the reason file")
    parser.add_argument("--in-process", action="store_true", help="run the load here instead of via Dagster")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run_id = replay(args.quarantined, in_process=args.in_process)
    log.info("Replay run: %s", run_id)


if __name__ == "__main__":
    main()
