"""Which landing objects are new since the last sensor tick: the cursor and the listing plan, without Dagster.

The arrival sensor (`sensor.py`) is a thin shell around `plan_tick`, so every rule below is unit-tested against
a local folder and checked against the S3 API in the integration tests.

Why a high-water mark *and* a set of seen keys: S3 stamps an object's LastModified when its upload starts, but
the object only appears in listings when the upload completes, so a large file can list after smaller ones with
a later timestamp. Listings also give many objects the same timestamp (S3 rounds to the second). So each tick
re-examines a small window (`overlap`) below the high-water mark and remembers the (key, ETag) pairs it already
handled inside that window; anything older than the window was handled for good and is forgotten, which keeps
the cursor small however many objects the bucket holds.

Why list by date prefix: keys are `<system>/<YYYY-MM-DD>/<file>`, and S3 lists in key order, so
`StartAfter=<system>/<first day>` skips every older day on the server side. A tick costs what the last
`lookback_days` of landing days hold, not what the bucket has accumulated over the years.

Why a sweep as well: a file can land for a day older than the lookback (a source system re-delivers last month, a
user drops the next demo day weeks later). No tick's window lists that day, so without a sweep it would be skipped
without a word. A *sweep* is a tick that lists every day of each system: it finds everything uploaded since the
previous sweep (less the overlap) that no tick has handled — `seen` keeps every handled key until the next sweep
has looked past it, so nothing is requested twice. Where the days before the window hold few objects (the loader
moves loaded files to `processed/`, the default) a sweep costs one listing page and every tick sweeps; where they
hold many (files left or tagged in place) a sweep runs once every `sweep_every`.

Why files are *set aside* rather than dropped: a file for a day that is not a raw partition (before
LANDING_START_DATE, or a day not yet begun) cannot be requested. It is reported once and kept in the cursor's `aside`
set; every listing that returns it offers it again, so once LANDING_START_DATE moves back (or the day begins) the
next sweep loads it. A sweep also looks at the landing root (one listing with a delimiter): a folder named after no
source system (`shpo/`) or a file outside any folder would otherwise never be listed at all; each is reported once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from ..core.objectstore import LandedObject, LandingStore
from .contracts import SourceTable
from .landing import LandingKey
from .quarantine import PROCESSED_PREFIX, QUARANTINE_PREFIX

#: Enough for a day's worth of files from every system, small enough that one tick stays quick.
DEFAULT_MAX_ARRIVALS = 500
#: A sweep that listed at most this many objects before the window (one S3 listing page) is cheap enough for
#: every tick.
CHEAP_SWEEP_OBJECTS = 1000

#: Where the loader parks files after a load; a source system may not share these names, or its listing (by
#: `<system>/` prefix) would pick the parked files up again as new arrivals.
RESERVED_PREFIXES = frozenset({PROCESSED_PREFIX.rstrip("/"), QUARANTINE_PREFIX.rstrip("/")})


@dataclass
class ArrivalCursor:
    """What the sensor remembers between ticks, serialised into the Dagster sensor cursor.

    `high_water`: the latest LastModified handled so far (None before the first tick).
    `seen`: key -> ETag of the objects handled whose LastModified lies within the overlap window below
    `high_water` — the only ones a later listing can return again with a timestamp that still looks new.
    `resume_from`: set only while a backlog is drained over several ticks (`max_arrivals`): the earliest landing
    day still holding objects left for the next tick, so the listing reaches back to them even when their
    day lies before the lookback window of the high-water mark.
    `sweep_floor`: the high-water mark when the last sweep (a listing of every day) ran: objects that landed
    before it (less the overlap) were looked at by that sweep or an earlier tick. `seen` keeps handled keys down
    to this floor, so the next sweep never takes an object a tick already handled for new.
    `swept_at`: when the last *costly* sweep ran (wall clock): one that listed more than a page of objects before
    the window. None after a cheap one, so every tick sweeps again (and an idle tick leaves the cursor as it was).
    `aside`: key -> ETag of the files set aside because their landing day was no raw partition when listed (see the
    module's docstring); offered again whenever a listing returns them, reported only once.
    `strays`: the names at the landing root that belong to no source system, as the last sweep found them
    (reported when they first appear).
    """

    high_water: datetime | None = None
    seen: dict[str, str] = field(default_factory=dict)
    resume_from: date | None = None
    sweep_floor: datetime | None = None
    swept_at: datetime | None = None
    aside: dict[str, str] = field(default_factory=dict)
    strays: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        """Compact and stable (sorted keys, no spaces): equal cursors give equal strings."""
        document: dict[str, object] = {"v": 1}
        if self.high_water is not None:
            document["hw"] = self.high_water.astimezone(UTC).isoformat()
        if self.seen:
            document["seen"] = self.seen
        if self.resume_from is not None:
            document["resume"] = self.resume_from.isoformat()
        if self.sweep_floor is not None:
            document["sf"] = self.sweep_floor.astimezone(UTC).isoformat()
        if self.swept_at is not None:
            document["sa"] = self.swept_at.astimezone(UTC).isoformat()
        if self.aside:
            document["aside"] = self.aside
        if self.strays:
            document["strays"] = self.strays
        return json.dumps(document, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> ArrivalCursor:
        """The cursor stored by `to_json`; an empty one (first tick: list everything) for None or ""."""
        if not text:
            return cls()
        try:
            document = json.loads(text)
            if not isinstance(document, dict) or document.get("v") != 1:
                raise ValueError(f"expected an object with version 1, got {text[:80]!r}")
            high_water = _utc(document.get("hw"))
            seen = {str(key): str(etag) for key, etag in (document.get("seen") or {}).items()}
            resume = date.fromisoformat(document["resume"]) if "resume" in document else None
            sweep_floor, swept_at = _utc(document.get("sf")), _utc(document.get("sa"))
            aside = {str(key): str(etag) for key, etag in (document.get("aside") or {}).items()}
            strays = [str(name) for name in document.get("strays") or []]
        except (ValueError, TypeError, AttributeError) as err:
            raise ValueError(
                f"unreadable arrival sensor cursor ({err}); reset it in the UI (sensor page -> Set cursor value)"
                " to empty to list every landing file again (already loaded files keep their run keys)"
            ) from err
        return cls(
            high_water=high_water,
            seen=seen,
            resume_from=resume,
            sweep_floor=sweep_floor,
            swept_at=swept_at,
            aside=aside,
            strays=strays,
        )

    def sweep_due(self, now: datetime, sweep_every: timedelta) -> bool:
        """Whether this tick lists every day (see the module's docstring)."""
        return (
            self.swept_at is None
            or now - self.swept_at >= sweep_every
            or now < self.swept_at  # the clock went back: do not wait for it to catch up
        )


def _utc(text: str | None) -> datetime | None:
    if text is None:
        return None
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Arrival:
    """A new landing object and the raw table it feeds."""

    obj: LandedObject
    landing_key: LandingKey
    table: SourceTable

    @property
    def run_key(self) -> str:
        """Key plus ETag: the same object never loads twice, a re-upload with new content loads again."""
        return f"{self.obj.key}@{self.obj.etag}"


@dataclass(frozen=True)
class TickPlan:
    arrivals: list[Arrival]
    #: New keys under a system prefix that do not follow the layout or match no table: reported, never loaded.
    ignored: list[str]
    cursor: ArrivalCursor
    #: Objects the listing returned (the tick's cost), and new arrivals left for later ticks by `max_arrivals`.
    listed: int = 0
    remaining: int = 0
    #: Whether this tick swept (listed every day), and the arrivals only the sweep found: days older than the
    #: window, or objects that listed later than the overlap allows.
    swept: bool = False
    late: list[Arrival] = field(default_factory=list)
    #: Files newly set aside (their day is no raw partition), and names at the landing root newly found that
    #: belong to no source system: both reported, neither loaded.
    outside: list[Arrival] = field(default_factory=list)
    strays: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _New:
    obj: LandedObject
    arrival: Arrival | None  # None: ignored


def listing_start_day(cursor: ArrivalCursor, *, lookback_days: int, today: date) -> date | None:
    """The first landing day that can hold objects new to `cursor`; None lists every day (first tick)."""
    if cursor.high_water is None:
        return None
    start = min(cursor.high_water.astimezone(UTC).date(), today) - timedelta(days=lookback_days)
    return min(start, cursor.resume_from) if cursor.resume_from is not None else start


def plan_tick(
    store: LandingStore,
    tables: Sequence[SourceTable],
    cursor: ArrivalCursor,
    *,
    overlap: timedelta,
    lookback_days: int,
    today: date,
    now: datetime | None = None,
    sweep_every: timedelta = timedelta(minutes=10),
    cheap_sweep: int = CHEAP_SWEEP_OBJECTS,
    max_arrivals: int = DEFAULT_MAX_ARRIVALS,
    loadable: Callable[[Arrival], bool] | None = None,
) -> TickPlan:
    """The objects that arrived since `cursor`, oldest first, and the cursor to store after requesting them.

    New means: LastModified no earlier than `high_water - overlap` and (key, ETag) not in `seen`; on a sweep tick
    (see the module's docstring) every day is listed and the floor is `sweep_floor - overlap`. At most
    `max_arrivals` arrivals are returned; the cursor then stops at the last one returned, so the rest come in the
    following ticks, in order, none skipped and none twice. An arrival `loadable` refuses (its day is no partition
    of its raw table) is set aside in the cursor and offered again by every listing that returns it.
    """
    if overlap < timedelta(0) or lookback_days < 0 or max_arrivals < 1:
        raise ValueError("overlap and lookback_days must not be negative, max_arrivals must be at least 1")
    now = now or datetime.now(UTC)
    by_file = _tables_by_file(tables)
    systems = sorted({system for system, _ in by_file})
    window_start = listing_start_day(cursor, lookback_days=lookback_days, today=today)
    swept = cursor.high_water is None or cursor.sweep_due(now, sweep_every)
    floor_of_tick = cursor.sweep_floor if swept and cursor.sweep_floor is not None else cursor.high_water
    since = floor_of_tick - overlap if floor_of_tick is not None else None

    listed = before_window = 0
    listed_etags: dict[str, tuple[str, datetime]] = {}
    new: list[_New] = []
    for system in systems:
        prefix = f"{system}/"
        # Exclusive StartAfter: `shop/2026-11-01` sorts just before `shop/2026-11-01/...`.
        boundary = f"{system}/{window_start.isoformat()}" if window_start is not None else None
        for obj in store.list(prefix=prefix, start_after=None if swept else boundary):
            if not obj.key.startswith(prefix):  # a store that ignores the prefix must not leak other folders
                continue
            listed += 1
            before_window += boundary is not None and obj.key < boundary
            listed_etags[obj.key] = (obj.etag, obj.last_modified)
            if cursor.aside.get(obj.key) != obj.etag:  # a file set aside is offered again, however old
                if since is not None and obj.last_modified < since:
                    continue
                if cursor.seen.get(obj.key) == obj.etag:
                    continue
            new.append(_New(obj, _arrival(obj, by_file)))

    new.sort(key=lambda item: (item.obj.last_modified, item.obj.key))
    arrivals: list[Arrival] = []
    outside: list[Arrival] = []
    for item in new:
        if item.arrival is not None:
            (arrivals if loadable is None or loadable(item.arrival) else outside).append(item.arrival)
    ignored = [item.obj.key for item in new if item.arrival is None]
    taken, left = arrivals[:max_arrivals], arrivals[max_arrivals:]

    # Every ignored or set-aside key is handled now (they cost nothing to report); the arrivals beyond the limit
    # wait.
    handled = [a.obj for a in taken] + [item.obj for item in new if item.arrival is None] + [a.obj for a in outside]
    high_water = cursor.high_water
    for obj in [a.obj for a in taken] if left else handled:
        if high_water is None or obj.last_modified > high_water:
            high_water = obj.last_modified
    strays = _strays(store, systems) if swept else cursor.strays
    new_strays = [name for name in strays if name not in cursor.strays]
    if high_water is None:  # first tick on an empty landing: keep listing everything
        return TickPlan([], [], ArrivalCursor(strays=strays), listed=listed, swept=True, strays=new_strays)

    sweep_floor = high_water if swept else cursor.sweep_floor
    floor = min(high_water, sweep_floor or high_water) - overlap

    def listed_here(key: str) -> bool:
        """Whether this tick's listing covered the key's day (so a key it did not return is gone)."""
        return swept or window_start is None or key >= f"{key.split('/', 1)[0]}/{window_start.isoformat()}"

    def still_relevant(key: str, etag: str) -> bool:
        """A handled key stays in `seen` while a later listing could return it as new: down to the floor of the
        next sweep. A key this tick did not list (a day before the window) is kept until a sweep looks at it."""
        if key in listed_etags:
            return listed_etags[key][0] == etag and listed_etags[key][1] >= floor
        return not listed_here(key)

    seen = {key: etag for key, etag in cursor.seen.items() if still_relevant(key, etag)}
    seen.update({obj.key: obj.etag for obj in handled if obj.last_modified >= floor})
    # Set aside: what this tick refused, and what it could not look at (not listed: a day before the window).
    aside = {key: etag for key, etag in cursor.aside.items() if key not in listed_etags and not listed_here(key)}
    aside.update({a.obj.key: a.obj.etag for a in outside})
    resume_from = min(a.landing_key.day for a in left) if left else None
    regular_since = cursor.high_water - overlap if cursor.high_water is not None else None
    late = [
        a
        for a in taken
        if cursor.high_water is not None
        and (
            (window_start is not None and a.landing_key.day < window_start)
            or (regular_since is not None and a.obj.last_modified < regular_since)
        )
    ]
    return TickPlan(
        arrivals=taken,
        ignored=ignored,
        cursor=ArrivalCursor(
            high_water=high_water,
            seen=dict(sorted(seen.items())),
            resume_from=resume_from,
            sweep_floor=sweep_floor,
            swept_at=(now if before_window > cheap_sweep else None) if swept else cursor.swept_at,
            aside=dict(sorted(aside.items())),
            strays=strays,
        ),
        listed=listed,
        remaining=len(left),
        swept=swept,
        late=late,
        outside=[a for a in outside if cursor.aside.get(a.obj.key) != a.obj.etag],
        strays=new_strays,
    )


def _strays(store: LandingStore, systems: Sequence[str]) -> list[str]:
    """The names at the landing root that no listing of a system returns: files outside any system's folder and
    folders named after no system (a typo, a system not yet in contracts.yaml)."""
    known = {f"{name}/" for name in [*systems, *RESERVED_PREFIXES]}
    return [name for name in store.top_level() if name not in known]


def _tables_by_file(tables: Sequence[SourceTable]) -> dict[tuple[str, str], SourceTable]:
    by_file: dict[tuple[str, str], SourceTable] = {}
    for table in tables:
        if table.system in RESERVED_PREFIXES:
            raise ValueError(
                f"source system {table.system!r} shares its name with a folder the loader moves files to"
                f" ({sorted(RESERVED_PREFIXES)}); rename the system in contracts.yaml"
            )
        other = by_file.setdefault((table.system, table.file), table)
        if other is not table:
            raise ValueError(f"raw tables {other.table!r} and {table.table!r} both load {table.system}/*/{table.file}")
    return by_file


def _arrival(obj: LandedObject, by_file: dict[tuple[str, str], SourceTable]) -> Arrival | None:
    parsed = LandingKey.parse(obj.key)
    table = by_file.get((parsed.system, parsed.name)) if parsed is not None else None
    return Arrival(obj, parsed, table) if parsed is not None and table is not None else None
