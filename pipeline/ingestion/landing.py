"""Landing stores: where source systems drop files, behind one small interface.

Keys are always relative and use `/`: `<system>/<YYYY-MM-DD>/<file>.<ext>`. The local folder is the default
store; the S3 store (issue 3) implements the same interface, so loaders and sensors never branch on it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Protocol

#: <system>/<YYYY-MM-DD>/<name>.<ext>[.gz]
_KEY_RE = re.compile(
    r"^(?P<system>[A-Za-z0-9_\-]+)/(?P<day>\d{4}-\d{2}-\d{2})/(?P<name>[A-Za-z0-9_\-]+)"
    r"\.(?P<ext>csv|jsonl|ndjson|parquet)(?P<gz>\.gz)?$"
)


@dataclass(frozen=True)
class LandingKey:
    system: str
    day: date
    name: str
    fmt: str
    compressed: bool

    @classmethod
    def parse(cls, key: str) -> LandingKey | None:
        """Parse a landing key; None for anything that does not follow the layout (ignored, not loaded)."""
        match = _KEY_RE.match(key)
        if not match:
            return None
        try:
            day = date.fromisoformat(match["day"])
        except ValueError:
            return None
        fmt = "jsonl" if match["ext"] == "ndjson" else match["ext"]
        return cls(match["system"], day, match["name"], fmt, bool(match["gz"]))


@dataclass(frozen=True)
class LandedObject:
    key: str
    size: int
    last_modified: datetime
    etag: str

    @property
    def parsed(self) -> LandingKey | None:
        return LandingKey.parse(self.key)


class LandingStore(Protocol):
    url: str

    def list(self, prefix: str = "") -> Iterator[LandedObject]:
        """Objects whose key starts with `prefix`, in key order."""
        ...

    @contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        """A filesystem path DuckDB's readers can open for `key`, valid inside the `with` block."""
        ...


class LocalLandingStore:
    """A folder on disk laid out like the bucket; the default for development and tests."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.url = str(self.root)

    def list(self, prefix: str = "") -> Iterator[LandedObject]:
        if not self.root.exists():
            return
        # Walk only below the deepest folder the prefix names, so listing one system or day stays cheap.
        folder, _, _ = prefix.rpartition("/")
        base = self.root / folder if folder else self.root
        if not base.is_dir():
            return
        for path in sorted(p for p in base.rglob("*") if p.is_file()):
            key = path.relative_to(self.root).as_posix()
            if not key.startswith(prefix):
                continue
            stat = path.stat()
            yield LandedObject(
                key=key,
                size=stat.st_size,
                last_modified=datetime.fromtimestamp(stat.st_mtime, tz=UTC),
                # Size and mtime in nanoseconds change whenever the file is rewritten: an ETag stand-in
                # that costs no read of the file.
                etag=f"{stat.st_size:x}-{stat.st_mtime_ns:x}",
            )

    @contextmanager
    def local_path(self, key: str) -> Iterator[Path]:
        yield self.root / key


def open_landing_store(url: str) -> LandingStore:
    """The store for a landing URL: a local folder (plain path or file://) or, from issue 3 on, s3://."""
    if url.startswith("s3://"):
        raise NotImplementedError("s3:// landing arrives with issue 3; use a local folder for now")
    return LocalLandingStore(Path(url.removeprefix("file://")))
