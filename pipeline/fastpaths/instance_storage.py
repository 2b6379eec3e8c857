"""The local instance's SQLite storage (devstack/dagster.yaml, `make dev`): Dagster's own classes, one engine per
file, its connection kept open.

Dagster's SQLite event log and run storage build a new SQLAlchemy engine for every connection they open, close the
connection after one transaction and dispose of the engine. That costs three ways, at 3-6 connections per event
(the run's file, then the cross-run index for asset and check events), the largest cost a dbt build pays for running
through Dagster (bench P2: a 100-model build writes ~600 events):
- a new engine throws away SQLAlchemy's compiled-statement cache, so every INSERT is compiled again;
- the files are in WAL mode, and closing the last connection to one checkpoints the WAL into the database and
  deletes it (fsyncs and file creation), which the next connection then creates again;
- each commit fsyncs the WAL (`synchronous=FULL`).

These subclasses keep one engine per database file for the life of the process, with a pool that keeps one idle
connection open, and commit with `synchronous=NORMAL`: in WAL mode that still never corrupts a file, but a power
cut (not a crash of the process) may lose the last transactions before the OS flushed them, an acceptable trade for
a laptop's event log (production runs Postgres: deploy/dagster.production.yaml). Measured: 5.2 ms per stored
materialization with Dagster's classes, 1.9 ms with these. An idle connection holds no lock (each use is one
transaction, as before), so the webserver, daemon and run workers share the files exactly as before; schema,
migrations and file layout are Dagster's. Without a `base_dir` they use Dagster's default folders under
DAGSTER_HOME (`history/runs/`, `history/`): the instance's dagster.yaml needs no paths.
"""

import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._config.config_schema import UserConfigSchema
from dagster._core.event_api import EventLogRecord
from dagster._core.events import DagsterEventType
from dagster._core.events.log import EventLogEntry
from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
    INDEX_SHARD_NAME,
    SQLITE_BUSY_TIMEOUT_SECONDS,
    SqliteEventLogStorage,
)
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.sql import create_engine
from dagster._serdes import ConfigurableClassData
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import QueuePool

from ..core.settings import ConfigurationError
from . import enabled as fast_paths_enabled

#: Every engine made here, so a forked child can drop the connections it inherited (they belong to the parent).
_ENGINES: "weakref.WeakSet[Engine]" = weakref.WeakSet()


def _forget_inherited_connections() -> None:
    for engine in list(_ENGINES):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_inherited_connections)

#: Dagster hands events it marks as a batch (a run's planned events, a partitioned asset's materializations) to
#: `store_event_batch` only when DAGSTER_EVENT_BATCH_SIZE is set, and reads it whenever it handles one. It is set when
#: an instance builds this storage (devstack/dagster.yaml), before it makes a run, so the webserver, the daemon and
#: run workers all batch. Up to this many events share one transaction (others wait through SQLite's busy timeout).
EVENT_BATCH_SIZE = "500"


def _fast() -> bool:
    """Whether this instance's storage takes its fast path. A PIPELINE_FAST_PATHS that is no mode does not stop the
    instance (nor `dagster dev`): its storage is Dagster's own, and the code location's load reports the setting."""
    try:
        return fast_paths_enabled()
    except ConfigurationError:
        return False


