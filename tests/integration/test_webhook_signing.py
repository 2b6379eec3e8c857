"""Signed webhooks over a real HTTP hop: the devstack receiver records the raw body and headers, and `verify` accepts
exactly what was sent (and refuses it once altered)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devstack import webhook_receiver
from devstack.serve import ServerThread
from pipeline.activation.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER, SignatureError, json_body, sign, verify

pytestmark = pytest.mark.integration

SECRET = "whsec-integration"
PAYLOAD = {
    "event": "contact.updated",
    "contacts": [{"email": "zoë@example.com", "lifecycle": "customer", "score": 0.5}],
}


@pytest.fixture
def receiver() -> Iterator[httpx.Client]:
    with (
        ServerThread(webhook_receiver.create_app()) as server,
        httpx.Client(base_url=server.url, timeout=30) as client,
    ):
        yield client


def post_and_fetch(client: httpx.Client, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    response = client.post("/hooks/pipeline", content=body, headers={"Content-Type": "application/json", **headers})
    assert response.status_code == 200, response.text
    received = client.get("/_devstack/received").json()
    assert len(received) == 1
    return received[0]


def test_signature_survives_http_hop(receiver: httpx.Client) -> None:
    body = json_body(PAYLOAD)
    record = post_and_fetch(receiver, body, sign(SECRET, body))

    raw = record["body"].encode("utf-8")
    assert raw == body  # the exact bytes, not re-serialised JSON
    assert record["json"] == PAYLOAD
    assert TIMESTAMP_HEADER.lower() in record["headers"]  # the server lower-cased the names
    verify(SECRET, raw, record["headers"])
    with pytest.raises(SignatureError, match="does not match"):
        verify("whsec-wrong", raw, record["headers"])


def test_rotated_signatures_survive_http_hop(receiver: httpx.Client) -> None:
    body = json_body(PAYLOAD)
    record = post_and_fetch(receiver, body, sign(["whsec-old", SECRET], body))
    verify("whsec-old", record["body"].encode("utf-8"), record["headers"])
    verify(SECRET, record["body"].encode("utf-8"), record["headers"])


def test_tampered_body_fails_after_http_hop(receiver: httpx.Client) -> None:
    body = json_body(PAYLOAD)
    headers = sign(SECRET, body)
    tampered = body.replace(b'"customer"', b'"churned"')
    assert tampered != body
    record = post_and_fetch(receiver, tampered, headers)  # e.g. altered by a proxy in between
    with pytest.raises(SignatureError, match="does not match"):
        verify(SECRET, record["body"].encode("utf-8"), record["headers"])


def test_replayed_request_fails_after_http_hop(receiver: httpx.Client) -> None:
    body = json_body(PAYLOAD)
    record = post_and_fetch(receiver, body, sign(SECRET, body, timestamp=1_600_000_000))
    assert record["headers"][SIGNATURE_HEADER.lower()].startswith("v1=")
    with pytest.raises(SignatureError, match="possible replay"):
        verify(SECRET, record["body"].encode("utf-8"), record["headers"])
