"""The local instance's SQLite storage (dagster.yaml, `make dev`): Dagster's own classes, one engine per file.

Dagster's SQLite event log and run storage build a new SQLAlchemy engine for every connection they open and dispose
of it afterwards. An engine also holds SQLAlchemy's compiled-statement cache, so every event written pays for a new
engine *and* recompiles its INSERTs: with 3-6 connections per event (the run's file, then the cross-run index for
asset and check events) that is 10-20 ms per event on a 2-core machine, the largest cost a dbt build pays for
running through Dagster (bench P2: a 100-model build writes ~600 events).

These subclasses keep one engine per database file for the life of the process and change nothing else: the pool
is still `NullPool`, so no connection (and no SQLite lock) is held between uses and the webserver, daemon and run
workers share the files exactly as before; schema, migrations and file layout are Dagster's. Without a `base_dir`
they use Dagster's default folders under DAGSTER_HOME (`history/runs/`, `history/`): dagster.yaml needs no paths.
"""

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._config.config_schema import UserConfigSchema
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SQLITE_BUSY_TIMEOUT_SECONDS, SqliteEventLogStorage
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage
from dagster._core.storage.sql import create_engine
from dagster._serdes import ConfigurableClassData
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool


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


class LocalEventLogStorage(SqliteEventLogStorage):
    """`SqliteEventLogStorage` (one file per run plus a cross-run index) with an engine per file, kept."""

    #: Engines kept for the most recently used run files (the index's is one of them); the webserver and daemon
    #: live for weeks and touch thousands of runs, so older runs' engines are dropped (and rebuilt if needed).
    KEEP_ENGINES = 32

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        super().__init__(base_dir, inst_data=inst_data)

    @classmethod
    def config_type(cls) -> UserConfigSchema:
        return _CONFIG

    @classmethod
    def from_config_value(  # ty: ignore[invalid-method-override]
        cls, inst_data: ConfigurableClassData | None, config_value: dict[str, Any]
    ) -> "LocalEventLogStorage":
        return cls(_base_dir(config_value, "history/runs"), inst_data=inst_data)

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        # As the parent's, but the engine (and its compiled-statement cache) is made once per file.
        with self._db_lock:
            engine = self._engines.get(shard)
            if engine is None:
                engine = self._engines[shard] = create_engine(
                    self.conn_string_for_shard(shard),
                    poolclass=NullPool,
                    connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS},
                )
                while len(self._engines) > self.KEEP_ENGINES:
                    self._engines.popitem(last=False)[1].dispose()
            self._engines.move_to_end(shard)
            if shard not in self._initialized_dbs:
                self._initdb(engine)
                self._initialized_dbs.add(shard)
            with engine.connect() as conn, conn.begin():
                yield conn


class LocalRunStorage(SqliteRunStorage):
    """`SqliteRunStorage` with its engine made once."""

    def __init__(self, conn_string: str, inst_data: ConfigurableClassData | None = None) -> None:
        super().__init__(conn_string, inst_data=inst_data)
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()

    @classmethod
    def config_type(cls) -> UserConfigSchema:
        return _CONFIG

    @classmethod
    def from_config_value(  # ty: ignore[invalid-method-override]
        cls, inst_data: ConfigurableClassData | None, config_value: dict[str, Any]
    ) -> "LocalRunStorage":
        return cls.from_local(_base_dir(config_value, "history"), inst_data=inst_data)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with self._engine_lock:
            if self._engine is None:
                self._engine = create_engine(self._conn_string, poolclass=NullPool)
        with self._engine.connect() as conn, conn.begin():
            yield conn
