"""A local stand-in for S3: moto's server on 127.0.0.1 and a port the OS picks, with fake credentials.

Used by the benchmarks (as a context manager) and by the test fixtures in `tests/s3_fixtures.py`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.config import Config

REGION = "us-east-1"

FAKE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    # Nothing from the developer's own AWS setup may leak in (or be used by accident).
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
UNSET_AWS_ENV = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION")


@contextmanager
def fake_aws_env() -> Iterator[None]:
    """Fake credentials (and no proxy for loopback) for the block; the previous environment comes back after."""
    no_proxy = ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1", "localhost"]))
    changes: dict[str, str | None] = {**FAKE_AWS_ENV, "NO_PROXY": no_proxy, "no_proxy": no_proxy}
    changes |= dict.fromkeys(UNSET_AWS_ENV)
    saved = {name: os.environ.get(name) for name in changes}
    try:
        for name, value in changes.items():
            _set_env(name, value)
        yield
    finally:
        for name, value in saved.items():
            _set_env(name, value)


@contextmanager
def serve_moto() -> Iterator[str]:
    """moto's S3 served over HTTP on 127.0.0.1:<ephemeral>; yields the endpoint URL. Imported lazily: dev-only.

    port=0 goes straight to werkzeug's make_server; the bound port is read back from the server socket.
    """
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@contextmanager
def moto_server() -> Iterator[str]:
    """`serve_moto()` with fake credentials in the environment for the block."""
    with fake_aws_env(), serve_moto() as endpoint:
        yield endpoint


def client(endpoint_url: str) -> Any:
    return boto3.client(
        "s3", endpoint_url=endpoint_url, region_name=REGION, config=Config(s3={"addressing_style": "path"})
    )


def put_many(bucket: str, keys: Iterable[str], body: bytes) -> int:
    """Write objects straight into moto's in-process backend (what the server thread serves), skipping HTTP.

    ~100x faster than put_object over HTTP for the 100,000-object bucket; reads still go through the S3 API.
    """
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    count = 0
    for key in keys:
        backend.put_object(bucket, key, body)
        count += 1
    return count


def _set_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


class ListingClock:
    """Seconds moto's backend spent inside ListObjectsV2's key scan, accumulated across requests.

    moto answers every ListObjectsV2 by filtering and sorting all of the bucket's keys under the prefix (then
    applying StartAfter), in Python: a cost that grows with the bucket and that S3, which seeks in a sorted index,
    does not have. Subtracting it from a tick leaves what the client and the per-object response cost.
    """

    def __init__(self) -> None:
        self.seconds = 0.0
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self._lock:
            self.seconds += seconds


@contextmanager
def listing_clock() -> Iterator[ListingClock]:
    """Times moto's `list_objects_v2` backend call (the server thread runs in this process) for the block."""
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    original = backend.list_objects_v2
    clock = ListingClock()

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            clock.add(time.perf_counter() - started)

    backend.list_objects_v2 = timed
    try:
        yield clock
    finally:
        del backend.list_objects_v2  # back to the class's method
