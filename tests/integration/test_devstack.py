"""The devstack servers over real HTTP: each test starts them on an ephemeral loopback port with ServerThread."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from devstack import crm as crm_server
from devstack import webhook_receiver
from devstack.serve import ServerThread, server_process
from pipeline.core.settings import REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.once]

TOKEN = "devstack-test-token"
UPSERT = "/crm/v3/objects/contacts/batch/upsert"
CONTACTS = "/crm/v3/objects/contacts"


@pytest.fixture
def crm(tmp_path: Path) -> Iterator[ServerThread]:
    with ServerThread(crm_server.create_app(tmp_path / "crm.sqlite", token=TOKEN)) as server:
        yield server


@pytest.fixture
def client(crm: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=crm.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as client:
        yield client


def by_email(email: str, **properties: Any) -> dict[str, Any]:
    return {"idProperty": "email", "id": email, "properties": properties}


def upsert(client: httpx.Client, inputs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    response = client.post(UPSERT, json={"inputs": inputs})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "COMPLETE"
    assert {"startedAt", "completedAt"} <= body.keys()
    return body["results"]


def stats(client: httpx.Client) -> dict[str, int]:
    response = client.get("/_devstack/stats")
    assert response.status_code == 200, response.text
    return response.json()


def test_healthz_needs_no_token(crm: ServerThread) -> None:
    response = httpx.get(f"{crm.url}/healthz")
    assert (response.status_code, response.text) == (200, "ok")


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-token"}, {"Authorization": f"Basic {TOKEN}"}],
    ids=["missing", "wrong-token", "wrong-scheme"],
)
@pytest.mark.parametrize("method, path", [("POST", UPSERT), ("GET", CONTACTS), ("GET", "/_devstack/stats")])
def test_api_requires_bearer_token(crm: ServerThread, headers: dict[str, str], method: str, path: str) -> None:
    response = httpx.request(method, f"{crm.url}{path}", headers=headers, json={"inputs": []})
    assert response.status_code == 401
    body = response.json()
    assert body["status"] == "error"
    assert body["category"] == "INVALID_AUTHENTICATION"
    assert body["message"]


def test_upsert_creates_then_merges_updates(client: httpx.Client) -> None:
    created = upsert(
        client,
        [by_email("ada@example.com", firstname="Ada", age=36, vip=True), by_email("bob@example.com", firstname="Bob")],
    )
    assert [result["new"] for result in created] == [True, True]
    ada = created[0]
    assert ada["id"].isdigit()
    assert ada["properties"]["hs_object_id"] == ada["id"]
    # Values are stored as strings, like HubSpot.
    assert {k: ada["properties"][k] for k in ("email", "firstname", "age", "vip")} == {
        "email": "ada@example.com",
        "firstname": "Ada",
        "age": "36",
        "vip": "true",
    }
    assert ada["createdAt"] == ada["updatedAt"]
    assert ada["createdAt"].endswith("Z")

    updated = upsert(client, [by_email("ada@example.com", lastname="Lovelace", age=37)])
    assert len(updated) == 1
    ada_after = updated[0]
    assert ada_after["new"] is False
    assert ada_after["id"] == ada["id"]
    assert ada_after["createdAt"] == ada["createdAt"]
    assert ada_after["updatedAt"] >= ada["updatedAt"]
    props = ada_after["properties"]
    assert (props["firstname"], props["lastname"], props["age"], props["vip"]) == ("Ada", "Lovelace", "37", "true")

    assert stats(client) == {"contacts": 2, "upsert_requests": 2, "upserted_inputs": 3, "archived": 0}


def test_resending_unchanged_contact_keeps_updated_at(client: httpx.Client) -> None:
    first = upsert(client, [by_email("ada@example.com", firstname="Ada")])[0]
    again = upsert(client, [by_email("ada@example.com", firstname="Ada")])[0]
    assert again["new"] is False
    assert again["updatedAt"] == first["updatedAt"]
    assert again["properties"] == first["properties"]


def test_batch_of_100_is_accepted_and_101_rejected(client: httpx.Client) -> None:
    too_many = [by_email(f"c{i}@example.com") for i in range(101)]
    response = client.post(UPSERT, json={"inputs": too_many})
    assert response.status_code == 400
    body = response.json()
    assert body["category"] == "VALIDATION_ERROR"
    assert "101" in body["message"] and "100" in body["message"]
    assert stats(client) == {"contacts": 0, "upsert_requests": 0, "upserted_inputs": 0, "archived": 0}

    assert len(upsert(client, too_many[:100])) == 100
    assert stats(client)["contacts"] == 100


@pytest.mark.parametrize(
    "content, where",
    [
        (b'{"inputs": [', "line 1"),
        (b'{"inputs": "not a list"}', "inputs"),
        (json.dumps({"inputs": [{"idProperty": "email", "properties": {}}]}).encode(), "inputs[0].id"),
        (json.dumps({"inputs": [{"idProperty": "e mail", "id": "x"}]}).encode(), "inputs[0].idProperty"),
        (json.dumps({"inputs": [by_email("a@x", address={"city": "Oslo"})]}).encode(), "properties.address"),
        (json.dumps({"inputs": [by_email("a@x", hs_object_id="7")]}).encode(), "read-only"),
        (json.dumps({"inputs": [by_email("a@x"), by_email("b@x"), by_email("a@x")]}).encode(), "inputs[2].id"),
    ],
    ids=["truncated-json", "inputs-not-list", "missing-id", "bad-id-property", "nested-value", "read-only", "dup"],
)
def test_malformed_upserts_are_rejected_whole(client: httpx.Client, content: bytes, where: str) -> None:
    response = client.post(UPSERT, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["category"] == "VALIDATION_ERROR"
    assert where in body["message"]
    assert stats(client)["contacts"] == 0


def test_read_back_by_object_id_and_by_id_property(client: httpx.Client) -> None:
    results = upsert(
        client,
        [
            by_email("ada@example.com", firstname="Ada"),
            {"idProperty": "external_id", "id": "ext-42", "properties": {"firstname": "Grace"}},
        ],
    )
    ada_id, grace_id = (result["id"] for result in results)

    ada = client.get(f"{CONTACTS}/{ada_id}")
    assert ada.status_code == 200
    assert ada.json()["properties"]["firstname"] == "Ada"

    by_mail = client.get(f"{CONTACTS}/ada@example.com", params={"idProperty": "email"})
    assert by_mail.status_code == 200
    assert by_mail.json()["id"] == ada_id

    by_external = client.get(f"{CONTACTS}/ext-42", params={"idProperty": "external_id"})
    assert by_external.status_code == 200
    assert by_external.json()["id"] == grace_id

    # A property never used as idProperty is still searchable (by a scan), and the search does not make it unique.
    by_name = client.get(f"{CONTACTS}/Ada", params={"idProperty": "firstname"})
    assert by_name.status_code == 200
    assert by_name.json()["id"] == ada_id
    upsert(client, [by_email("ada.2@example.com", firstname="Ada")])

    narrowed = client.get(f"{CONTACTS}/{ada_id}", params={"properties": "email"}).json()["properties"]
    assert "firstname" not in narrowed and narrowed["email"] == "ada@example.com"

    for path, params in [
        (f"{CONTACTS}/999999", {}),
        (f"{CONTACTS}/nobody@example.com", {"idProperty": "email"}),
        (f"{CONTACTS}/ext-0", {"idProperty": "external_id"}),
        (f"{CONTACTS}/Nobody", {"idProperty": "firstname"}),
    ]:
        missing = client.get(path, params=params)
        assert missing.status_code == 404, path
        assert missing.json()["category"] == "OBJECT_NOT_FOUND"


def test_unique_id_property_conflict_rolls_back_batch(client: httpx.Client) -> None:
    upsert(client, [by_email("ada@example.com")])
    response = client.post(
        UPSERT,
        json={
            "inputs": [
                by_email("bob@example.com"),
                {"idProperty": "external_id", "id": "ext-1", "properties": {"email": "ada@example.com"}},
            ]
        },
    )
    assert response.status_code == 409, response.text
    assert response.json()["category"] == "CONFLICT"
    assert "ada@example.com" in response.json()["message"]
    assert stats(client) == {"contacts": 1, "upsert_requests": 1, "upserted_inputs": 1, "archived": 0}


def test_paging_returns_every_contact_once(client: httpx.Client) -> None:
    upsert(client, [by_email(f"c{i:03}@example.com") for i in range(25)])
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 10}
    pages = 0
    while True:
        response = client.get(CONTACTS, params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        pages += 1
        seen += [contact["id"] for contact in body["results"]]
        after = body.get("paging", {}).get("next", {}).get("after")
        if after is None:
            break
        params["after"] = after
    assert pages == 3
    assert len(seen) == len(set(seen)) == 25


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 101}, {"limit": "ten"}, {"after": "abc"}])
def test_paging_rejects_bad_parameters(client: httpx.Client, params: dict[str, Any]) -> None:
    response = client.get(CONTACTS, params=params)
    assert response.status_code == 400
    assert response.json()["category"] == "VALIDATION_ERROR"


def test_concurrent_batch_upserts_lose_nothing_and_duplicate_nothing(crm: ServerThread, client: httpx.Client) -> None:
    threads, batches, distinct, shared = 8, 10, 90, 10

    def work(thread: int) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=crm.url, headers=headers, timeout=60) as own_client:
            for batch in range(batches):
                # Every thread also upserts the same `shared` ids of this batch number, racing to create them.
                inputs = [by_email(f"t{thread}-b{batch}-{i}@example.com", thread=thread) for i in range(distinct)]
                inputs += [by_email(f"shared-b{batch}-{i}@example.com", thread=thread) for i in range(shared)]
                assert len(upsert(own_client, inputs)) == distinct + shared

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(work, range(threads)))

    assert stats(client) == {
        "contacts": threads * batches * distinct + batches * shared,
        "upsert_requests": threads * batches,
        "upserted_inputs": threads * batches * (distinct + shared),
        "archived": 0,
    }


def test_server_thread_picks_free_ports_and_releases_them(tmp_path: Path) -> None:
    with (
        ServerThread(crm_server.create_app(tmp_path / "a.sqlite", token=None)) as first,
        ServerThread(webhook_receiver.create_app()) as second,
    ):
        assert first.port != second.port
        assert httpx.get(f"{first.url}/_devstack/stats").status_code == 200  # token=None: no auth
        url = second.url
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz")


def test_a_server_on_a_port_in_use_is_refused_not_mistaken_for_the_one_there(tmp_path: Path) -> None:
    """A second `make dev` on the same port: the server already there answers /healthz, so without the check the
    new stack would run against the old one's server (its data, its faults) while its own had died."""
    with ServerThread(webhook_receiver.create_app()) as there:
        refused = pytest.raises(RuntimeError, match=rf"port {there.port} is already in use")
        with refused, server_process("devstack.webhook_receiver", port=there.port):
            pass
    with server_process("devstack.webhook_receiver", port=there.port) as url:  # once it is gone, it is free
        assert httpx.get(f"{url}/healthz").status_code == 200


