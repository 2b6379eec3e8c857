"""HTTP sends that heal transient failures: retries with exponential backoff and full jitter.

Retried: 429 (honouring Retry-After), 5xx, timeouts and connection errors — a dropped connection included.
Every retry of a batch carries the same Idempotency-Key, so a batch the destination applied before the
connection died is not applied twice. Other 4xx answers are permanent and returned to the caller at once.

A final error answer is raised as one of two types, so callers classify by type, not by status code:
`TransientHTTPError` (429 / 5xx after the retries ran out: trying again later may succeed) or `TerminalHTTPError`
(any other 4xx: bad credentials, a wrong URL, a refused signature — waiting will not help). Both are
`httpx.HTTPStatusError`s. Timeouts and connection errors stay `httpx.TransportError`s; `is_transient` says which
errors are worth a later retry.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


class TransientHTTPError(httpx.HTTPStatusError):
    """A 429 or 5xx the sender's retries did not heal: the same request may succeed later."""


class TerminalHTTPError(httpx.HTTPStatusError):
    """A 4xx other than 429: the destination refused the request as it is; resending it cannot succeed."""


def is_transient_status(status_code: int) -> bool:
    return status_code == 429 or status_code >= 500


def raise_for_error(response: httpx.Response, message: str) -> None:
    """Raise `TransientHTTPError` or `TerminalHTTPError` with `message` when `response` is an error answer."""
    if response.is_error:
        error = TransientHTTPError if is_transient_status(response.status_code) else TerminalHTTPError
        raise error(message, request=response.request, response=response)


def is_transient(exc: BaseException) -> bool:
    """Worth trying again later: a 429 / 5xx, a timeout or a dropped connection. Other errors are terminal."""
    if isinstance(exc, httpx.HTTPStatusError):
        return is_transient_status(exc.response.status_code)
    return isinstance(exc, httpx.TransportError)


@dataclass(frozen=True)
class Delivery:
    """What a destination did with one batch."""

    accepted: int
    rejected: dict[int, str] = field(default_factory=dict)  # position in the batch -> why it was refused for good
    created: int = 0
    updated: int = 0
    deleted: int = 0


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    base_delay_seconds: float = 0.5
    max_delay_seconds: float = 30.0

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt `attempt + 1`: the server's Retry-After when it gave one, else
        "full jitter" — uniform in [0, base * 2**attempt], capped — so many clients do not retry in step."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay_seconds)
        return rng.uniform(0, min(self.max_delay_seconds, self.base_delay_seconds * 2**attempt))


def retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


@dataclass
class RetryingSender:
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)
    retries: int = 0  # total retries made, for metadata

    def send(self, request: Callable[[], httpx.Response]) -> httpx.Response:
        """Call `request` until it answers with a non-retryable status or the attempts run out."""
        for attempt in range(self.policy.max_attempts):
            last = attempt == self.policy.max_attempts - 1
            try:
                response = request()
            except httpx.TransportError:  # timeouts, refused / dropped connections, protocol errors
                if last:
                    raise
                self._wait(attempt)
                continue
            if response.status_code in RETRYABLE_STATUS and not last:
                self._wait(attempt, retry_after_seconds(response))
                continue
            return response
        raise AssertionError("unreachable")

    def _wait(self, attempt: int, retry_after: float | None = None) -> None:
        self.retries += 1
        self.sleep(self.policy.delay(attempt, self.rng, retry_after))
