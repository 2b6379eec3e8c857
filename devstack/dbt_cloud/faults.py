"""Switchable faults of the dbt Cloud stand-in, so a client's retries, timeouts and failure handling can be tested
against a real server. Not part of dbt Cloud.

`FaultConfig` is set on the command line, in `create_app`, or at runtime through ``PUT /_devstack/faults`` (read it
back with ``GET``). The counters (`run_error`, `cancel_runs`, `poll_500`, `rate_limit`) count down as their fault
fires, so a test can arm "two 500s" and watch the client recover; `FaultInjector.take` is where they count down,
under a lock because the run workers take faults from their own threads.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from devstack.dbt_cloud.errors import invalid

logger = logging.getLogger(__name__)

COUNTERS = ("run_error", "cancel_runs", "poll_500", "rate_limit")


@dataclass(frozen=True, slots=True)
class FaultConfig:
    """Faults to inject; all off by default.

    - `run_error`: the next N runs fail in their first preamble step ("Clone git repository"), before any dbt
      command: status 20 and no artifacts.
    - `slow_seconds`: every run waits this long in its "Invoke dbt deps" step (a cancel interrupts the wait), so a
      client's poll timeout can pass.
    - `cancel_runs`: the next N runs end as cancelled by a user in dbt Cloud, after their preamble steps.
    - `poll_500`: the next N ``GET runs/{id}`` answer 500.
    - `rate_limit`: the next N requests to any ``/api/`` path answer 429 with ``Retry-After: 1``.
    - `unauthorized`: every ``/api/`` request answers 401, whatever its token.
    """

    run_error: int = 0
    slow_seconds: float = 0.0
    cancel_runs: int = 0
    poll_500: int = 0
    rate_limit: int = 0
    unauthorized: bool = False

    def __post_init__(self) -> None:
        for name in COUNTERS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
        if isinstance(self.slow_seconds, bool) or not isinstance(self.slow_seconds, int | float):
            raise ValueError(f"slow_seconds must be a number >= 0, got {self.slow_seconds!r}")
        if self.slow_seconds < 0:
            raise ValueError(f"slow_seconds must be a number >= 0, got {self.slow_seconds!r}")
        if not isinstance(self.unauthorized, bool):
            raise ValueError(f"unauthorized must be true or false, got {self.unauthorized!r}")

    @classmethod
    def from_json(cls, body: object) -> FaultConfig:
        """Fields missing from `body` take their defaults (off); unknown fields are an error."""
        if not isinstance(body, dict):
            raise invalid("expected a JSON object with FaultConfig fields")
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(body) - known):
            raise invalid(f"unknown fault setting(s) {unknown}; known: {sorted(known)}")
        try:
            return cls(**body)
        except ValueError as exc:
            raise invalid(str(exc)) from exc

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class FaultInjector:
    """The current `FaultConfig`, whose counters the server's threads take from one at a time."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self._lock = threading.Lock()
        self._config = config or FaultConfig()

    @property
    def config(self) -> FaultConfig:
        with self._lock:
            return self._config

    def configure(self, config: FaultConfig) -> None:
        with self._lock:
            self._config = config
        logger.info("fault injection set to %s", config)

    def take(self, counter: str) -> bool:
        """Whether the fault `counter` fires now; if it does, it counts one down."""
        with self._lock:
            remaining = getattr(self._config, counter)
            if remaining <= 0:
                return False
            self._config = replace(self._config, **{counter: remaining - 1})
        logger.info("fault injection: %s fired (%d left)", counter, remaining - 1)
        return True