def test_make_dev_names_the_busy_port_and_starts_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from devstack import dev
    from devstack.serve import free_port

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    data = tmp_path / "data"
    with ServerThread(webhook_receiver.create_app()) as there:
        args = ["--crm-port", str(free_port()), "--webhook-port", str(free_port()), "--dagster-port", str(free_port())]
        code = dev.main([*args, "--data", str(data), "--dbt-cloud-port", str(there.port)])
    assert code == 1
    assert f"Already in use: DBT_CLOUD_PORT={there.port} (another `make dev`?)" in caplog.text
    assert "make dev DBT_CLOUD_PORT=" in caplog.text
    assert not data.exists(), "nothing started, nothing written"


def test_webhook_receiver_records_posts(tmp_path: Path) -> None:
    log_path = tmp_path / "webhooks" / "received.jsonl"
    with ServerThread(webhook_receiver.create_app(log_path)) as receiver, httpx.Client(base_url=receiver.url) as client:
        slack = client.post("/services/T000/B000/XXXX", json={"text": "sync done: 3 sent"}, headers={"X-Trace": "1"})
        assert (slack.status_code, slack.text) == (200, "ok")
        plain = client.post("/hooks/raw?attempt=2", content=b"not json", headers={"Content-Type": "text/plain"})
        assert plain.status_code == 200

        received = client.get("/_devstack/received").json()
        assert [(r["method"], r["path"]) for r in received] == [
            ("POST", "/services/T000/B000/XXXX"),
            ("POST", "/hooks/raw"),
        ]
        assert received[0]["json"] == {"text": "sync done: 3 sent"}
        assert json.loads(received[0]["body"]) == {"text": "sync done: 3 sent"}
        assert received[0]["headers"]["x-trace"] == "1"
        assert received[1]["json"] is None
        assert received[1]["body"] == "not json"
        assert received[1]["query"] == "attempt=2"

        lines = log_path.read_text(encoding="utf-8").splitlines()
        assert [json.loads(line)["path"] for line in lines] == ["/services/T000/B000/XXXX", "/hooks/raw"]

        assert client.delete("/_devstack/received").json() == {"cleared": 2}
        assert client.get("/_devstack/received").json() == []


