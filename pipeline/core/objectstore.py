"""Object stores: a local folder or an S3 bucket behind one small interface.

Used for landing files (ingestion) and for dbt's artifacts (transformation). Keys are always relative and use `/`.
The local folder is the default store; the S3 store (`s3.py`) implements the same interface, so its users never
branch on it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from .settings import STORE_URL_FORM, ConfigurationError, store_url


@dataclass(frozen=True)
class LandedObject:
    key: str
    size: int
    last_modified: datetime
    etag: str


class LandingStore(Protocol):
    """What loaders, the arrival sensor and quarantine need from a landing store; keys are relative to its root."""

    url: str

    def list(self, prefix: str = "", start_after: str | None = None) -> Iterator[LandedObject]:
        """Objects whose key starts with `prefix` and sorts after `start_after` (if given), in key order."""
        ...

    def head(self, key: str) -> LandedObject | None:
        """The object at `key`, or None when there is none."""
        ...

    def top_level(self) -> list[str]:
        """The names at the root, in key order: a folder as `name/`, an object as `name` (S3's listing with
        Delimiter='/'); hidden names (a leading '.') left out. One request, however many objects lie below."""
        ...

    @contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        """A filesystem path DuckDB's readers can open for `key`, valid inside the `with` block.

        The path keeps the key's file name, so its suffixes (`.csv.gz`) still tell the format and compression.
        Raises FileNotFoundError when there is no object at `key`.
        """
        ...

    def move(self, key: str, new_key: str) -> None:
        """Move an object (with its tags), replacing whatever is at `new_key`."""
        ...

    def delete(self, key: str) -> None:
        """Remove an object; no error when there is none."""
        ...

    def put_text(self, key: str, text: str) -> None:
        """Write a small UTF-8 text object, e.g. the `<name>.reason.json` written next to a quarantined file."""
        ...

    def tag(self, key: str, tags: Mapping[str, str]) -> None:
        """Replace the object's tags with `tags`."""
        ...

    def get_tags(self, key: str) -> dict[str, str]:
        """The object's tags (empty when it has none)."""
        ...


#: Local stand-in for S3 object tags: `<root>/.tags/<key>.json`. Hidden from listings, as tags are not objects.
TAGS_DIR = ".tags"


class LocalLandingStore:
    """A folder on disk laid out like the bucket; the default for development and tests."""

    def __init__(self, root: Path | str, *, arrival_from_ctime: bool = True):
        self.root = Path(root)
        self.url = str(self.root)
        #: An object's LastModified is when it appeared here: the later of the file's mtime and ctime. `mv` and
        #: `cp -p` keep a file's mtime, so a file moved into a day folder would otherwise look as old as its
        #: content and stay below the arrival sensor's floor; S3 gives a copied object a new LastModified, and
        #: a rename sets the ctime. (False: the mtime alone, for tests that set arrival times with os.utime.)
        self.arrival_from_ctime = arrival_from_ctime

    def list(self, prefix: str = "", start_after: str | None = None) -> Iterator[LandedObject]:
        if not self.root.exists():
            return
        # Walk only below the deepest folder the prefix names, so listing one system or day stays cheap.
        folder, _, _ = prefix.rpartition("/")
        base = self.root / folder if folder else self.root
        if not base.is_dir():
            return
        # Sorted by the key string (not by Path, which compares part by part) so the order and `start_after`
        # match S3's, which lists keys in UTF-8 byte order.
        keys = sorted(p.relative_to(self.root).as_posix() for p in base.rglob("*") if p.is_file())
        for key in keys:
            if not key.startswith(prefix) or _is_tags_sidecar(key):
                continue
            if start_after is not None and key <= start_after:
                continue
            yield self._object(key, self.root / key)

    def head(self, key: str) -> LandedObject | None:
        path = self._path(key)
        if _is_tags_sidecar(key) or not path.is_file():
            return None
        return self._object(key, path)

    def top_level(self) -> list[str]:
        if not self.root.is_dir():
            return []
        names = (entry.name + ("/" if entry.is_dir() else "") for entry in os.scandir(self.root))
        return sorted(name for name in names if not name.startswith("."))

    @contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        yield self._existing(key)

    def move(self, key: str, new_key: str) -> None:
        source, target = self._existing(key), self._path(new_key)
        if source == target:
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        source.replace(target)
        os.utime(target)  # a moved S3 object is a new copy with a new LastModified; so is this one
        # Like S3's copy_object, the new key takes the source's tags (or none) and the old key's tags go with it.
        old_tags, new_tags = self._tags_path(key), self._tags_path(new_key)
        if old_tags.exists():
            new_tags.parent.mkdir(parents=True, exist_ok=True)
            old_tags.replace(new_tags)
        else:
            new_tags.unlink(missing_ok=True)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
        self._tags_path(key).unlink(missing_ok=True)

    def put_text(self, key: str, text: str) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    def tag(self, key: str, tags: Mapping[str, str]) -> None:
        self._existing(key)
        path = self._tags_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dict(tags), sort_keys=True), encoding="utf-8")

    def get_tags(self, key: str) -> dict[str, str]:
        self._existing(key)
        path = self._tags_path(key)
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or key.startswith("/") or ".." in parts:
            raise ValueError(f"landing key {key!r} must be relative and stay inside {self.root}")
        return self.root / key

    def _existing(self, key: str) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise FileNotFoundError(f"no landing file {key!r} in {self.url}")
        return path

    def _tags_path(self, key: str) -> Path:
        return self.root / TAGS_DIR / f"{key}.json"

    def _object(self, key: str, path: Path) -> LandedObject:
        stat = path.stat()
        arrived = max(stat.st_mtime, stat.st_ctime) if self.arrival_from_ctime else stat.st_mtime
        return LandedObject(
            key=key,
            size=stat.st_size,
            last_modified=datetime.fromtimestamp(arrived, tz=UTC),
            # Size and mtime in nanoseconds change whenever the file is rewritten: an ETag stand-in
            # that costs no read of the file.
            etag=f"{stat.st_size:x}-{stat.st_mtime_ns:x}",
        )


def _is_tags_sidecar(key: str) -> bool:
    return key.startswith(f"{TAGS_DIR}/")


def open_landing_store(url: str, endpoint_url: str | None = None, region: str | None = None) -> LandingStore:
    """The store for a landing URL: a local folder (plain path or file://) or `s3://bucket/prefix`.

    `endpoint_url` and `region` apply to S3 only (MinIO, moto or another S3-compatible API); a local folder ignores
    them, so one environment can set them while switching LANDING_URL between the two.
    """
    try:
        store_url(url)
    except ValueError as exc:
        # Any other scheme (ftp://, gs://, ...) would otherwise be taken for a local folder of that name.
        raise ConfigurationError(f"{url!r} is not a landing store: expected {STORE_URL_FORM} ({exc})") from None
    if url.startswith("s3://"):
        # Imported here so boto3 loads only for an S3 landing.
        from .s3 import S3LandingStore

        return S3LandingStore(url, endpoint_url=endpoint_url, region=region)
    return LocalLandingStore(Path(url.removeprefix("file://")))
