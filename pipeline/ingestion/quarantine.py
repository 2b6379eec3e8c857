"""Where files go after a load: `processed/` (or tagged, or left) when loaded, `quarantine/` when rejected.

<system>/<date>/<file>                   a file waiting to be loaded (what the arrival sensor sees)
processed/<system>/<date>/<file>         loaded (LANDING_PROCESSED_ACTION=move, the default)
quarantine/<date>/<system>/<file>        rejected, next to <file>.reason.json saying why
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum

from ..core.objectstore import LandingStore
from .landing import LandingKey
from .loader import ContractViolation

PROCESSED_PREFIX = "processed/"
QUARANTINE_PREFIX = "quarantine/"


class ProcessedAction(StrEnum):
    MOVE = "move"
    TAG = "tag"
    LEAVE = "leave"


def processed_key(key: str) -> str:
    return PROCESSED_PREFIX + key


def quarantine_key(key: str) -> str:
    parsed = LandingKey.parse(key)
    if parsed is None:
        raise ValueError(f"{key} does not follow <system>/<YYYY-MM-DD>/<name>.<ext>")
    return f"{QUARANTINE_PREFIX}{parsed.day.isoformat()}/{parsed.system}/{key.rsplit('/', 1)[1]}"


def reason_key(quarantined: str) -> str:
    return quarantined + ".reason.json"


def landing_key_of(quarantined: str) -> str:
    """quarantine/<date>/<system>/<file> -> <system>/<date>/<file>."""
    parts = quarantined.removeprefix(QUARANTINE_PREFIX).split("/")
    if not quarantined.startswith(QUARANTINE_PREFIX) or len(parts) != 3:
        raise ValueError(f"{quarantined!r} is not a quarantine/<date>/<system>/<file> key")
    day, system, name = parts
    return f"{system}/{day}/{name}"


def mark_processed(store: LandingStore, stored_at: str, key: str, action: ProcessedAction, run_id: str) -> str:
    """After a committed load: move the object under processed/, tag it, or leave it. Returns where it is now."""
    if action is ProcessedAction.MOVE and stored_at != processed_key(key):
        store.move(stored_at, processed_key(key))
        return processed_key(key)
    if action is ProcessedAction.TAG:
        store.tag(stored_at, {"pipeline-status": "processed", "pipeline-run-id": run_id})
    return stored_at


def quarantine(store: LandingStore, stored_at: str, violation: ContractViolation, run_id: str) -> str:
    """Move a rejected file to quarantine/ with a sibling reason file; the raw table was not touched."""
    target = quarantine_key(violation.key)
    store.move(stored_at, target)
    reason = {
        **violation.reason(),
        "quarantined_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quarantined_key": target,
        "run_id": run_id,
        "replay": f"python -m pipeline.replay {target}",
    }
    store.put_text(reason_key(target), json.dumps(reason, indent=2, sort_keys=True))
    return target


def release(store: LandingStore, quarantined: str) -> str:
    """Put a (corrected) quarantined file back at its landing key and drop its reason file.

    A replay that released the file and then stopped (its load failed to start) can be run again: with the file
    already back at its landing key, that is the one to load."""
    key = landing_key_of(quarantined)
    if store.head(quarantined) is None:
        if store.head(key) is None:
            raise FileNotFoundError(
                f"no quarantined file {quarantined!r} in {store.url}, and none at its landing key {key!r}: check the"
                " key against the quarantine/ folder (the reason file's `quarantined_key`)"
            )
        return key  # released by an earlier replay that did not load it
    store.move(quarantined, key)
    store.delete(reason_key(quarantined))
    return key
