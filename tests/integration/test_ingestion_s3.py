"""Ingestion against a real S3 API (moto's server on loopback): every kind of bad landing file, and good ones.

Each rejected file must end in quarantine/<date>/<system>/ next to a reason file an analytics engineer can act
on, fail the asset with that message, fail the `landing_contract` check, and leave the raw table untouched.
"""

import gzip
import json
import socket
import subprocess
import sys
import time
import tracemalloc
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from pipeline.core.resources import LandingResource, WarehouseResource
from pipeline.ingestion.assets import build_ingestion_asset
from pipeline.ingestion.contracts import load_contracts
from pipeline.ingestion.quarantine import ProcessedAction
from tests.s3_fixtures import S3Bucket

pytest_plugins = ["tests.s3_fixtures"]

CONTRACTS = {c.table: c for c in load_contracts()}
PARTITIONS = dg.DailyPartitionsDefinition(start_date="2026-11-01", end_offset=1)
DAY = "2026-11-02"
HEADER = "customer_id,email,first_name,last_name,country_code,signup_channel,marketing_opt_in,created_at,updated_at"


def customer(i: int, email: str | None = None) -> str:
    return f"{i},{email or f'c{i}@example.com'},Ann,Lee,US,organic,true,2026-11-01 10:00:00,2026-11-01 10:00:00"


@pytest.fixture
def env(s3_bucket, tmp_path):
    client = s3_bucket.client()
    resources = {
        "warehouse": WarehouseResource(path=str(tmp_path / "w.duckdb")),
        "landing": LandingResource(url=f"s3://{s3_bucket.bucket}/landing", endpoint_url=s3_bucket.endpoint_url),
    }

    def put(key: str, body: bytes | str) -> None:
        client.put_object(
            Bucket=s3_bucket.bucket, Key=f"landing/{key}", Body=body.encode() if isinstance(body, str) else body
        )

    def keys() -> list[str]:
        listed = client.list_objects_v2(Bucket=s3_bucket.bucket).get("Contents", [])
        return sorted(o["Key"].removeprefix("landing/") for o in listed)

    def read(key: str) -> str:
        return client.get_object(Bucket=s3_bucket.bucket, Key=f"landing/{key}")["Body"].read().decode()

    def load(table: str = "customers", day: str = DAY):
        asset = build_ingestion_asset(CONTRACTS[table], PARTITIONS, ProcessedAction.MOVE)
        instance = dg.DagsterInstance.ephemeral()
        result = dg.materialize(
            [asset], partition_key=day, resources=resources, instance=instance, raise_on_error=False
        )
        return result, instance

    def rows(sql: str = "select customer_id, email from raw.customers order by 1"):
        with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as conn:
            return conn.execute(sql).fetchall()

    # A good day already loaded: rejections must leave it exactly as it is.
    put("shop/2026-11-01/customers.csv", f"{HEADER}\n{customer(1)}\n")
    assert load(day="2026-11-01")[0].success
    return type("Env", (), {"put": put, "listing": keys, "read": read, "load": load, "rows": rows})


def rejected(env, key: str, body, check: str):
    before = env.rows()
    env.put(key, body)
    result, instance = env.load()
    assert not result.success
    assert env.rows() == before, "the raw table is untouched"
    name = key.rsplit("/", 1)[1]
    quarantined = f"quarantine/{DAY}/shop/{name}"
    assert quarantined in env.listing() and key not in env.listing()
    reason = json.loads(env.read(quarantined + ".reason.json"))
    assert reason["check"] == check and reason["key"] == key and reason["replay"].endswith(quarantined)
    # The failure says which file, what was wrong and where it went; the contract check records it.
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert key in failure.step_failure_data.error.message and quarantined in failure.step_failure_data.error.message
    evaluation = next(iter(result.get_asset_check_evaluations()))
    assert evaluation.check_name == "landing_contract" and not evaluation.passed
    return reason


def test_empty_file(env):
    reason = rejected(env, f"shop/{DAY}/customers.csv", b"", "header")
    assert "empty" in reason["message"] and "customer_id" in reason["expected"]


