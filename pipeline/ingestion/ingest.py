"""One run of an ingestion asset, as plain functions its body calls in order (unit tests call them directly).

`select_files`: which files the run loads (those an arrival-sensor run was requested for, or every file of the
partitions' days); `load_files`: load each into the raw table, quarantine those that break the contract, mark the
loaded ones processed; `LoadOutcome`: the run's metadata, its `landing_contract` verdict, and the step failure
that names each quarantined file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Protocol

import dagster as dg
import duckdb

from ..core.objectstore import LandedObject, LandingStore
from .contracts import CONTRACT_CHECK, SourceTable
from .landing import LandingKey
from .loader import ContractViolation, FileLoad, FileToLoad, ensure_table, load_file, table_rows
from .quarantine import PROCESSED_PREFIX, ProcessedAction, mark_processed, quarantine
from .sensor import LANDING_KEY_TAG, LANDING_KEYS_TAG

#: (landing key, object, where it is stored: the landing key, or under processed/ for a backfill's re-read).
LandedFile = tuple[str, LandedObject, str]


class RunLog(Protocol):
    """Where a run's progress goes: the step's `context.log`, or any `logging.Logger`."""

    def info(self, msg: str) -> object: ...

    def error(self, msg: str) -> object: ...


def files_for_days(store: LandingStore, contract: SourceTable, days: list[date]) -> list[LandedFile]:
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


def files_version(contract: SourceTable, days: list[date], files: list[LandedFile]) -> dg.DataVersion:
    """The data version of `contract`'s partitions of `days`, holding `files` (every file of those days the store
    holds, loaded ones under processed/ included): a hash of their landing keys and ETags. Loading the same files
    again gives the same version, so the dbt models downstream are not rebuilt for it (state-aware runs: see
    `transformation.state`); a new or changed file gives a new one."""
    digest = hashlib.sha256(f"{contract.qualified_name}|{','.join(d.isoformat() for d in sorted(days))}".encode())
    for landing_key, obj, _ in sorted(files):
        digest.update(f"\n{landing_key}|{obj.etag}".encode())
    return dg.DataVersion(digest.hexdigest()[:20])


def arrived_keys(tags: Mapping[str, str]) -> list[str]:
    """The files an arrival-sensor run was requested for (none for a manual run or a backfill)."""
    if LANDING_KEYS_TAG in tags:
        return json.loads(tags[LANDING_KEYS_TAG])
    return [tags[LANDING_KEY_TAG]] if LANDING_KEY_TAG in tags else []


def files_arrived(store: LandingStore, keys: list[str], contract: SourceTable) -> list[LandedFile]:
    """Those of `keys` that are this table's files and still where they landed (a sibling run may have loaded and
    moved one already). A run the sensor requested for several tables lists all their files."""
    mine = [
        key
        for key in keys
        if (parsed := LandingKey.parse(key)) and (parsed.system, parsed.name) == (contract.system, contract.file)
    ]
    objects = [(key, store.head(key)) for key in mine]
    return [(key, obj, key) for key, obj in objects if obj is not None]


@dataclass(frozen=True)
class Selection:
    """The files one run of `contract`'s asset loads, and what to say when there are none."""

    contract: SourceTable
    days: list[date]
    #: The landing keys an arrival-sensor run was requested for; empty for a manual run or a backfill.
    requested: list[str]
    files: list[LandedFile]

    @property
    def already_loaded(self) -> bool:
        """An arrival run whose files a sibling run (an earlier upload of the same key) already loaded and moved."""
        return bool(self.requested) and not self.files

    def already_loaded_message(self) -> str:
        return (
            f"No file of {self.contract.qualified_name} in {self.requested} is still in the landing prefix: already"
            " loaded by an earlier run"
        )

    def data_version(self, store: LandingStore) -> dg.DataVersion:
        """The loaded partitions' data version (`files_version`), once the run loaded its files: its days are listed
        again, as the files are now (a loaded file moved under processed/ may have another ETag there than in the
        landing prefix, and an arrival run's own files are not all of its days' files)."""
        return files_version(self.contract, self.days, files_for_days(store, self.contract, self.days))

    def missing_message(self, store_url: str) -> str:
        """The failure of a run that found no file for its days: which table, which days, where it looked."""
        days, contract = self.days, self.contract
        span = f"{days[0]}..{days[-1]}" if len(days) > 1 else str(days[0])
        expected = f"{store_url.rstrip('/')}/{contract.system}/<YYYY-MM-DD>/{contract.file}.<csv|jsonl|parquet>"
        return f"No landing file for {contract.qualified_name} on {span}: expected {expected}"


