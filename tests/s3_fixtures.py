"""A real S3 API for tests: moto's server on an ephemeral loopback port, reached over HTTP like any S3 endpoint.

Use from a test module with `pytest_plugins = ["tests.s3_fixtures"]`, then ask for the `s3_bucket` fixture::

    def test_something(s3_bucket):
        endpoint_url, bucket = s3_bucket
        store = S3LandingStore(f"s3://{bucket}/landing", endpoint_url=endpoint_url)

The server starts once per session; every test gets fake credentials in its environment (and none from the
developer's ~/.aws) and a fresh, uniquely named bucket, and moto's state is reset after it.
"""

from __future__ import annotations

import os
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import pytest

from devstack import s3
from devstack.s3 import FAKE_AWS_ENV, UNSET_AWS_ENV


class S3Bucket(NamedTuple):
    endpoint_url: str
    bucket: str

    def client(self) -> Any:
        """A plain boto3 client on the test endpoint, to arrange or inspect objects behind the store's back."""
        return s3.client(self.endpoint_url)

    def put_many(self, keys: Iterable[str], body: bytes) -> None:
        """Write many objects straight into moto's in-process backend (what the server serves), skipping HTTP.

        Only valid because the server thread runs in this process; ~100x faster than put_object for the
        thousand-object listings that exercise pagination. Reads still go through the S3 API.
        """
        s3.put_many(self.bucket, keys, body)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3 (and every other service) served over HTTP on 127.0.0.1 and a port the OS picks."""
    with s3.serve_moto() as endpoint:
        yield endpoint


@pytest.fixture
def s3_bucket(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Bucket]:
    """A fresh bucket on the moto server, with fake credentials in the environment for the test's duration."""
    for name, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    for name in UNSET_AWS_ENV:
        monkeypatch.delenv(name, raising=False)
    # An HTTP(S)_PROXY set on a CI box must not capture calls to the loopback server.
    no_proxy = ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1", "localhost"]))
    monkeypatch.setenv("NO_PROXY", no_proxy)
    monkeypatch.setenv("no_proxy", no_proxy)

    bucket = S3Bucket(moto_endpoint, f"landing-test-{uuid.uuid4().hex[:12]}")
    bucket.client().create_bucket(Bucket=bucket.bucket)
    try:
        yield bucket
    finally:
        request = urllib.request.Request(f"{moto_endpoint}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=30):
            pass
