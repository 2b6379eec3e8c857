"""A destination type is one module registering itself: a throwaway `ledger` type, defined and registered here only,
is accepted by syncs.yaml's validation, shows up in the code location's assets and resources, and receives a sync's
batches over HTTP (a real local server) — with no edit anywhere else."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator

import dagster as dg
import duckdb
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from devstack.serve import ServerThread
from pipeline.activation import assets, destinations, shape
from pipeline.activation.assets import activation_defs
from pipeline.activation.destinations import DestinationType, HttpDestinationResource
from pipeline.activation.outbox import Batch
from pipeline.activation.syncs import SyncSpec, load_syncs
from pipeline.core.config_files import ConfigFileError
from pipeline.core.resources import WarehouseResource
from pipeline.core.settings import Settings
from pipeline.core.transport import Delivery, RetryingSender, raise_for_error

SYNCS = """\
dbt_project: shop
syncs:
  contacts:
    model: dim_customers
    destination: crm_contacts
    primary_key: customer_id
    fields: {email: email}
  sales_ledger:
    model: dim_customers
    destination: ledger
    book: sales
    primary_key: customer_id
    mode: mirror
    fields: {email: email, lifetime_value: value}
"""


class LedgerResource(HttpDestinationResource):
    pass


class LedgerDestination:
    """Posts `{"entries": [...]}` (or `{"removed": [...]}`) to /books/<book>."""

    def __init__(self, spec, book, client, sender, batch_size, concurrency):
        self.spec, self.book, self.client, self.sender = spec, book, client, sender
        self.batch_size, self.concurrency = batch_size, concurrency

    def record_sql(self, types: dict[str, str]) -> str:
        columns = [self.spec.primary_key, *self.spec.fields]
        return shape.json_object({self.spec.fields.get(c, c): shape.json_value(c, types[c]) for c in columns})

    def batch_sql(self, records: str, key: str) -> str:
        return f"""'{{"entries":' || {records} || '}}'"""

    def delete_body(self, keys: list[str], key: str) -> str:
        return json.dumps({"removed": keys})

    def deliver(self, batch: Batch) -> Delivery:
        response = self.sender.send(lambda: self.client.post(f"/books/{self.book}", content=batch.body.encode()))
        raise_for_error(response, f"the ledger answered {response.status_code}")
        count = len(batch.record_keys)
        return Delivery(accepted=count, deleted=count if batch.op == "delete" else 0)


def check_book(value) -> str | None:
    if value is None:
        return "is required: the ledger book the sync writes"
    return None if isinstance(value, str) and value.isalpha() and value.islower() else "must be lowercase letters"


class Ledger(DestinationType[LedgerResource]):
    name = "ledger"
    resource_key = "ledger"
    options = {"book": check_book}  # noqa: RUF012 (read-only)

    def __init__(self, url: str):
        self.url = url  # a real destination type reads its URL from settings (core/settings.py)

    def resource(self, settings: Settings) -> LedgerResource:
        return LedgerResource(base_url=self.url, max_concurrency=settings.sync_concurrency, batch_size=2)

    def asset_key(self, spec: SyncSpec) -> dg.AssetKey:
        return dg.AssetKey(["ledger", spec.options["book"]])

    def describe(self, spec: SyncSpec, resource: LedgerResource) -> tuple[str, str]:
        return f"Ledger book {spec.options['book']}", f"{resource.base_url}/books/{spec.options['book']}"

    def open(self, spec, resource, client=None, sender: RetryingSender | None = None) -> LedgerDestination:
        book = spec.options["book"]
        return LedgerDestination(spec, book, client, sender, resource.batch_size, resource.max_concurrency)


def ledger_app(received: list) -> Starlette:
    async def post(request: Request) -> JSONResponse:
        received.append((request.path_params["book"], await request.json()))
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/books/{book}", post, methods=["POST"])])


@pytest.fixture
def ledger() -> Iterator[list]:
    """The ledger type registered (reaching a local ledger server) for one test; yields what the server received."""
    received: list = []
    with ServerThread(ledger_app(received)) as server:
        destinations.register(Ledger(server.url))
        try:
            yield received
        finally:
            destinations.unregister("ledger")


def write(tmp_path, text):
    path = tmp_path / "syncs.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(tmp_path, text) -> list[tuple[int, str]]:
    with pytest.raises(ConfigFileError) as info:
        load_syncs(write(tmp_path, text))
    return info.value.problems


def test_syncs_yaml_validation_takes_the_registered_type_and_its_own_keys(tmp_path, ledger):
    contacts, sales = load_syncs(write(tmp_path, SYNCS))
    assert (sales.destination, sales.options, contacts.options) == ("ledger", {"book": "sales"}, {})
    assert problems_of(tmp_path, SYNCS.replace("book: sales", "book: Sales")) == [
        (11, "sync sales_ledger: book 'Sales' must be lowercase letters")
    ]
    misplaced = SYNCS.replace("    destination: crm_contacts\n", "    destination: crm_contacts\n    book: sales\n")
    assert problems_of(tmp_path, misplaced) == [(6, "sync contacts: `book` applies to ledger destinations only")]
    assert problems_of(tmp_path, SYNCS.replace("    book: sales\n", "")) == [
        (8, "sync sales_ledger: `book` is required: the ledger book the sync writes")
    ]
    assert problems_of(tmp_path, SYNCS.replace("destination: ledger", "destination: ledgr")) == [
        (10, "sync sales_ledger: destination 'ledgr' is not one of crm_contacts, ledger, webhook")
    ]
    twice = SYNCS + "  sales_again:\n    model: m\n    destination: ledger\n    book: sales\n    primary_key: k\n"
    twice += "    fields: {a: b}\n"
    [(line, message)] = problems_of(tmp_path, twice)
    assert line == 15 and "sales_ledger writes ledger/sales already; one sync per destination object" in message


class NotTheWebhook(Ledger):
    name = "webhook"


def test_a_name_is_registered_once():
    with pytest.raises(ValueError, match=r"'webhook' is registered twice: by .*webhook\.Webhook and .*NotTheWebhook"):
        destinations.register(NotTheWebhook("http://127.0.0.1:9"))
    assert type(destinations.get("webhook")).__module__ == "pipeline.activation.destinations.webhook"


def test_once_unregistered_the_type_is_unknown_again(tmp_path):
    with pytest.raises(destinations.UnknownDestinationError, match="'ledger' is not one of crm_contacts, webhook$"):
        destinations.get("ledger")
    found = problems_of(tmp_path, SYNCS)
    assert [(line, message.split(" (")[0]) for line, message in found] == [
        (10, "sync sales_ledger: destination 'ledger' is not one of crm_contacts, webhook"),
        (11, "sync sales_ledger: unknown key 'book'"),
    ]


class Dbt:
    """The dbt stage as activation sees it: a manifest holding dim_customers."""

    depth = 1
    manifest = {
        "metadata": {"project_name": "shop"},
        "nodes": {
            "model.shop.dim_customers": {
                "name": "dim_customers",
                "unique_id": "model.shop.dim_customers",
                "resource_type": "model",
                "relation_name": "dim_customers",
            }
        },
        "parent_map": {},
    }

    def key_of(self, unique_id: str) -> dg.AssetKey:
        return dg.AssetKey(unique_id.split(".")[-1])


def test_the_code_location_shows_its_object_builds_its_resource_and_the_sync_sends_to_it(tmp_path, ledger, monkeypatch):
    monkeypatch.setattr(assets, "load_syncs", lambda: load_syncs(write(tmp_path, SYNCS)))
    defs = activation_defs(Settings.from_env({}), Dbt())
    specs = {spec.key: spec for spec in defs.assets if isinstance(spec, dg.AssetSpec)}
    book = specs[dg.AssetKey(["ledger", "sales"])]
    assert [dep.asset_key for dep in book.deps] == [dg.AssetKey("sales_ledger")]
    assert book.metadata["url"].value.endswith("/books/sales") and book.group_name == "destinations"
    assert set(defs.resources) == {"crm", "webhook", "ledger"}
    resource = defs.resources["ledger"]
    assert isinstance(resource, LedgerResource) and httpx.URL(resource.base_url).host == "127.0.0.1"

    [sync] = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition) and a.key == dg.AssetKey("sales_ledger")]
    assert "ledger" in sync.required_resource_keys
    db = tmp_path / "w.duckdb"
    with duckdb.connect(str(db)) as conn:
        conn.execute(
            "CREATE TABLE dim_customers AS SELECT i AS customer_id, 'c' || i || '@x.io' AS email,"
            " i * 1.5 AS lifetime_value FROM range(1, 4) t(i)"
        )
    instance = dg.DagsterInstance.ephemeral()
    run = {"warehouse": WarehouseResource(path=str(db)), "ledger": resource}
    assert dg.materialize([sync], resources=run, instance=instance, selection=[sync.key]).success
    entries = [entry for book, body in ledger for entry in body["entries"] if book == "sales"]
    assert sorted(entries, key=lambda e: e["customer_id"]) == [
        {"customer_id": i, "email": f"c{i}@x.io", "value": f"{i * 1.5:.1f}"} for i in (1, 2, 3)
    ]
    assert len(ledger) == 2, "batch_size 2: two batches"

    with duckdb.connect(str(db)) as conn:
        conn.execute("DELETE FROM dim_customers WHERE customer_id = 3")
    assert dg.materialize([sync], resources=run, instance=instance, selection=[sync.key]).success
    assert ledger[-1] == ("sales", {"removed": ["3"]}), "mirror mode: the record gone from the model is removed"
