import os
from datetime import date
from pathlib import Path

import pytest

from pipeline.core.objectstore import LocalLandingStore
from pipeline.ingestion.landing import LandingKey


def test_parse_landing_key():
    k = LandingKey.parse("shop/2026-11-03/orders.jsonl.gz")
    assert k == LandingKey("shop", date(2026, 11, 3), "orders", "jsonl", True)
    assert LandingKey.parse("billing/2026-11-03/payments.ndjson").fmt == "jsonl"


def test_keys_outside_the_layout_are_ignored():
    for key in [
        "shop/orders.csv",
        "shop/2026-13-01/orders.csv",
        "shop/2026-11-01/orders.xlsx",
        "processed/shop/2026-11-01/orders.csv",
        "shop/2026-11-01/nested/orders.csv",
    ]:
        assert LandingKey.parse(key) is None, key


def test_local_store_lists_in_key_order_with_changing_etag(tmp_path):
    store = LocalLandingStore(tmp_path)
    for day in ("2026-11-02", "2026-11-01"):
        (tmp_path / "shop" / day).mkdir(parents=True)
        (tmp_path / "shop" / day / "orders.jsonl").write_text('{"a": 1}\n')
    (tmp_path / "billing").mkdir()
    (tmp_path / "billing" / "x.csv").write_text("a\n")
    keys = [o.key for o in store.list("shop/")]
    assert keys == ["shop/2026-11-01/orders.jsonl", "shop/2026-11-02/orders.jsonl"]
    before = next(store.list("shop/2026-11-01/")).etag
    path = tmp_path / "shop" / "2026-11-01" / "orders.jsonl"
    path.write_text('{"a": 2}\n{"a": 3}\n')
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    assert next(store.list("shop/2026-11-01/")).etag != before
    assert list(LocalLandingStore(tmp_path / "missing").list()) == []


def test_a_file_moved_into_the_landing_folder_arrives_when_it_was_moved(tmp_path):
    """`mv` keeps a file's mtime: its LastModified is when it appeared (the ctime), as a copied S3 object's is."""
    outside = tmp_path / "old-orders.jsonl"
    outside.write_text('{"a": 1}\n')
    os.utime(outside, (1_000_000_000, 1_000_000_000))  # written in 2001
    folder = tmp_path / "landing" / "shop" / "2026-11-01"
    folder.mkdir(parents=True)
    outside.rename(folder / "orders.jsonl")
    [obj] = LocalLandingStore(tmp_path / "landing").list()
    assert obj.last_modified.year >= 2026
    [as_written] = LocalLandingStore(tmp_path / "landing", arrival_from_ctime=False).list()
    assert as_written.last_modified.year == 2001 and as_written.etag == obj.etag


def test_an_in_process_replay_records_its_run_where_the_ui_reads(tmp_path):
    from pipeline.replay import instance_home

    dev_home = tmp_path / ".dagster_home"
    assert instance_home({"DAGSTER_HOME": "/srv/dagster"}, dev_home) == Path("/srv/dagster")
    assert instance_home({}, dev_home) is None  # no `make dev` instance yet: recorded nowhere (and said so)
    dev_home.mkdir()
    (dev_home / "dagster.yaml").write_text("{}\n")
    assert instance_home({}, dev_home) == dev_home


def test_a_replay_run_again_after_it_released_the_file_loads_the_released_file(tmp_path):
    from pipeline.ingestion.quarantine import release

    store = LocalLandingStore(tmp_path)
    (tmp_path / "quarantine" / "2026-11-02" / "shop").mkdir(parents=True)
    (tmp_path / "quarantine" / "2026-11-02" / "shop" / "customers.csv").write_text("id\n1\n")
    (tmp_path / "quarantine" / "2026-11-02" / "shop" / "customers.csv.reason.json").write_text("{}")
    quarantined = "quarantine/2026-11-02/shop/customers.csv"
    assert release(store, quarantined) == "shop/2026-11-02/customers.csv"
    assert [o.key for o in store.list()] == ["shop/2026-11-02/customers.csv"]
    assert release(store, quarantined) == "shop/2026-11-02/customers.csv"  # again: the released file
    os.remove(tmp_path / "shop" / "2026-11-02" / "customers.csv")  # loaded since, moved away
    with pytest.raises(FileNotFoundError, match="quarantined_key"):
        release(store, quarantined)
