"""S3-specific behaviour of the landing store against moto's server over HTTP: pagination, prefixes, ETags, tags,
temp files. The behaviour shared with the local folder is in test_landing_stores.py."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pipeline.core.objectstore import open_landing_store
from pipeline.core.s3 import S3LandingStore, parse_s3_url

if TYPE_CHECKING:
    from tests.s3_fixtures import S3Bucket

pytest_plugins = ["tests.s3_fixtures"]
pytestmark = pytest.mark.integration


def store_for(s3: S3Bucket, prefix: str = "landing") -> S3LandingStore:
    return S3LandingStore(f"s3://{s3.bucket}/{prefix}", endpoint_url=s3.endpoint_url)


def test_listing_pages_past_1000_objects_with_prefix_and_start_after(s3_bucket: S3Bucket):
    client = s3_bucket.client()
    keys = [f"shop/2026-11-01/part-{i:04d}.csv" for i in range(1100)]
    s3_bucket.put_many((f"landing/{key}" for key in keys), b"a\n")
    client.put_object(Bucket=s3_bucket.bucket, Key="landing/billing/2026-11-01/payments.csv", Body=b"a\n")
    client.put_object(Bucket=s3_bucket.bucket, Key="shop/2026-11-01/outside-the-prefix.csv", Body=b"a\n")
    store = store_for(s3_bucket)

    first_page = client.list_objects_v2(Bucket=s3_bucket.bucket, Prefix="landing/shop/")
    assert first_page["IsTruncated"] and first_page["KeyCount"] == 1000  # the listing below must cross pages
    listed = [o.key for o in store.list("shop/")]
    assert listed == keys  # every page, relative to the store prefix, in key order
    assert [o.key for o in store.list("shop/", start_after=keys[1049])] == keys[1050:]
    assert [o.key for o in store.list("shop/", start_after=keys[5])] == keys[6:]
    assert [o.key for o in store.list(start_after=keys[-1])] == []
    assert len(list(store.list())) == 1101


def test_keys_are_relative_to_the_prefix_or_the_bucket_root(s3_bucket: S3Bucket):
    client = s3_bucket.client()
    client.put_object(Bucket=s3_bucket.bucket, Key="team/landing/shop/2026-11-01/orders.csv", Body=b"a\n")
    client.put_object(Bucket=s3_bucket.bucket, Key="team/landing/shop/2026-11-01/", Body=b"")  # a console "folder"

    nested = store_for(s3_bucket, "team/landing/")
    assert nested.url == f"s3://{s3_bucket.bucket}/team/landing"
    assert [o.key for o in nested.list()] == ["shop/2026-11-01/orders.csv"]
    assert nested.head("shop/2026-11-01/orders.csv").key == "shop/2026-11-01/orders.csv"

    root = S3LandingStore(f"s3://{s3_bucket.bucket}", endpoint_url=s3_bucket.endpoint_url)
    assert root.url == f"s3://{s3_bucket.bucket}"
    assert [o.key for o in root.list()] == ["team/landing/shop/2026-11-01/orders.csv"]


def test_etag_is_the_unquoted_s3_etag_and_changes_on_reupload(s3_bucket: S3Bucket):
    client = s3_bucket.client()
    store = store_for(s3_bucket)
    key = "shop/2026-11-01/orders.csv"
    client.put_object(Bucket=s3_bucket.bucket, Key=f"landing/{key}", Body=b"id\n1\n")
    first = store.head(key).etag
    assert first == hashlib.md5(b"id\n1\n").hexdigest()
    assert next(store.list()).etag == first
    client.put_object(Bucket=s3_bucket.bucket, Key=f"landing/{key}", Body=b"id\n2\n")  # same size, new content
    assert store.head(key).etag == hashlib.md5(b"id\n2\n").hexdigest() != first


def test_local_path_downloads_to_a_temp_file_removed_afterwards(s3_bucket: S3Bucket):
    body = b"id,name\n" + b"".join(b"%d,row\n" % i for i in range(50_000))
    s3_bucket.client().put_object(Bucket=s3_bucket.bucket, Key="landing/shop/2026-11-01/customers.csv.gz", Body=body)
    store = store_for(s3_bucket)
    with store.local_path("shop/2026-11-01/customers.csv.gz") as path:
        assert path.name == "customers.csv.gz"
        assert "".join(path.suffixes) == ".csv.gz"
        assert path.read_bytes() == body
    assert not path.exists()
    assert not path.parent.exists()

    with pytest.raises(RuntimeError), store.local_path("shop/2026-11-01/customers.csv.gz") as path:
        raise RuntimeError("loader failed")
    assert not path.parent.exists()


def test_tags_are_s3_object_tags(s3_bucket: S3Bucket):
    client = s3_bucket.client()
    client.put_object(Bucket=s3_bucket.bucket, Key="landing/shop/2026-11-01/orders.csv", Body=b"a\n")
    store = store_for(s3_bucket)
    store.tag("shop/2026-11-01/orders.csv", {"status": "quarantined", "reason": "bad-header"})
    response = client.get_object_tagging(Bucket=s3_bucket.bucket, Key="landing/shop/2026-11-01/orders.csv")
    assert {t["Key"]: t["Value"] for t in response["TagSet"]} == {"status": "quarantined", "reason": "bad-header"}


def test_move_and_put_text_write_under_the_prefix(s3_bucket: S3Bucket):
    client = s3_bucket.client()
    client.put_object(Bucket=s3_bucket.bucket, Key="landing/shop/2026-11-01/orders.csv", Body=b"a\n")
    store = store_for(s3_bucket)
    store.move("shop/2026-11-01/orders.csv", "_quarantine/shop/2026-11-01/orders.csv")
    store.put_text("_quarantine/shop/2026-11-01/orders.csv.reason.json", '{"error": "bad header"}')
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=s3_bucket.bucket)["Contents"]]
    assert keys == [
        "landing/_quarantine/shop/2026-11-01/orders.csv",
        "landing/_quarantine/shop/2026-11-01/orders.csv.reason.json",
    ]
    reason = client.get_object(Bucket=s3_bucket.bucket, Key=keys[1])
    assert reason["ContentType"] == "application/json"
    assert reason["Body"].read() == b'{"error": "bad header"}'


def test_open_landing_store_picks_s3_with_its_endpoint(s3_bucket: S3Bucket):
    s3_bucket.client().put_object(Bucket=s3_bucket.bucket, Key="landing/shop/2026-11-01/orders.csv", Body=b"a\n")
    store = open_landing_store(f"s3://{s3_bucket.bucket}/landing", endpoint_url=s3_bucket.endpoint_url)
    assert isinstance(store, S3LandingStore)
    assert [o.key for o in store.list()] == ["shop/2026-11-01/orders.csv"]


def test_local_urls_still_open_the_folder(tmp_path: Path):
    assert open_landing_store(str(tmp_path), endpoint_url="http://127.0.0.1:1").url == str(tmp_path)
    assert open_landing_store(f"file://{tmp_path}").url == str(tmp_path)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3://bucket", ("bucket", "")),
        ("s3://bucket/", ("bucket", "")),
        ("s3://bucket/landing", ("bucket", "landing/")),
        ("s3://bucket/team/landing/", ("bucket", "team/landing/")),
    ],
)
def test_parse_s3_url(url: str, expected: tuple[str, str]):
    assert parse_s3_url(url) == expected


@pytest.mark.parametrize("url", ["s3://", "s3:///landing", "/data/landing", "gs://bucket"])
def test_parse_s3_url_rejects_non_bucket_urls(url: str):
    with pytest.raises(ValueError, match="s3://bucket"):
        parse_s3_url(url)