def sqlite_engine(conn_string: str, **connect_args: Any) -> Engine:
    """An engine for one SQLite file that keeps one connection open between uses (more are opened, and closed
    after use, when threads overlap), committing with `synchronous=NORMAL`."""
    engine = create_engine(
        conn_string,
        poolclass=QueuePool,
        pool_size=1,
        max_overflow=-1,
        connect_args={**connect_args, "check_same_thread": False},  # the pool hands a connection to any thread
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA synchronous=NORMAL")

    _ENGINES.add(engine)
    return engine


def _base_dir(config_value: dict[str, Any] | None, default_folder: str) -> str:
    """The configured folder, else Dagster's default one under DAGSTER_HOME."""
    configured = (config_value or {}).get("base_dir")
    if configured:
        return configured
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        raise dg.DagsterInvariantViolationError(
            f"{default_folder}/ lives under DAGSTER_HOME, which is not set: set it, or give the storage a base_dir"
        )
    return str(Path(home) / default_folder)


_CONFIG: UserConfigSchema = {"base_dir": dg.Field(dg.StringSource, is_required=False)}


class _Configured:
    """What the instance's dagster.yaml gives both storages: an optional `base_dir` (else Dagster's default folder
    under DAGSTER_HOME). With PIPELINE_FAST_PATHS=off each opens as Dagster's own class, in the same folders."""

    DEFAULT_FOLDER: str

    @classmethod
    def config_type(cls) -> UserConfigSchema:
        return _CONFIG

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: dict[str, Any]) -> Any:
        fast = _fast()
        if fast:
            os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", EVENT_BATCH_SIZE)
        return cls.open(_base_dir(config_value, cls.DEFAULT_FOLDER), inst_data, fast)

    @classmethod
    def open(cls, base_dir: str, inst_data: ConfigurableClassData | None, fast: bool) -> Any:
        raise NotImplementedError


