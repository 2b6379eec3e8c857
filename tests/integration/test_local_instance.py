"""The local instance of dagster.yaml: Dagster's SQLite storage with one engine per file (pipeline/instance_storage)."""

import shutil

import dagster as dg
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.runs.sqlite.sqlite_run_storage import SqliteRunStorage

from pipeline.instance_storage import LocalEventLogStorage, LocalRunStorage
from pipeline.settings import REPO_ROOT


@dg.asset
def numbers() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"rows": 3})


@dg.asset(deps=[numbers])
def doubled() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"rows": 6})


def test_runs_and_events_land_in_dagsters_own_files(tmp_path, monkeypatch):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home)
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
