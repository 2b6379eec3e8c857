"""The S3 landing store: a bucket (and optional prefix) behind the same interface as the local folder.

Works with AWS S3 and any S3-compatible API (MinIO, moto, R2, ...) through `endpoint_url`. Credentials come from
the standard AWS chain (environment, shared config/profile, container or instance role) and are never passed in,
so no secret ends up in run config or logs.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError

from .objectstore import LandedObject

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


#: Ranged GETs of 16 MB, at most 4 in flight: a download holds a bounded amount of memory whatever the file size.
_TRANSFER = TransferConfig(multipart_chunksize=16 * 1024 * 1024, max_concurrency=4, max_io_queue=16)


class S3LandingStore:
    """`s3://bucket/prefix`; keys in and out are relative to the prefix, so the layout matches the local folder."""

    def __init__(self, url: str, endpoint_url: str | None = None, region: str | None = None):
        bucket, prefix = parse_s3_url(url)
        self.bucket = bucket
        self.prefix = prefix
        self.url = f"s3://{bucket}/{prefix}".rstrip("/")
        self.endpoint_url = endpoint_url
        config = Config(
            retries={"max_attempts": 5, "mode": "standard"},
            # S3-compatible servers (MinIO, moto on 127.0.0.1) are addressed by path; `bucket.localhost` rarely
            # resolves. AWS itself keeps the default (virtual-hosted) style.
            s3={"addressing_style": "path"} if endpoint_url else None,
        )
        # A session of our own rather than boto3's module-level default: clients are thread-safe, sessions are not,
        # and the default session would cache credentials across stores. The credential chain is the same.
        session = boto3.session.Session(region_name=region)
        self._client = session.client("s3", endpoint_url=endpoint_url, config=config)

    def list(self, prefix: str = "", start_after: str | None = None) -> Iterator[LandedObject]:
        params: dict[str, Any] = {"Bucket": self.bucket, "Prefix": self._full(prefix)}
        if start_after:
            params["StartAfter"] = self._full(start_after)
        for page in self._client.get_paginator("list_objects_v2").paginate(**params):
            for item in page.get("Contents", []):
                key = item["Key"][len(self.prefix) :]
                # Zero-byte "folder" markers (made by consoles and some sync tools) are not files.
                if not key or key.endswith("/"):
                    continue
                yield LandedObject(key, item["Size"], item["LastModified"], _etag(item["ETag"]))

    def top_level(self) -> list[str]:
        names: list[str] = []
        paginator = self._client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._full(""), Delimiter="/"):
            names += [item["Prefix"][len(self.prefix) :] for item in page.get("CommonPrefixes", [])]
            names += [item["Key"][len(self.prefix) :] for item in page.get("Contents", [])]
        return sorted(name for name in names if name and name != "/" and not name.startswith("."))

    def head(self, key: str) -> LandedObject | None:
        try:
            response = self._client.head_object(Bucket=self.bucket, Key=self._full(key))
        except ClientError as err:
            if _not_found(err):
                return None
            raise
        return LandedObject(key, response["ContentLength"], response["LastModified"], _etag(response["ETag"]))

    @contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        """Download to a temp folder under the key's own file name (so `.csv.gz` still tells DuckDB the format).

        `download_file` streams to disk in parts, so a large file never sits in memory; the folder is removed
        when the block ends, also on error.
        """
        with tempfile.TemporaryDirectory(prefix="landing-") as folder:
            path = Path(folder) / PurePosixPath(key).name
            try:
                self._client.download_file(self.bucket, self._full(key), str(path), Config=_TRANSFER)
            except ClientError as err:
                if _not_found(err):
                    raise FileNotFoundError(f"no landing object {key!r} in {self.url}") from err
                raise
            yield path

    def move(self, key: str, new_key: str) -> None:
        """copy_object then delete_object: S3 has no rename.

        The copy keeps metadata and tags (both directives default to COPY). One copy_object handles objects up to
        5 GB, far above any daily export; if the delete fails after the copy, the object is in both places and a
        retry of the move converges.
        """
        source, target = self._full(key), self._full(new_key)
        if source == target:
            if self.head(key) is None:
                raise FileNotFoundError(f"no landing object {key!r} in {self.url}")
            return
        try:
            self._client.copy_object(Bucket=self.bucket, Key=target, CopySource={"Bucket": self.bucket, "Key": source})
        except ClientError as err:
            if _not_found(err):
                raise FileNotFoundError(f"no landing object {key!r} in {self.url}") from err
            raise
        self._client.delete_object(Bucket=self.bucket, Key=source)

    def delete(self, key: str) -> None:
        self._client.delete_object(Bucket=self.bucket, Key=self._full(key))

    def put_text(self, key: str, text: str) -> None:
        content_type = "application/json" if key.endswith(".json") else "text/plain; charset=utf-8"
        self._client.put_object(
            Bucket=self.bucket, Key=self._full(key), Body=text.encode("utf-8"), ContentType=content_type
        )

    def tag(self, key: str, tags: Mapping[str, str]) -> None:
        tag_set = [{"Key": name, "Value": value} for name, value in tags.items()]
        try:
            self._client.put_object_tagging(Bucket=self.bucket, Key=self._full(key), Tagging={"TagSet": tag_set})
        except ClientError as err:
            if _not_found(err):
                raise FileNotFoundError(f"no landing object {key!r} in {self.url}") from err
            raise

    def get_tags(self, key: str) -> dict[str, str]:
        try:
            response = self._client.get_object_tagging(Bucket=self.bucket, Key=self._full(key))
        except ClientError as err:
            if _not_found(err):
                raise FileNotFoundError(f"no landing object {key!r} in {self.url}") from err
            raise
        return {tag["Key"]: tag["Value"] for tag in response["TagSet"]}

    def _full(self, key: str) -> str:
        return self.prefix + key


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix/"); the prefix is "" or ends with `/`."""
    if not url.startswith("s3://"):
        raise ValueError(f"not an S3 URL: {url!r} (expected s3://bucket[/prefix])")
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {url!r} (expected s3://bucket[/prefix])")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def _etag(raw: str) -> str:
    """S3 returns the ETag in double quotes; the store's contract is the bare value."""
    return raw.strip('"')


def _not_found(err: ClientError) -> bool:
    return err.response.get("Error", {}).get("Code") in _NOT_FOUND