def select_files(store: LandingStore, contract: SourceTable, tags: Mapping[str, str], days: list[date]) -> Selection:
    """The files the arrival run tagged `tags` was requested for, or (a manual run, a backfill) those of `days`."""
    requested = arrived_keys(tags)
    files = files_arrived(store, requested, contract) if requested else files_for_days(store, contract, days)
    return Selection(contract, days, requested, files)


@dataclass(frozen=True)
class LoadOutcome:
    """What one run did to its table: the files loaded, the files rejected (and where each was quarantined), the
    table's row count after the run, and how many files it checked against the contract."""

    loads: list[FileLoad]
    rejected: list[tuple[ContractViolation, str]]
    rows: int
    checked: int

    def metadata(self) -> dict:
        return load_metadata(self.loads, self.rejected, self.rows)

    def check_result(self) -> dg.AssetCheckResult:
        return contract_result(self.rejected, found=self.checked)

    def materialization(self, version: dg.DataVersion | None = None) -> dg.MaterializeResult:
        """A run with no rejected file: its metadata, and the passed check inside it. The check result comes with
        the materialization: it judges this load, and a load of another day that finishes meanwhile cannot make it
        look like the verdict on an older table (see `assets.contract_failed`). `version`: the partition's data
        version (`files_version`)."""
        return dg.MaterializeResult(metadata=self.metadata(), check_results=[self.check_result()], data_version=version)

    def failure(self) -> dg.Failure:
        """The step failure of a run that quarantined files: names each file, why, and where it went."""
        return dg.Failure(
            description=quarantine_message(self.rejected),
            metadata={**self.metadata(), "quarantined": dg.MetadataValue.json([where for _, where in self.rejected])},
            allow_retries=False,  # the file is quarantined: a retry would find nothing to load
        )


def load_files(
    conn: duckdb.DuckDBPyConnection,
    store: LandingStore,
    contract: SourceTable,
    files: list[LandedFile],
    *,
    processed: ProcessedAction,
    run_id: str,
    log: RunLog,
) -> LoadOutcome:
    """Load `files` into `contract`'s raw table, each in its own transaction, in order.

    A loaded file is marked processed (moved, tagged or left: `processed`); a file that breaks the contract is
    quarantined with its reason and the table keeps its rows. `run_id` is recorded with both.
    """
    loads: list[FileLoad] = []
    rejected: list[tuple[ContractViolation, str]] = []
    for landing_key, obj, stored_at in files:
        try:
            with store.local_path(stored_at) as path:
                loads.append(load_file(conn, contract, FileToLoad(obj, path, landing_key)))
        except ContractViolation as violation:
            moved_to = quarantine(store, stored_at, violation, run_id)
            log.error(f"Rejected {violation}; moved to {moved_to}")
            rejected.append((violation, moved_to))
            continue
        now_at = mark_processed(store, stored_at, landing_key, processed, run_id)
        log.info(f"Loaded {loads[-1].rows_loaded} rows from {landing_key} (now at {now_at})")
    if not loads:  # no file created the table: nothing was left to load, or a new table's first file was rejected
        ensure_table(conn, contract)
    return LoadOutcome(loads, rejected, rows=table_rows(conn, contract), checked=len(files))


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