def test_invalid_email_fails_the_batch_naming_each_bad_input(client: httpx.Client) -> None:
    inputs = [
        by_email("ok@x.io"),
        {"idProperty": "ext_id", "id": "b", "properties": {"email": "no at sign"}},
        {"idProperty": "ext_id", "id": "c", "properties": {"email": "c@nodot"}},
    ]
    response = client.post(UPSERT, json={"inputs": inputs})
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert [e["in"] for e in errors] == ["inputs[1].properties.email", "inputs[2].properties.email"]
    assert all("INVALID_EMAIL" in e["message"] for e in errors)
    assert stats(client)["contacts"] == 0, "nothing of the batch was applied"


def test_batch_read_by_id_property_then_archive_by_object_id(client: httpx.Client) -> None:
    created = upsert(client, [by_email(f"u{i}@x.io", firstname=f"U{i}") for i in range(3)])
    read = client.post(
        f"{CONTACTS}/batch/read",
        json={"idProperty": "email", "inputs": [{"id": "u0@x.io"}, {"id": "u2@x.io"}, {"id": "nobody@x.io"}]},
    )
    assert read.status_code == 207
    body = read.json()
    assert sorted(r["properties"]["email"] for r in body["results"]) == ["u0@x.io", "u2@x.io"]
    assert body["errors"][0]["context"]["ids"] == ["nobody@x.io"]
    ids = [r["id"] for r in body["results"]]
    assert client.post(f"{CONTACTS}/batch/archive", json={"inputs": [{"id": i} for i in ids]}).status_code == 204
    assert client.post(f"{CONTACTS}/batch/archive", json={"inputs": [{"id": i} for i in ids]}).status_code == 204
    assert (stats(client)["contacts"], stats(client)["archived"]) == (1, 2)
    assert client.get(f"{CONTACTS}/{created[0]['id']}").status_code == 404
    refused = client.post(f"{CONTACTS}/batch/archive", json={"idProperty": "email", "inputs": [{"id": "u1@x.io"}]})
    assert refused.status_code == 400, "archive takes object ids only, as in HubSpot"


