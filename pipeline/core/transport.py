"""HTTP sends that heal transient failures: retries with exponential backoff and full jitter.

Retried: 429 (honouring Retry-After), 5xx, timeouts and connection errors — a dropped connection included.
Every retry of a batch carries the same Idempotency-Key, so a batch the destination applied before the
connection died is not applied twice. Other 4xx answers are permanent and returned to the caller at once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


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
