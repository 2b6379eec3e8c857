"""Switchable faults on batch upsert, so clients' retries can be tested against a real server.

`FaultConfig` (set on the command line, in `create_app`, or at runtime through ``PUT /_devstack/faults``) and
`FaultInjector`, which decides per request before anything is read or applied: ``slow_seconds`` delay, every
``rate_limit_every``-th request a 429 with ``Retry-After``, ``error_rate`` 503s, ``drop_rate`` connections closed
without a response (`DropConnection`). ``fail_after_apply_rate`` applies (and records the idempotency key), then
answers 500: the client never sees the success, and its retry with the same key gets the recorded 200.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import asdict, dataclass, fields
from typing import Any

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from devstack.crm.errors import error_response, validation_error

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class FaultConfig:
    """Faults injected into batch upserts; all off by default. Rates are probabilities in [0, 1].

    - `rate_limit_every`: every Nth upsert request gets a 429 (``RATE_LIMITS``) with ``Retry-After:
      retry_after_seconds``; 0 disables.
    - `error_rate`: a 503 (``SERVICE_UNAVAILABLE``) before anything is applied.
    - `slow_seconds`: delay before handling each request.
    - `drop_rate`: close the connection without a response, before anything is applied.
    - `fail_after_apply_rate`: apply the batch (recording its Idempotency-Key), then answer 500.
    - `seed`: seeds the app's own `random.Random`, for reproducible runs.
    """

    rate_limit_every: int = 0
    retry_after_seconds: float = 1.0
    error_rate: float = 0.0
    slow_seconds: float = 0.0
    drop_rate: float = 0.0
    fail_after_apply_rate: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.rate_limit_every, bool) or not isinstance(self.rate_limit_every, int):
            raise ValueError(f"rate_limit_every must be an integer >= 0, got {self.rate_limit_every!r}")
        if self.rate_limit_every < 0:
            raise ValueError(f"rate_limit_every must be >= 0, got {self.rate_limit_every}")
        for name in ("retry_after_seconds", "slow_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        for name in ("error_rate", "drop_rate", "fail_after_apply_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
                raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"seed must be an integer or null, got {self.seed!r}")

    @classmethod
    def from_json(cls, body: object) -> FaultConfig:
        """Fields missing from `body` take their defaults (off); unknown fields are an error."""
        if not isinstance(body, dict):
            raise validation_error("Expected a JSON object with FaultConfig fields")
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(body) - known):
            raise validation_error(f"Unknown fault setting(s) {unknown}; known: {sorted(known)}")
        try:
            return cls(**body)
        except ValueError as exc:
            raise validation_error(str(exc)) from exc

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class ConnectionDropped(Exception):  # noqa: N818 - names the event, not an error condition of the server
    """Raised to make the server abort a response it has started (fallback of `DropConnection`)."""


class DropConnection(Response):
    """Close the client's connection without sending a response.

    Under uvicorn, ``receive`` is a method of the connection's request cycle, which holds the transport: closing
    it sends nothing, and the client sees the server disconnect. Elsewhere, start a response promising a body
    that never comes and abort, which servers answer by closing the connection mid-response.
    """

    def __init__(self) -> None:
        super().__init__(status_code=500)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transport = getattr(getattr(receive, "__self__", None), "transport", None)
        if transport is not None and callable(getattr(transport, "close", None)):
            transport.close()
            # Let the server's connection_lost run, so it knows not to answer on the closed connection.
            for _ in range(3):
                await asyncio.sleep(0)
            return
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1024")]})
        await send({"type": "http.response.body", "body": b"{", "more_body": True})
        raise ConnectionDropped("devstack fault injection: connection dropped")


class FaultInjector:
    """Decides, per batch-upsert request, which fault of the current `FaultConfig` (if any) happens."""

    def __init__(self, config: FaultConfig | None = None) -> None:
        self.configure(config or FaultConfig())

    def configure(self, config: FaultConfig) -> None:
        """Replace the config; restarts the every-Nth count and re-seeds the random source."""
        self.config = config
        self._random = random.Random(config.seed)
        self._requests = 0

    def _chance(self, rate: float) -> bool:
        return rate > 0 and self._random.random() < rate

    async def before_apply(self) -> Response | None:
        """The response replacing this request's handling, or None to handle it normally."""
        config = self.config
        if config.slow_seconds > 0:
            await asyncio.sleep(config.slow_seconds)
        self._requests += 1
        if config.rate_limit_every and self._requests % config.rate_limit_every == 0:
            retry_after = f"{config.retry_after_seconds:g}"
            return error_response(
                429,
                "RATE_LIMITS",
                f"You have reached your secondly limit (devstack fault injection: every {config.rate_limit_every}"
                f" requests). Retry after {retry_after} seconds.",
                headers={"Retry-After": retry_after},
            )
        if self._chance(config.error_rate):
            return error_response(
                503, "SERVICE_UNAVAILABLE", "Service temporarily unavailable (devstack fault injection)."
            )
        if self._chance(config.drop_rate):
            logger.info("fault injection: dropping the connection")
            return DropConnection()
        return None

    def fail_after_apply(self) -> Response | None:
        if self._chance(self.config.fail_after_apply_rate):
            return error_response(
                500,
                "INTERNAL_ERROR",
                "Internal error after the batch was applied (devstack fault injection: fail_after_apply_rate).",
            )
        return None