def test_header_only_loads_zero_rows(env):
    env.put(f"shop/{DAY}/customers.csv", HEADER + "\n")
    result, _ = env.load()
    assert result.success
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["rows_loaded"].value == 0 and meta["files"].value == 1


def test_wrong_delimiter(env):
    body = HEADER.replace(",", ";") + "\n" + customer(2).replace(",", ";") + "\n"
    reason = rejected(env, f"shop/{DAY}/customers.csv", body, "required_columns")
    assert "delimited by something else than ','" in reason["message"]


def test_missing_required_column(env):
    body = HEADER.replace(",email", "") + "\n" + customer(2).replace(",c2@example.com", "") + "\n"
    reason = rejected(env, f"shop/{DAY}/customers.csv", body, "required_columns")
    assert reason["column"] == "email" and "email" in reason["expected"] and "email" not in reason["found"]


def test_extra_column_is_reported_and_ignored(env):
    env.put(f"shop/{DAY}/customers.csv", f"{HEADER},loyalty_tier\n{customer(2)},gold\n")
    result, _ = env.load()
    assert result.success
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert meta["extra_columns"].value == "loyalty_tier"
    assert env.rows() == [(1, "c1@example.com"), (2, "c2@example.com")]


def test_value_not_castable(env):
    body = f"{HEADER}\n{customer(2)}\n{customer(3).replace('2026-11-01 10:00:00', 'yesterday', 1)}\n"
    reason = rejected(env, f"shop/{DAY}/customers.csv", body, "castable")
    assert (reason["line"], reason["column"], reason["found"]) == (3, "created_at", "yesterday")
    assert reason["expected"] == "TIMESTAMP"


def test_non_utf8_bytes(env):
    body = (
        f"{HEADER}\n{customer(2)}\n".encode()
        + "3,jos\xe9@example.com,Jos\xe9".encode("latin-1")
        + b",Lee,US,organic,true,2026-11-01,2026-11-01\n"
    )
    reason = rejected(env, f"shop/{DAY}/customers.csv", body, "encoding")
    assert reason["expected"] == "UTF-8"


def test_byte_order_mark_is_accepted(env):
    env.put(f"shop/{DAY}/customers.csv", b"\xef\xbb\xbf" + f"{HEADER}\n{customer(2)}\n".encode())
    assert env.load()[0].success
    assert env.rows()[-1] == (2, "c2@example.com")


def test_quoted_field_with_a_newline(env):
    body = f"{HEADER}\n{customer(2).replace('Ann', chr(34) + 'Ann' + chr(10) + 'Marie' + chr(34))}\n"
    env.put(f"shop/{DAY}/customers.csv", body)
    assert env.load()[0].success
    assert env.rows("select first_name from raw.customers where customer_id = 2") == [("Ann\nMarie",)]


def test_truncated_gzip(env):
    body = gzip.compress(f"{HEADER}\n{customer(2)}\n{customer(3)}\n".encode() * 50)[:-40]
    reason = rejected(env, f"shop/{DAY}/customers.csv.gz", body, "readable")
    assert "gzip" in reason["message"].lower()


def test_gzip_jsonl_and_parquet_load(env):
    orders = [
        {
            "order_id": 7,
            "customer_id": 1,
            "order_status": "placed",
            "sales_channel": "web",
            "shipping_country": "US",
            "ordered_at": "2026-11-02 09:00:00",
            "updated_at": "2026-11-02 09:00:00",
        }
    ]
    env.put(f"shop/{DAY}/orders.jsonl.gz", gzip.compress("\n".join(json.dumps(o) for o in orders).encode()))
    assert env.load("orders")[0].success
    assert env.rows("select order_id, order_status from raw.orders") == [(7, "placed")]


def test_duplicate_primary_key_within_a_file(env):
    reason = rejected(
        env, f"shop/{DAY}/customers.csv", f"{HEADER}\n{customer(2)}\n{customer(2)}\n", "primary_key_unique"
    )
    assert reason["column"] == "customer_id"


