import random

import httpx
import pytest

from pipeline.core.transport import RetryingSender, RetryPolicy

REQUEST = httpx.Request("POST", "http://crm.test/x")


def answers(*items):
    """A request callable that answers with each item in turn (a status code, or an exception to raise)."""
    calls = iter(items)

    def request():
        item = next(calls)
        if isinstance(item, Exception):
            raise item
        status, headers = item if isinstance(item, tuple) else (item, {})
        return httpx.Response(status, headers=headers, request=REQUEST)

    return request


def sender(attempts=6):
    waits = []
    return RetryingSender(
        RetryPolicy(max_attempts=attempts, base_delay_seconds=1.0), waits.append, random.Random(1)
    ), waits


def test_transient_failures_are_retried_until_success():
    s, waits = sender()
    response = s.send(
        answers(
            (429, {"Retry-After": "2.5"}),
            503,
            httpx.ReadTimeout("slow", request=REQUEST),
            httpx.RemoteProtocolError("dropped", request=REQUEST),
            200,
        )
    )
    assert response.status_code == 200 and s.retries == 4
    assert waits[0] == 2.5  # the server's Retry-After wins
    assert all(0 <= w <= 2**i for i, w in enumerate(waits[1:], start=1))  # full jitter under the exponential cap


def test_permanent_client_errors_are_not_retried():
    s, waits = sender()
    assert s.send(answers(400)).status_code == 400 and waits == []


def test_attempts_run_out():
    s, _ = sender(attempts=3)
    assert s.send(answers(503, 503, 503)).status_code == 503
    s, _ = sender(attempts=2)
    with pytest.raises(httpx.ConnectError):
        s.send(answers(httpx.ConnectError("refused"), httpx.ConnectError("refused")))


def test_backoff_is_capped():
    policy = RetryPolicy(base_delay_seconds=1.0, max_delay_seconds=5.0)
    rng = random.Random(0)
    assert max(policy.delay(20, rng) for _ in range(100)) <= 5.0
    assert policy.delay(0, rng, retry_after=999) == 5.0
