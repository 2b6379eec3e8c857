"""One contract, two stores: every behaviour the loaders, the arrival sensor and quarantine rely on, checked against
the local folder and against S3 (moto's server over HTTP)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pytest

from pipeline.core.objectstore import LandingStore, LocalLandingStore
from pipeline.core.s3 import S3LandingStore
from pipeline.ingestion.landing import LandingKey

if TYPE_CHECKING:
    from tests.s3_fixtures import S3Bucket

pytest_plugins = ["tests.s3_fixtures"]
pytestmark = pytest.mark.integration


@dataclass
class Harness:
    store: LandingStore
    #: writes raw bytes at a store key behind the store's back, the way a source system drops a file
    drop: Callable[[str, bytes], None]


def local_harness(root: Path) -> Harness:
    def drop(key: str, data: bytes) -> None:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    return Harness(LocalLandingStore(root), drop)


def s3_harness(s3: S3Bucket) -> Harness:
    client = s3.client()

    def drop(key: str, data: bytes) -> None:
        client.put_object(Bucket=s3.bucket, Key=f"landing/{key}", Body=data)

    # Neighbours outside the store's prefix, one of them sharing its first characters, must never show up.
    client.put_object(Bucket=s3.bucket, Key="landing-old/shop/2026-11-01/orders.csv", Body=b"x")
    client.put_object(Bucket=s3.bucket, Key="elsewhere.csv", Body=b"x")
    return Harness(S3LandingStore(f"s3://{s3.bucket}/landing", endpoint_url=s3.endpoint_url), drop)


@pytest.fixture(params=["local", "s3"])
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    if request.param == "local":
        yield local_harness(tmp_path / "landing")
    else:
        yield s3_harness(request.getfixturevalue("s3_bucket"))


CSV_GZ = gzip.compress(b"id,name\n1,ada\n2,grace\n")


def test_list_is_relative_ordered_and_filtered(harness: Harness):
    for key in [
        "shop/2026-11-02/orders.jsonl",
        "shop/2026-11-01/orders.jsonl",
        "shop/2026-11-01/customers.csv",
        "shop-archive/2026-11-01/orders.jsonl",
        "billing/2026-11-01/payments.parquet",
    ]:
        harness.drop(key, b"{}\n")
    store = harness.store
    assert [o.key for o in store.list("shop/")] == [
        "shop/2026-11-01/customers.csv",
        "shop/2026-11-01/orders.jsonl",
        "shop/2026-11-02/orders.jsonl",
    ]
    # Key (byte) order, where "-" sorts before "/": the same on disk as in S3.
    assert [o.key for o in store.list("shop")][-1] == "shop/2026-11-02/orders.jsonl"
    assert [o.key for o in store.list("shop")][0] == "shop-archive/2026-11-01/orders.jsonl"
    assert [o.key for o in store.list("shop/", start_after="shop/2026-11-01/orders.jsonl")] == [
        "shop/2026-11-02/orders.jsonl"
    ]
    assert [o.key for o in store.list(start_after="shop-archive/")] == [
        "shop-archive/2026-11-01/orders.jsonl",
        "shop/2026-11-01/customers.csv",
        "shop/2026-11-01/orders.jsonl",
        "shop/2026-11-02/orders.jsonl",
    ]
    assert list(store.list("shop/2026-11-03/")) == []
    assert list(store.list("nothing/")) == []
    assert len(list(store.list())) == 5


def test_head_matches_listing(harness: Harness):
    harness.drop("shop/2026-11-01/orders.csv.gz", CSV_GZ)
    listed = next(harness.store.list("shop/"))
    head = harness.store.head("shop/2026-11-01/orders.csv.gz")
    assert head == listed
    assert head.size == len(CSV_GZ)
    parsed = LandingKey.parse(head.key)
    assert parsed is not None and parsed.compressed
    assert head.last_modified.tzinfo is not None
    assert harness.store.head("shop/2026-11-01/missing.csv") is None


def test_local_path_keeps_name_and_content_for_duckdb(harness: Harness):
    harness.drop("shop/2026-11-01/customers.csv.gz", CSV_GZ)
    with harness.store.local_path("shop/2026-11-01/customers.csv.gz") as path:
        assert path.name == "customers.csv.gz"
        assert path.read_bytes() == CSV_GZ
        # DuckDB picks compression and format from the suffix alone.
        rows = duckdb.sql(f"SELECT id, name FROM read_csv('{path}') ORDER BY id").fetchall()
    assert rows == [(1, "ada"), (2, "grace")]
    with pytest.raises(FileNotFoundError, match="missing.csv"), harness.store.local_path("shop/2026-11-01/missing.csv"):
        pass


def test_etag_changes_when_a_file_is_replaced(harness: Harness):
    key = "billing/2026-11-01/payments.csv"
    harness.drop(key, b"id\n1\n")
    before = harness.store.head(key).etag
    harness.drop(key, b"id\n1\n2\n")
    after = harness.store.head(key).etag
    assert after != before
    assert '"' not in after


def test_move_takes_content_and_tags_along(harness: Harness):
    store = harness.store
    harness.drop("shop/2026-11-01/orders.jsonl", b'{"a": 1}\n')
    store.tag("shop/2026-11-01/orders.jsonl", {"status": "quarantined"})
    store.move("shop/2026-11-01/orders.jsonl", "_quarantine/shop/2026-11-01/orders.jsonl")
    assert store.head("shop/2026-11-01/orders.jsonl") is None
    assert [o.key for o in store.list("shop/")] == []
    with store.local_path("_quarantine/shop/2026-11-01/orders.jsonl") as path:
        assert path.read_bytes() == b'{"a": 1}\n'
    assert store.get_tags("_quarantine/shop/2026-11-01/orders.jsonl") == {"status": "quarantined"}
    with pytest.raises(FileNotFoundError):
        store.move("shop/2026-11-01/orders.jsonl", "_quarantine/again.jsonl")


def test_move_replaces_the_target(harness: Harness):
    store = harness.store
    harness.drop("a/x.csv", b"new\n")
    harness.drop("b/x.csv", b"old\n")
    store.tag("b/x.csv", {"old": "yes"})
    store.move("a/x.csv", "b/x.csv")
    assert [o.key for o in store.list()] == ["b/x.csv"]
    if isinstance(store, LocalLandingStore):
        # S3 gives the copy the source's tags (none here). moto 5.2 keeps the overwritten target's tags on
        # copy_object instead, so this half of the contract is only checked on disk.
        assert store.get_tags("b/x.csv") == {}
    with store.local_path("b/x.csv") as path:
        assert path.read_bytes() == b"new\n"


def test_put_text_writes_a_listed_utf8_object(harness: Harness):
    reason = {"file": "shop/2026-11-01/orders.jsonl", "error": "line 3: expected an integer in 'qty' — got «x»"}
    harness.store.put_text("_quarantine/shop/2026-11-01/orders.jsonl.reason.json", json.dumps(reason))
    [obj] = harness.store.list("_quarantine/")
    assert obj.key == "_quarantine/shop/2026-11-01/orders.jsonl.reason.json"
    with harness.store.local_path(obj.key) as path:
        assert json.loads(path.read_text(encoding="utf-8")) == reason


def test_tags_replace_and_stay_out_of_listings(harness: Harness):
    store = harness.store
    harness.drop("shop/2026-11-01/orders.jsonl", b"{}\n")
    assert store.get_tags("shop/2026-11-01/orders.jsonl") == {}
    store.tag("shop/2026-11-01/orders.jsonl", {"status": "loaded", "run": "abc"})
    assert store.get_tags("shop/2026-11-01/orders.jsonl") == {"status": "loaded", "run": "abc"}
    store.tag("shop/2026-11-01/orders.jsonl", {"status": "quarantined"})
    assert store.get_tags("shop/2026-11-01/orders.jsonl") == {"status": "quarantined"}
    assert [o.key for o in store.list()] == ["shop/2026-11-01/orders.jsonl"]
    with pytest.raises(FileNotFoundError):
        store.tag("shop/2026-11-01/missing.jsonl", {"status": "loaded"})


def test_top_level_names_the_folders_and_files_at_the_root(harness: Harness):
    harness.drop("shop/2026-11-01/orders.csv", b"x")
    harness.drop("shop/2026-11-02/orders.csv", b"x")
    harness.drop("shpo/2026-11-01/orders.csv", b"x")
    harness.drop("customers.csv", b"x")
    harness.drop(".hidden", b"x")
    harness.store.tag("customers.csv", {"processed": "yes"})  # the local store's tag files are hidden too
    assert harness.store.top_level() == ["customers.csv", "shop/", "shpo/"]