def test_a_client_gone_mid_body_is_a_log_line_not_a_traceback(crm, client, caplog):
    """A run worker killed mid-send leaves a request with half a body: the CRM says so in one line and goes on."""
    url = urlsplit(crm.url)
    caplog.set_level(logging.INFO)
    with socket.create_connection((url.hostname, url.port)) as sock:
        head = (
            f"POST {UPSERT} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n"
        )
        sock.sendall(f"{head}Content-Length: 1000\r\n\r\n".encode() + b'{"inputs": [')
    deadline = time.monotonic() + 10
    while "disconnected before its body arrived" not in caplog.text:
        assert time.monotonic() < deadline, caplog.text
        time.sleep(0.05)
    assert "Traceback" not in caplog.text and "ClientDisconnect" not in caplog.text, caplog.text
    upsert(client, [by_email("after@x.io", firstname="A")])  # still serving


@pytest.mark.parametrize("variable", ["DBT_CLOUD_PORT", "DBT_ENGINE"])
def test_make_dev_variables_given_on_the_command_line_do_not_reach_the_code_location(variable):
    """`make dev DBT_CLOUD_PORT=18767`: make exports command-line variables to its recipes, and the code location
    refuses a DBT_CLOUD_* setting without an account (dbt warns about DBT_ENGINE*): neither may be exported."""
    probe = f'probe: ; @env | grep "^{variable}=" || echo unexported'
    value = "core" if variable == "DBT_ENGINE" else "18767"
    done = subprocess.run(
        ["make", "--no-print-directory", "--eval", probe, "probe", f"{variable}={value}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == "unexported", done.stdout