def test_same_object_delivered_twice_loads_once(env):
    body = f"{HEADER}\n{customer(2)}\n"
    for _ in range(2):
        env.put(f"shop/{DAY}/customers.csv", body)
        assert env.load()[0].success
    assert env.rows() == [(1, "c1@example.com"), (2, "c2@example.com")]
    assert f"processed/shop/{DAY}/customers.csv" in env.listing()


def test_reupload_with_new_content_replaces_that_files_rows(env):
    env.put(f"shop/{DAY}/customers.csv", f"{HEADER}\n{customer(2)}\n{customer(3)}\n")
    assert env.load()[0].success
    env.put(f"shop/{DAY}/customers.csv", f"{HEADER}\n{customer(2, 'new@example.com')}\n")
    result, _ = env.load()
    assert result.success
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    assert (meta["rows_replaced"].value, meta["rows_loaded"].value, meta["dagster/row_count"].value) == (2, 1, 2)
    assert env.rows() == [(1, "c1@example.com"), (2, "new@example.com")]


@pytest.fixture
def moto_in_another_process(s3_bucket):
    """moto in its own process, so the memory its server spends on serving the object is not counted here."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        yield S3Bucket(endpoint, s3_bucket.bucket)
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_large_file_is_streamed_not_read_into_python(moto_in_another_process, tmp_path):
    """Python's peak allocation while loading a 36 MB file is no larger than for a one-row file: the download
    streams to disk in bounded parts and DuckDB reads the file, so Python never holds its rows."""
    bucket = moto_in_another_process
    client = bucket.client()
    client.create_bucket(Bucket=bucket.bucket)
    resources = {
        "warehouse": WarehouseResource(path=str(tmp_path / "w.duckdb")),
        "landing": LandingResource(url=f"s3://{bucket.bucket}/landing", endpoint_url=bucket.endpoint_url),
    }
    asset = build_ingestion_asset(CONTRACTS["customers"], PARTITIONS, ProcessedAction.MOVE)

    def peak_while_loading(day: str, body: bytes) -> int:
        client.put_object(Bucket=bucket.bucket, Key=f"landing/shop/{day}/customers.csv", Body=body)
        tracemalloc.start()
        try:
            dg.materialize([asset], partition_key=day, resources=resources, instance=dg.DagsterInstance.ephemeral())
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    small = peak_while_loading("2026-11-01", f"{HEADER}\n{customer(1)}\n".encode())
    body = (HEADER + "\n" + "".join(customer(i) + "\n" for i in range(10, 400_010))).encode()
    size = len(body)
    assert size > 30_000_000
    large = peak_while_loading(DAY, body)
    del body
    with duckdb.connect(str(tmp_path / "w.duckdb"), read_only=True) as conn:
        assert conn.execute("select count(*) from raw.customers").fetchone() == (400_001,)
    # A read into Python would add at least the file size; the download keeps a few MB of parts in flight.
    assert large - small < size / 4, f"peak grew by {large - small} bytes for a {size}-byte file"


def test_arrival_sensor_to_loaded_partition_end_to_end(env, s3_bucket, tmp_path):
    """A file lands -> one tick requests its partition -> the run loads exactly that file and moves it to
    processed/ -> the next tick requests nothing; a re-upload with new content is requested and loaded again."""
    from pipeline.ingestion.sensor import build_arrival_sensor

    day = datetime.now(UTC).date().isoformat()  # inside the sensor's look-back window

    resources = {
        "warehouse": WarehouseResource(path=str(tmp_path / "w.duckdb")),
        "landing": LandingResource(url=f"s3://{s3_bucket.bucket}/landing", endpoint_url=s3_bucket.endpoint_url),
    }
    contracts = list(CONTRACTS.values())
    assets = [build_ingestion_asset(c, PARTITIONS, ProcessedAction.MOVE) for c in contracts]
    sensor = build_arrival_sensor(contracts, minimum_interval_seconds=30, overlap_seconds=300, lookback_days=7)
    defs = dg.Definitions(assets=assets, sensors=[sensor], resources=resources)

    def tick(cursor):
        return sensor.evaluate_tick(dg.build_sensor_context(cursor=cursor, definitions=defs, resources=resources))

    def run(request):
        job = defs.resolve_implicit_global_asset_job_def().get_subset(asset_selection=set(request.asset_selection))
        return job.execute_in_process(
            partition_key=request.partition_key, tags=request.tags, instance=dg.DagsterInstance.ephemeral()
        )

    first = tick(None)  # the fixture's 2026-11-01 file is already under processed/: nothing waits
    assert not first.run_requests
    env.put(f"shop/{day}/customers.csv", f"{HEADER}\n{customer(2)}\n")
    second = tick(first.cursor)
    [request] = second.run_requests
    assert request.partition_key == day and request.tags["pipeline/landing_key"] == f"shop/{day}/customers.csv"
    assert run(request).success
    assert env.rows() == [(1, "c1@example.com"), (2, "c2@example.com")]
    assert f"processed/shop/{day}/customers.csv" in env.listing()
    third = tick(second.cursor)
    assert not third.run_requests

    env.put(f"shop/{day}/customers.csv", f"{HEADER}\n{customer(2, 'moved@example.com')}\n")
    [again] = tick(third.cursor).run_requests
    assert again.run_key != request.run_key
    assert run(again).success
    assert env.rows() == [(1, "c1@example.com"), (2, "moved@example.com")]


def test_replay_a_corrected_file(env, s3_bucket, tmp_path, monkeypatch):
    from pipeline.replay import main as replay

    key = f"shop/{DAY}/customers.csv"
    rejected(env, key, f"{HEADER}\n{customer(2)}\n{customer(2)}\n", "primary_key_unique")
    quarantined = f"quarantine/{DAY}/shop/customers.csv"
    env.put(quarantined, f"{HEADER}\n{customer(2)}\n")  # the corrected file, in place
    for name, value in {
        "LANDING_URL": f"s3://{s3_bucket.bucket}/landing",
        "LANDING_ENDPOINT_URL": s3_bucket.endpoint_url,
        "DUCKDB_PATH": str(tmp_path / "w.duckdb"),
    }.items():
        monkeypatch.setenv(name, value)
    # `make dev`'s instance (devstack/dagster.yaml, our own storage), typed in a second shell: no DAGSTER_HOME.
    # The replay's run must be recorded there, where the UI reads.
    from devstack import INSTANCE_YAML
    from pipeline import replay as replay_module

    home = tmp_path / ".dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML.read_text())
    monkeypatch.setattr(replay_module, "DEV_HOME", home)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    replay([quarantined, "--in-process"])
    assert env.rows() == [(1, "c1@example.com"), (2, "c2@example.com")]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        [record] = instance.get_run_records()
        assert record.dagster_run.status == dg.DagsterRunStatus.SUCCESS
        assert record.dagster_run.tags["dagster/partition"] == DAY
    listing = env.listing()
    assert f"processed/{key}" in listing and quarantined not in listing and quarantined + ".reason.json" not in listing


def test_a_backlog_of_consecutive_days_loads_in_one_ranged_run(env, s3_bucket, tmp_path):
    from pipeline.ingestion.sensor import build_arrival_sensor

    resources = {
        "warehouse": WarehouseResource(path=str(tmp_path / "w.duckdb")),
        "landing": LandingResource(url=f"s3://{s3_bucket.bucket}/landing", endpoint_url=s3_bucket.endpoint_url),
    }
    asset = build_ingestion_asset(CONTRACTS["customers"], PARTITIONS, ProcessedAction.MOVE)
    sensor = build_arrival_sensor(
        [CONTRACTS["customers"]], minimum_interval_seconds=30, overlap_seconds=300, lookback_days=7
    )
    defs = dg.Definitions(assets=[asset], sensors=[sensor], resources=resources)
    today = datetime.now(UTC).date()
    days = [(today - timedelta(days=d)).isoformat() for d in (2, 1, 0)]
    for i, day in enumerate(days):
        env.put(f"shop/{day}/customers.csv", f"{HEADER}\n{customer(10 + i)}\n")
    [request] = sensor.evaluate_tick(dg.build_sensor_context(definitions=defs, resources=resources)).run_requests
    assert request.tags["dagster/asset_partition_range_start"] == days[0]
    assert request.tags["dagster/asset_partition_range_end"] == days[-1]
    job = defs.resolve_implicit_global_asset_job_def()
    assert job.execute_in_process(tags=request.tags, instance=dg.DagsterInstance.ephemeral()).success
    assert [r[0] for r in env.rows()] == [1, 10, 11, 12]
    assert all(f"processed/shop/{day}/customers.csv" in env.listing() for day in days)


def test_a_backlog_of_every_table_is_one_run_and_each_table_loads_its_own_files(env, s3_bucket, tmp_path):
    """The demo's backlog (every table, consecutive days) lands at once: one run over the range for all five raw
    tables, not one per table (or per file); each loads exactly its own files."""
    from devstack.demo_data import generate
    from pipeline.ingestion.sensor import build_arrival_sensor

    today = datetime.now(UTC).date()
    summary = generate(tmp_path / "demo", days=3, customers=20, start=today - timedelta(days=2), progress=False)
    client = s3_bucket.client()
    for key in summary["files"]:
        client.put_object(Bucket=s3_bucket.bucket, Key=f"landing/{key}", Body=(tmp_path / "demo" / key).read_bytes())
    resources = {
        "warehouse": WarehouseResource(path=str(tmp_path / "w.duckdb")),
        "landing": LandingResource(url=f"s3://{s3_bucket.bucket}/landing", endpoint_url=s3_bucket.endpoint_url),
    }
    assets = [build_ingestion_asset(c, PARTITIONS, ProcessedAction.MOVE) for c in CONTRACTS.values()]
    sensor = build_arrival_sensor(
        list(CONTRACTS.values()), minimum_interval_seconds=30, overlap_seconds=300, lookback_days=7
    )
    defs = dg.Definitions(assets=assets, sensors=[sensor], resources=resources)

    [request] = sensor.evaluate_tick(dg.build_sensor_context(definitions=defs, resources=resources)).run_requests

    assert sorted(k.path[1] for k in request.asset_selection) == sorted(CONTRACTS)
    assert {c.name for c in request.asset_check_keys} == {"landing_contract"}  # not the freshness checks
    assert request.tags["dagster/asset_partition_range_end"] == today.isoformat()
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection=set(request.asset_selection), asset_check_selection=set(request.asset_check_keys)
    )
    result = job.execute_in_process(tags=request.tags, instance=dg.DagsterInstance.ephemeral())
    assert result.success
    for table, expected in summary["rows"].items():
        already = 1 if table == "customers" else 0  # the env's day loaded before
        assert env.rows(f"select count(*) from raw.{table}") == [(expected + already,)], table
    assert all(f"processed/{key}" in env.listing() for key in summary["files"])


def test_replay_without_a_webserver_leaves_the_file_in_quarantine(env, s3_bucket, tmp_path, monkeypatch):
    """Through the webserver, a replay first makes sure one answers: else it says what to do and releases
    nothing (a released file would be loaded by the sensor, unreplayed, or sit unloaded)."""
    import socket

    from pipeline.replay import main as replay

    key = f"shop/{DAY}/customers.csv"
    rejected(env, key, f"{HEADER}\n{customer(2)}\n{customer(2)}\n", "primary_key_unique")
    quarantined = f"quarantine/{DAY}/shop/customers.csv"
    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for name, value in {
        "LANDING_URL": f"s3://{s3_bucket.bucket}/landing",
        "LANDING_ENDPOINT_URL": s3_bucket.endpoint_url,
        "DUCKDB_PATH": str(tmp_path / "w.duckdb"),
        "DAGSTER_UI_BASE_URL": f"http://127.0.0.1:{port}",
    }.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as stopped:
        replay([quarantined])
    assert f"No Dagster webserver answers at http://127.0.0.1:{port} (DAGSTER_UI_BASE_URL)" in str(stopped.value)
    assert "--in-process" in str(stopped.value)
    listing = env.listing()
    assert quarantined in listing and quarantined + ".reason.json" in listing and key not in listing
