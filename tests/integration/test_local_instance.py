"""The local instance of devstack/dagster.yaml: Dagster's SQLite storage with one engine per file
(pipeline/instance_storage)."""

import shutil

import dagster as dg
import pytest
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage

from devstack import INSTANCE_YAML
from pipeline.core.settings import Settings, SettingsError
from pipeline.fastpaths.instance_storage import LocalEventLogStorage, LocalRunStorage


@dg.asset
def numbers() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"rows": 3})


@dg.asset(deps=[numbers])
def doubled() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"rows": 6})


@pytest.mark.parametrize("mode", ["off", "maybe"])
def test_with_the_fast_paths_off_the_instance_is_dagsters_own(tmp_path, monkeypatch, mode):
    """Off, or set to no mode at all: the instance (the webserver's, the daemon's) still starts, on Dagster's own
    storage; a bad value is the code location's load error, with the other settings'."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(INSTANCE_YAML, home)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("PIPELINE_FAST_PATHS", mode)
    if mode == "maybe":
        with pytest.raises(SettingsError, match=r"PIPELINE_FAST_PATHS='maybe': expected one of auto, on, off"):
            Settings.from_env()
    with dg.DagsterInstance.get() as instance:
        assert type(instance.event_log_storage) is SqliteEventLogStorage
        assert type(instance.run_storage) is SqliteRunStorage
        result = dg.materialize([numbers, doubled], instance=instance)
        assert result.success
    assert (home / "history" / "runs.db").exists() and (home / "history" / "runs" / f"{result.run_id}.db").exists()


@pytest.mark.fastpaths
def test_runs_and_events_land_in_dagsters_own_files(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(INSTANCE_YAML, home)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        assert isinstance(instance.event_log_storage, LocalEventLogStorage)
        assert isinstance(instance.run_storage, LocalRunStorage)
        for _ in range(2):  # the second run reuses the engines the first one made
            result = dg.materialize([numbers, doubled], instance=instance)
            assert result.success
        records = instance.fetch_materializations(dg.AssetKey("doubled"), limit=10).records
        assert [r.asset_materialization.metadata["rows"].value for r in records] == [6, 6]
        assert len(instance.event_log_storage._engines) == 3  # noqa: SLF001 - the cross-run index and two runs
        # A long-lived process keeps engines for the most recent files only; a dropped one is simply rebuilt.
        monkeypatch.setattr(LocalEventLogStorage, "KEEP_ENGINES", 2)
        result = dg.materialize([numbers, doubled], instance=instance)
        assert len(instance.event_log_storage._engines) == 2  # noqa: SLF001
        assert len(instance.fetch_materializations(dg.AssetKey("doubled"), limit=10).records) == 3
        run_id = result.run_id

    # The files are where Dagster keeps them by default, in its schema: its own classes read them.
    assert (home / "history" / "runs.db").exists() and (home / "history" / "runs" / f"{run_id}.db").exists()
    events = SqliteEventLogStorage(str(home / "history" / "runs"))
    assert any(e.dagster_event_type == dg.DagsterEventType.RUN_SUCCESS for e in events.get_logs_for_run(run_id))
    runs = SqliteRunStorage.from_local(str(home / "history"))
    assert {r.run_id: r.status for r in runs.get_runs()}[run_id] == dg.DagsterRunStatus.SUCCESS


@dg.asset_check(asset=doubled)
def doubled_is_even() -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


def _planned(instance: dg.DagsterInstance, run_id: str) -> list:
    planned = (dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED, dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED)
    return [e for e in instance.all_logs(run_id) if e.dagster_event_type in planned]


@pytest.mark.fastpaths
def test_a_runs_planned_events_are_written_as_one_batch(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(INSTANCE_YAML, home)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    batches: list[int] = []
    store_event_batch = LocalEventLogStorage.store_event_batch

    def counted(self, events):
        batches.append(len(events))
        store_event_batch(self, events)

    monkeypatch.setattr(LocalEventLogStorage, "store_event_batch", counted)
    with dg.DagsterInstance.get() as instance:
        result = dg.materialize([numbers, doubled, doubled_is_even], instance=instance)
        assert result.success
        assert batches == [3]  # two assets and a check, before the first step
        planned = _planned(instance, result.run_id)
        assert [e.dagster_event.asset_key for e in planned if e.dagster_event.asset_key] == [
            dg.AssetKey("doubled"),
            dg.AssetKey("numbers"),
        ]
        # ... and in the cross-run index: the check's planned execution, completed by its evaluation.
        check_key = dg.AssetCheckKey(dg.AssetKey("doubled"), "doubled_is_even")
        executions = instance.event_log_storage.get_asset_check_execution_history(check_key, limit=5)
        assert [(e.run_id, e.status.value) for e in executions] == [(result.run_id, "SUCCEEDED")]
        assert instance.get_latest_planned_materialization_info(dg.AssetKey("numbers")).run_id == result.run_id

        # A batch that fails part-way (at its last event, the check's) leaves nothing behind in either file, not
        # even the asset events written before it (Dagster then stores the events one by one).
        assert planned[-1].dagster_event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED
        storage = instance.event_log_storage
        events = [e._replace(run_id="batch-rolled-back") for e in planned]  # noqa: SLF001 - EventLogEntry is a tuple

        def broken(*_args, **_kwargs):
            raise RuntimeError("disk full")

        monkeypatch.setattr(storage, "store_asset_check_event", broken)
        with pytest.raises(RuntimeError, match="disk full"):
            storage.store_event_batch(events)
        assert instance.all_logs("batch-rolled-back") == []
        assert instance.get_latest_planned_materialization_info(dg.AssetKey("numbers")).run_id == result.run_id
