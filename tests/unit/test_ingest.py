"""The ingestion asset's steps without Dagster: which files a run loads, loading and quarantining them, and the
metadata, check result and failure the run reports (a real DuckDB and a landing folder in tmp_path)."""

import json
import logging
from dataclasses import replace
from datetime import date
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from pipeline.core.objectstore import LocalLandingStore
from pipeline.ingestion.contracts import CONTRACT_CHECK
from pipeline.ingestion.ingest import LoadOutcome, load_files, select_files
from pipeline.ingestion.quarantine import ProcessedAction
from pipeline.ingestion.sensor import LANDING_KEY_TAG, LANDING_KEYS_TAG
from tests.unit.test_loader import CONTRACT as LOADER_CONTRACT
from tests.unit.test_loader import HEADER

#: test_loader's table (thing_id, code, price, seen_at), loading extra columns.
CONTRACT = replace(LOADER_CONTRACT, extra_columns="load")
DAYS = [date(2026, 11, 1), date(2026, 11, 2)]
LOG = logging.getLogger("test_ingest")


def land(root: Path, key: str, text: str) -> str:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return key


@pytest.fixture
def store(tmp_path) -> LocalLandingStore:
    return LocalLandingStore(tmp_path / "landing")


@pytest.fixture
def conn():
    with duckdb.connect(":memory:") as c:
        yield c


def load(conn, store, tags=None, days=DAYS, processed=ProcessedAction.MOVE) -> LoadOutcome:
    selection = select_files(store, CONTRACT, tags or {}, days)
    return load_files(conn, store, CONTRACT, selection.files, processed=processed, run_id="run-1", log=LOG)


def test_a_backfill_selects_its_days_files_from_landing_and_processed_the_landing_one_winning(store):
    land(store.root, "shop/2026-10-31/things.csv", "before the days")
    land(store.root, "processed/shop/2026-11-01/things.csv", "loaded before")
    land(store.root, "shop/2026-11-01/things.csv", "delivered again")
    land(store.root, "processed/shop/2026-11-02/things.jsonl", "loaded before")
    land(store.root, "shop/2026-11-02/others.csv", "another table")
    land(store.root, "shop/2026-11-03/things.csv", "after the days")

    selection = select_files(store, CONTRACT, {}, DAYS)

    assert [(key, stored_at) for key, _, stored_at in selection.files] == [
        ("shop/2026-11-01/things.csv", "shop/2026-11-01/things.csv"),
        ("shop/2026-11-02/things.jsonl", "processed/shop/2026-11-02/things.jsonl"),
    ]
    assert (selection.requested, selection.already_loaded) == ([], False)


def test_an_arrival_run_selects_the_requested_files_of_its_table_still_in_the_landing_prefix(store):
    land(store.root, "shop/2026-11-01/things.csv", "x")
    land(store.root, "shop/2026-11-01/others.csv", "another table")
    land(store.root, "shop/2026-11-02/things.csv", "not requested")
    requested = ["shop/2026-11-01/things.csv", "shop/2026-11-01/others.csv", "shop/2026-11-02/things.jsonl"]

    several = select_files(store, CONTRACT, {LANDING_KEYS_TAG: json.dumps(requested)}, DAYS)
    one = select_files(store, CONTRACT, {LANDING_KEY_TAG: "shop/2026-11-01/things.csv"}, DAYS)

    assert [key for key, _, _ in several.files] == ["shop/2026-11-01/things.csv"]  # the .jsonl was moved already
    assert [key for key, _, _ in one.files] == ["shop/2026-11-01/things.csv"]
    assert not several.already_loaded and not one.already_loaded


def test_an_arrival_run_whose_file_a_sibling_run_loaded_says_so(store):
    selection = select_files(store, CONTRACT, {LANDING_KEY_TAG: "shop/2026-11-01/things.csv"}, DAYS)

    assert selection.already_loaded
    assert selection.already_loaded_message() == (
        "No file of raw.things in ['shop/2026-11-01/things.csv'] is still in the landing prefix: already loaded by"
        " an earlier run"
    )


def test_a_run_without_files_names_the_table_the_days_and_where_it_looked(store):
    several = select_files(store, CONTRACT, {}, DAYS)
    one = select_files(store, CONTRACT, {}, DAYS[:1])

    assert not several.files and not several.already_loaded
    assert several.missing_message("s3://bucket/landing/") == (
        "No landing file for raw.things on 2026-11-01..2026-11-02: expected"
        " s3://bucket/landing/shop/<YYYY-MM-DD>/things.<csv|jsonl|parquet>"
    )
    assert one.missing_message("/data/landing").startswith("No landing file for raw.things on 2026-11-01: expected")


