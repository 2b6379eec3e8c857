"""Landing keys: where source systems drop files, `<system>/<YYYY-MM-DD>/<file>.<ext>[.gz]`, in an object store
(`pipeline.core.objectstore`: a local folder or an S3 bucket).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

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
