"""Idempotency-Key replay and fault injection of the devstack CRM, over real HTTP (ServerThread + httpx)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack import crm as crm_server
from devstack.crm import FaultConfig
from devstack.serve import ServerThread

pytestmark = pytest.mark.integration

TOKEN = "devstack-test-token"
UPSERT = "/crm/v3/objects/contacts/batch/upsert"
CONTACTS = "/crm/v3/objects/contacts"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

StartCrm = Callable[..., httpx.Client]


@pytest.fixture
def start_crm(tmp_path: Path) -> Iterator[StartCrm]:
    """Start a CRM with the given faults; returns a client for it. Servers and clients stop at teardown."""
    started: list[tuple[ServerThread, httpx.Client]] = []

    def start(faults: FaultConfig | None = None) -> httpx.Client:
        server = ServerThread(crm_server.create_app(tmp_path / f"crm{len(started)}.sqlite", TOKEN, faults)).start()
        client = httpx.Client(base_url=server.url, headers=AUTH, timeout=30)
        started.append((server, client))
        return client

    yield start
    for server, client in started:
        client.close()
        server.stop()


def batch(*emails: str, **properties: Any) -> dict[str, Any]:
    return {"inputs": [{"idProperty": "email", "id": email, "properties": properties} for email in emails]}


def post(client: httpx.Client, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    return client.post(UPSERT, json=body, headers={"Idempotency-Key": key} if key else {})


def stats(client: httpx.Client) -> dict[str, int]:
    response = client.get("/_devstack/stats")
    assert response.status_code == 200, response.text
    return response.json()


def test_idempotent_replay_returns_recorded_response_and_applies_nothing(start_crm: StartCrm) -> None:
    client = start_crm()
    body = batch("ada@example.com", "bob@example.com", firstname="A")
    first = post(client, body, key="k-1")
    assert first.status_code == 200, first.text
    assert "Idempotent-Replayed" not in first.headers
    assert stats(client) == {"contacts": 2, "upsert_requests": 1, "upserted_inputs": 2, "archived": 0}

    # The same body with keys in another order and whitespace is the same payload.
    again = client.post(
        UPSERT,
        content=b'{"inputs": [{"properties": {"firstname": "A"}, "id": "ada@example.com", "idProperty": "email"},'
        b'{"idProperty": "email", "id": "bob@example.com", "properties": {"firstname": "A"}}]}',
        headers={"Idempotency-Key": "k-1", "Content-Type": "application/json"},
    )
    assert again.status_code == 200, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert stats(client) == {"contacts": 2, "upsert_requests": 1, "upserted_inputs": 2, "archived": 0}

    # No key: applied as before; a new key: applied once.
    assert post(client, body).status_code == 200
    assert post(client, body, key="k-2").status_code == 200
    assert stats(client)["upserted_inputs"] == 6


def test_key_reused_with_different_body_is_422(start_crm: StartCrm) -> None:
    client = start_crm()
    assert post(client, batch("ada@example.com", firstname="Ada"), key="k").status_code == 200
    reused = post(client, batch("ada@example.com", firstname="Grace"), key="k")
    assert reused.status_code == 422, reused.text
    error = reused.json()
    assert (error["status"], error["category"]) == ("error", "VALIDATION_ERROR")
    assert "different" in error["message"] and "'k'" in error["message"]
    ada = client.get(f"{CONTACTS}/ada@example.com", params={"idProperty": "email"}).json()
    assert ada["properties"]["firstname"] == "Ada"
    assert stats(client)["upserted_inputs"] == 1


def test_failed_upsert_records_no_key(start_crm: StartCrm) -> None:
    client = start_crm()
    post(client, batch("ada@example.com"))
    conflict = {
        "inputs": [{"idProperty": "external_id", "id": "ext-1", "properties": {"email": "ada@example.com"}}],
    }
    assert post(client, conflict, key="k").status_code == 409
    assert post(client, conflict, key="k").status_code == 409  # retried for real, not a replayed 409


def test_concurrent_requests_with_one_key_apply_once(start_crm: StartCrm) -> None:
    client = start_crm()
    body = batch(*(f"c{i}@example.com" for i in range(50)))
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda _: post(client, body, key="same"), range(16)))
    assert {r.status_code for r in responses} == {200}
    assert sum("Idempotent-Replayed" not in r.headers for r in responses) == 1
    assert len({r.text for r in responses}) == 1
    assert stats(client) == {"contacts": 50, "upsert_requests": 1, "upserted_inputs": 50, "archived": 0}


def test_every_nth_request_is_rate_limited_with_retry_after(start_crm: StartCrm) -> None:
    client = start_crm(FaultConfig(rate_limit_every=3, retry_after_seconds=0.2))
    statuses = []
    for i in range(7):
        response = post(client, batch(f"c{i}@example.com"))
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert response.headers["Retry-After"] == "0.2"
            assert response.json()["category"] == "RATE_LIMITS"
    assert statuses == [200, 200, 429, 200, 200, 429, 200]
    assert stats(client)["upserted_inputs"] == 5
    # Other endpoints are never faulted.
    assert all(client.get(CONTACTS).status_code == 200 for _ in range(4))


def test_error_rate_one_fails_every_upsert_before_applying(start_crm: StartCrm) -> None:
    client = start_crm(FaultConfig(error_rate=1.0, seed=1))
    for key in (None, "k"):
        response = post(client, batch("ada@example.com"), key=key)
        assert response.status_code == 503, response.text
        assert response.json()["status"] == "error"
    assert stats(client) == {"contacts": 0, "upsert_requests": 0, "upserted_inputs": 0, "archived": 0}


def test_drop_rate_one_drops_the_connection_before_applying(start_crm: StartCrm) -> None:
    client = start_crm(FaultConfig(drop_rate=1.0))
    for key in (None, "k"):
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            post(client, batch("ada@example.com"), key=key)
    assert stats(client) == {"contacts": 0, "upsert_requests": 0, "upserted_inputs": 0, "archived": 0}


def test_fail_after_apply_then_retry_with_same_key_replays_the_200(start_crm: StartCrm) -> None:
    client = start_crm(FaultConfig(fail_after_apply_rate=1.0))
    body = batch("ada@example.com", firstname="Ada")
    failed = post(client, body, key="k")
    assert failed.status_code == 500, failed.text
    assert failed.json()["status"] == "error"
    ada = client.get(f"{CONTACTS}/ada@example.com", params={"idProperty": "email"})
    assert ada.status_code == 200  # applied although the client saw a 500

    retry = post(client, body, key="k")  # the fault is still on, but a replay applies nothing, so nothing fails
    assert retry.status_code == 200, retry.text
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert retry.json()["results"][0]["id"] == ada.json()["id"]
    assert retry.json()["results"][0]["new"] is True
    assert stats(client) == {"contacts": 1, "upsert_requests": 1, "upserted_inputs": 1, "archived": 0}


def test_faults_switch_on_a_running_server(start_crm: StartCrm) -> None:
    client = start_crm()
    assert client.get("/_devstack/faults").json() == FaultConfig().to_json()
    assert post(client, batch("a@example.com")).status_code == 200

    switched = client.put("/_devstack/faults", json={"error_rate": 1.0, "seed": 7})
    assert switched.status_code == 200, switched.text
    assert switched.json() == {**FaultConfig().to_json(), "error_rate": 1.0, "seed": 7}
    assert post(client, batch("b@example.com")).status_code == 503

    assert client.put("/_devstack/faults", json={"rate_limit_every": 2}).status_code == 200
    assert [post(client, batch(f"c{i}@example.com")).status_code for i in range(4)] == [200, 429, 200, 429]

    assert client.put("/_devstack/faults", json={}).status_code == 200  # all off
    assert post(client, batch("d@example.com")).status_code == 200
    assert stats(client)["upserted_inputs"] == 4

    for bad in ({"error_rate": 2}, {"nope": 1}, {"rate_limit_every": -1}, [1]):
        response = client.put("/_devstack/faults", json=bad)
        assert response.status_code == 400, bad
        assert response.json()["category"] == "VALIDATION_ERROR"
    assert httpx.get(f"{client.base_url}/_devstack/faults").status_code == 401


def test_slow_seconds_delays_upserts(start_crm: StartCrm) -> None:
    client = start_crm(FaultConfig(slow_seconds=0.3))
    response = post(client, batch("a@example.com"))
    assert response.status_code == 200
    assert response.elapsed.total_seconds() >= 0.3


def test_seeded_error_rate_is_reproducible(start_crm: StartCrm) -> None:
    runs = []
    for _ in range(2):
        client = start_crm(FaultConfig(error_rate=0.5, seed=42))
        runs.append([post(client, batch(f"c{i}@example.com")).status_code for i in range(20)])
    assert runs[0] == runs[1]
    assert set(runs[0]) == {200, 503}


def test_cli_rejects_bad_fault_settings() -> None:
    with pytest.raises(SystemExit):
        crm_server.main(["--error-rate", "1.5"])