def test_loads_good_files_and_quarantines_the_bad_one_with_its_reason(store, conn, caplog):
    with_colour = HEADER.replace("\n", ",colour\n")
    land(store.root, "shop/2026-11-01/things.csv", with_colour + "1,a,1,2026-11-01,red\n2,b,2,2026-11-01,blue\n")
    land(store.root, "shop/2026-11-02/things.csv", HEADER + "3,c,1,2026-11-02\n3,d,1,2026-11-02\n")  # duplicate key

    with caplog.at_level(logging.INFO, logger=LOG.name):
        outcome = load(conn, store)

    assert [f.key for f in outcome.loads] == ["shop/2026-11-01/things.csv"]
    assert conn.execute("SELECT thing_id, code, colour FROM raw.things ORDER BY 1").fetchall() == [
        (1, "a", "red"),
        (2, "b", "blue"),
    ]
    [(violation, where)] = outcome.rejected
    assert where == "quarantine/2026-11-02/shop/things.csv"
    assert (store.root / where).exists() and not (store.root / "shop/2026-11-02/things.csv").exists()
    reason = json.loads((store.root / f"{where}.reason.json").read_text())
    assert (reason["key"], reason["check"]) == ("shop/2026-11-02/things.csv", violation.check)
    assert reason["run_id"] == "run-1"
    assert (store.root / "processed/shop/2026-11-01/things.csv").exists()
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "Loaded 2 rows from shop/2026-11-01/things.csv (now at processed/shop/2026-11-01/things.csv)"),
        ("ERROR", f"Rejected {violation}; moved to {where}"),
    ]

    metadata = outcome.metadata()
    counts = ("dagster/row_count", "rows_loaded", "rows_replaced", "files", "rejected_files")
    assert {k: metadata[k] for k in counts} == {
        "dagster/row_count": 2,
        "rows_loaded": 2,
        "rows_replaced": 0,
        "files": 1,
        "rejected_files": 1,
    }
    assert (metadata["landing_key"], metadata["extra_columns"]) == ("shop/2026-11-01/things.csv", "colour")
    assert metadata["bytes"] == (store.root / "processed/shop/2026-11-01/things.csv").stat().st_size

    check = outcome.check_result()
    assert (check.check_name, check.passed, check.severity) == (CONTRACT_CHECK, False, dg.AssetCheckSeverity.ERROR)
    assert check.description == f"{violation} -> quarantined at {where}"
    assert check.metadata["files_checked"].value == 2
    assert check.metadata["rejections"].value == [violation.reason()]
    assert check.metadata["quarantined"].value == [where]

    failure = outcome.failure()
    assert failure.description == check.description and not failure.allow_retries
    assert failure.metadata["quarantined"].value == [where]
    assert failure.metadata["dagster/row_count"].value == 2


def test_a_clean_run_materializes_with_its_passed_check_and_keys_of_several_files(store, conn):
    land(store.root, "shop/2026-11-01/things.csv", HEADER + "1,a,1,2026-11-01\n")
    land(store.root, "shop/2026-11-02/things.csv", HEADER + "2,b,1,2026-11-02\n3,c,1,2026-11-02\n")

    result = load(conn, store).materialization()

    assert result.metadata["files"] == 2 and result.metadata["dagster/row_count"] == 3
    assert result.metadata["landing_keys"].value == ["shop/2026-11-01/things.csv", "shop/2026-11-02/things.csv"]
    assert "landing_key" not in result.metadata and "extra_columns" not in result.metadata
    [check] = result.check_results
    assert (check.passed, check.description) == (True, "2 landed file(s) met the contract.")
    assert set(check.metadata) == {"files_checked", "rejected_files"}


def test_a_reload_replaces_the_files_rows_and_leave_keeps_the_file_where_it_landed(store, conn):
    key = land(store.root, "shop/2026-11-01/things.csv", HEADER + "1,a,1,2026-11-01\n2,b,1,2026-11-01\n")
    load(conn, store, processed=ProcessedAction.LEAVE)
    land(store.root, key, HEADER + "1,z,1,2026-11-01\n")

    outcome = load(conn, store, processed=ProcessedAction.LEAVE)

    assert (outcome.metadata()["rows_replaced"], outcome.metadata()["dagster/row_count"]) == (2, 1)
    assert (store.root / key).exists() and not (store.root / "processed").exists()


def test_tag_marks_the_loaded_file_with_the_run(store, conn):
    key = land(store.root, "shop/2026-11-01/things.csv", HEADER + "1,a,1,2026-11-01\n")

    load(conn, store, processed=ProcessedAction.TAG)

    assert store.get_tags(key) == {"pipeline-status": "processed", "pipeline-run-id": "run-1"}


def test_nothing_left_to_load_reports_the_table_as_it_stands(store, conn):
    outcome = load(conn, store, tags={LANDING_KEY_TAG: "shop/2026-11-01/things.csv"})

    assert (outcome.loads, outcome.rejected, outcome.rows, outcome.checked) == ([], [], 0, 0)
    result = outcome.materialization()
    assert result.metadata["files"] == 0 and result.metadata["dagster/row_count"] == 0
    assert result.check_results[0].description == "0 landed file(s) met the contract."


def test_a_new_tables_first_file_rejected_still_reports_the_quarantine(store, conn):
    land(store.root, "shop/2026-11-01/things.csv", "thing_id,price,seen_at\n1,1,2026-11-01\n")  # no `code` column

    outcome = load(conn, store)

    [(violation, where)] = outcome.rejected
    assert violation.check == "required_columns" and "missing required column(s) code" in str(violation)
    assert (outcome.loads, outcome.rows) == ([], 0)  # the table exists, empty, for dbt's sources
    assert outcome.failure().description == f"{violation} -> quarantined at {where}"