class LocalEventLogStorage(_Configured, SqliteEventLogStorage):
    """`SqliteEventLogStorage` (one file per run plus a cross-run index) with an engine per file, kept open."""

    #: Engines kept for the most recently used run files (the index's is one of them); the webserver and daemon
    #: live for weeks and touch thousands of runs, so older runs' engines are dropped (and rebuilt if needed).
    KEEP_ENGINES = 32

    #: How many assets' last materialization records this process keeps (`stored_materialization`).
    KEEP_MATERIALIZATIONS = 10_000

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        self._engines_lock = threading.RLock()  # not `_db_lock`: has_table is called while that is held
        self._tables: set[str] = set()
        self._batch = threading.local()  # .conns: shard -> the connection a `store_event_batch` writes through
        #: asset key -> the record of the last unpartitioned materialization this process stored (committed)
        self._materializations: OrderedDict[dg.AssetKey, EventLogRecord] = OrderedDict()
        self._uncommitted = threading.local()  # .records: those stored in the current transaction(s)
        super().__init__(base_dir, inst_data=inst_data)

    DEFAULT_FOLDER = "history/runs"

    @classmethod
    def open(cls, base_dir: str, inst_data: ConfigurableClassData | None, fast: bool) -> SqliteEventLogStorage:
        return (cls if fast else SqliteEventLogStorage)(base_dir, inst_data=inst_data)

    def _engine(self, shard: str) -> Engine:
        """The shard's engine, made (and its file initialized) on first use."""
        with self._engines_lock:
            engine = self._engines.get(shard)
            if engine is None:
                engine = self._engines[shard] = sqlite_engine(
                    self.conn_string_for_shard(shard), timeout=SQLITE_BUSY_TIMEOUT_SECONDS
                )
                while len(self._engines) > self.KEEP_ENGINES:
                    self._engines.popitem(last=False)[1].dispose()
            self._engines.move_to_end(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            return engine

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        # As the parent's, but the engine (its compiled-statement cache, its open connection) is made once per file.
        batch = getattr(self._batch, "conns", None)
        if batch is not None:  # inside `store_event_batch` (which holds `_db_lock`): its transaction on the file
            conn = batch.get(shard)
            if conn is None:
                conn = batch[shard] = self._batch.stack.enter_context(self._engine(shard).connect())
                self._batch.stack.enter_context(conn.begin())
            yield conn
            return
        with self._db_lock, self._engine(shard).connect() as conn, conn.begin():
            yield conn

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """Store the events as `store_event` does, in one transaction per file instead of one or two per event.

        Dagster hands a batch here when DAGSTER_EVENT_BATCH_SIZE is set (this module sets it, above): the
        planned events of a run's assets and checks, written before its first step (941 for a 500-model build),
        and a partitioned asset's materializations. If one write fails, every file's transaction rolls back and
        Dagster stores the events one by one.
        """
        self._uncommitted.records = []
        try:
            with self._db_lock, ExitStack() as stack:
                self._batch.stack, self._batch.conns = stack, {}
                try:
                    for event in events:
                        self.store_event(event)
                finally:
                    self._batch.conns = None
            self._remember(self._uncommitted.records)  # committed as the stack closed
        finally:
            self._uncommitted.records = None

    def store_event(self, event: EventLogEntry) -> None:
        if getattr(self._batch, "conns", None) is not None:  # part of a batch: remembered once it commits
            super().store_event(event)
            return
        self._uncommitted.records = []
        try:
            super().store_event(event)
            self._remember(self._uncommitted.records)
        finally:
            self._uncommitted.records = None

    def _store_asset_event(self, conn: Connection, event: EventLogEntry, event_id: int) -> None:
        super()._store_asset_event(conn, event, event_id)
        dagster_event = event.dagster_event
        pending = getattr(self._uncommitted, "records", None)
        if (
            pending is not None
            and dagster_event is not None
            and dagster_event.event_type == DagsterEventType.ASSET_MATERIALIZATION
            and dagster_event.partition is None
        ):
            pending.append(EventLogRecord(storage_id=event_id, event_log_entry=event))

    def _remember(self, records: list[EventLogRecord]) -> None:
        with self._engines_lock:
            for record in records:
                key = record.asset_key
                self._materializations.pop(key, None)
                self._materializations[key] = record
            while len(self._materializations) > self.KEEP_MATERIALIZATIONS:
                self._materializations.popitem(last=False)

    def stored_materialization(self, asset_key: dg.AssetKey, run_id: str) -> EventLogRecord | None:
        """The record of the asset's last unpartitioned materialization, when this process stored it for `run_id`
        (what `get_asset_records` would return for it, without the query and the event's deserialization).

        A run worker asks for exactly that right after storing it: Dagster's data-version bookkeeping reads back
        each materialization of a step for its children's provenance and its checks' target (one query and one
        deserialized event per asset: ~1,000 for a 1,000-model dbt build, bench P2). See pipeline/dagster_patches.
        """
        with self._engines_lock:
            record = self._materializations.get(asset_key)
        return record if record is not None and record.run_id == run_id else None

    def wipe(self) -> None:
        # The parent deletes the run files: close what we hold open on them first.
        with self._engines_lock:
            for shard in [s for s in self._engines if s != INDEX_SHARD_NAME]:
                self._engines.pop(shard).dispose()
        super().wipe()

    def dispose(self) -> None:
        with self._engines_lock:
            while self._engines:
                self._engines.popitem()[1].dispose()
        super().dispose()

    def has_table(self, table_name: str) -> bool:
        """As the parent's (which reflects the index file through a new engine on every call, twice per asset check
        event), but a table once found is remembered: migrations add tables, they do not drop them."""
        if table_name in self._tables:
            return True
        engine = self._engine(INDEX_SHARD_NAME)
        with engine.connect() as conn:
            found = bool(engine.dialect.has_table(conn, table_name))
        if found:
            self._tables.add(table_name)
        return found


class LocalRunStorage(_Configured, SqliteRunStorage):
    """`SqliteRunStorage` with its engine (and an open connection) made once."""

    def __init__(self, conn_string: str, inst_data: ConfigurableClassData | None = None) -> None:
        super().__init__(conn_string, inst_data=inst_data)
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()

    DEFAULT_FOLDER = "history"

    @classmethod
    def open(cls, base_dir: str, inst_data: ConfigurableClassData | None, fast: bool) -> SqliteRunStorage:
        return (cls if fast else SqliteRunStorage).from_local(base_dir, inst_data=inst_data)

    def dispose(self) -> None:
        with self._engine_lock:
            if self._engine is not None:
                self._engine.dispose()  # closes the connection kept open
                self._engine = None
        super().dispose()

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with self._engine_lock:
            if self._engine is None:
                self._engine = sqlite_engine(self._conn_string)
        with self._engine.connect() as conn, conn.begin():
            yield conn
