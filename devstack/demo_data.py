"""Deterministic demo data for Tidewater Outfitters, an online outdoor-gear shop.

Writes the daily exports the two source systems would drop in the landing store, one file per table per day::

    <landing>/shop/<YYYY-MM-DD>/customers.csv
    <landing>/shop/<YYYY-MM-DD>/products.csv
    <landing>/shop/<YYYY-MM-DD>/orders.jsonl
    <landing>/shop/<YYYY-MM-DD>/order_items.csv
    <landing>/billing/<YYYY-MM-DD>/payments.parquet

Columns and their order come from ``pipeline/ingestion/contracts.yaml``, so the files always match what the loader
expects. The data is shaped to exercise the parts of the pipeline that only matter when records change: customers
re-appear with a new email or opt-in, products with a new price, and orders on every day their status moves on
(paid -> shipped -> delivered, some cancelled or returned). Incremental dbt models and diff-based activation have
something to do on every new day.

Everything is drawn from one ``random.Random(seed)`` consumed day by day, and nothing drawn for a day depends on how
many days are generated, so ``days=17`` reproduces the files of ``days=14`` byte for byte and adds three more days:
that is how a demo "gets new data".

The days end today (UTC) unless ``--start`` says otherwise: a newcomer's `make dev` then shows recent data, and
today's partition already holds files. `make dev` starts the raw partitions on the demo's first day
(``--first-day`` prints it), so the UI's "Materialize all" -> "All" picks exactly the days there is data for.

CLI::

    python -m devstack.demo_data --landing .data/landing [--seed 42] [--days 14] [--customers 500]
                                 [--start YYYY-MM-DD] [--if-absent] [--no-progress]
    python -m devstack.demo_data --landing .data/landing --first-day
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import logging
import os
import random
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import duckdb
from tqdm import tqdm

from pipeline.ingestion.contracts import CONTRACTS_PATH, load_contracts

logger = logging.getLogger("devstack.demo_data")  # not __name__: under -m that is __main__

DEFAULT_DAYS = 14
DEFAULT_CUSTOMERS = 500


def default_start(days: int, today: date | None = None) -> date:
    """The first day of `days` daily exports that end today (UTC)."""
    return (today or datetime.now(UTC).date()) - timedelta(days=days - 1)


def first_landing_day(landing_dir: Path) -> date | None:
    """The earliest `<YYYY-MM-DD>` folder of any source system under `landing_dir`, loaded (under `processed/`) or
    not; None when there is none."""
    days = []
    for system_dir in [*landing_dir.glob("*"), *landing_dir.glob("processed/*")]:
        for day_dir in system_dir.glob("*") if system_dir.is_dir() else []:
            try:
                days.append(date.fromisoformat(day_dir.name))
            except ValueError:
                continue
    return min(days, default=None)


# Which file format each table is delivered in: one of each reader the loader supports.
FILE_FORMATS: dict[str, str] = {
    "customers": "csv",
    "products": "csv",
    "orders": "jsonl",
    "order_items": "csv",
    "payments": "parquet",
}

# Enumerations: the dbt project's accepted_values tests list exactly these values.
SIGNUP_CHANNELS = {"organic": 35, "paid_search": 25, "social": 18, "referral": 12, "marketplace": 10}
COUNTRIES = {"US": 35, "CA": 8, "GB": 14, "DE": 12, "FR": 8, "NL": 6, "AU": 9, "JP": 8}
CATEGORIES = ("tents", "backpacks", "apparel", "footwear", "cooking", "accessories")
ORDER_STATUSES = ("placed", "paid", "shipped", "delivered", "cancelled", "returned")
SALES_CHANNELS = {"web": 55, "mobile_app": 35, "marketplace": 10}
PAYMENT_METHODS = {"card": 60, "paypal": 25, "gift_card": 8, "bank_transfer": 7}
PAYMENT_STATUSES = ("succeeded", "failed", "refunded")

# Identifier ranges do not overlap, so a join on the wrong key returns nothing instead of plausible nonsense.
FIRST_CUSTOMER_ID = 1
FIRST_PRODUCT_ID = 101
FIRST_ORDER_ID = 100_001
FIRST_ORDER_ITEM_ID = 1_000_001

PRODUCTS_PER_CATEGORY = 10
INITIAL_HISTORY_DAYS = 730  # the day-1 customers signed up during the two years before the first export
DAILY_SIGNUP_RATE = 0.025  # new customers a day, as a share of the day-1 customer base
DAILY_PROFILE_CHANGE_RATE = 0.012  # existing customers whose profile changes on a given day
DAILY_ORDER_RATE = 0.075  # orders a day per known customer (before the weekend bump and noise)

_CATALOGUE: dict[str, tuple[tuple[str, ...], int, int]] = {
    # category: (product types, lowest price, highest price) in whole currency units
    "tents": (("2P Tent", "3P Tent", "Ultralight Tent", "Family Tent", "Bivy Shelter", "Tarp Shelter"), 89, 649),
    "backpacks": (("Daypack 22L", "Trek Pack 45L", "Expedition Pack 65L", "Hydration Pack", "Summit Bag"), 39, 289),
    "apparel": (("Rain Shell", "Down Jacket", "Fleece Hoodie", "Merino Base Layer", "Trail Shorts"), 24, 259),
    "footwear": (("Hiking Boot", "Trail Runner", "Approach Shoe", "Camp Sandal", "Winter Boot"), 59, 229),
    "cooking": (("Canister Stove", "Titanium Pot", "Camp Kettle", "Cook Set", "Insulated Mug"), 12, 149),
    "accessories": (("Headlamp", "Trekking Poles", "Dry Bag 10L", "Water Filter", "Camp Chair"), 9, 119),
}
_PRODUCT_LINES = (
    "Ridgeline",
    "Tidepool",
    "Cascade",
    "Driftwood",
    "Granite",
    "Kestrel",
    "Larch",
    "Saltmarsh",
    "Headland",
    "Alder",
    "Basalt",
    "Fjord",
)
_FIRST_NAMES = (
    "Ava",
    "Liam",
    "Noah",
    "Emma",
    "Olivia",
    "Mateo",
    "Sofía",
    "Lucas",
    "Mia",
    "Elias",
    "Zoë",
    "Chloé",
    "Hannah",
    "Jonas",
    "Léa",
    "Finn",
    "Amélie",
    "Yuki",
    "Haruto",
    "Sakura",
    "Aiko",
    "Oliver",
    "Isla",
    "Jack",
    "Charlotte",
    "Ruby",
    "Daan",
    "Sanne",
    "Björn",
    "Ingrid",
    "Aarav",
    "Priya",
    "Kai",
    "Nora",
    "Sam",
    "Grace",
)
_LAST_NAMES = (
    "Smith",
    "Johnson",
    "Brown",
    "Taylor",
    "Wilson",
    "Martin",
    "Müller",
    "Schmidt",
    "Fischer",
    "Dubois",
    "Lefèvre",
    "Moreau",
    "de Vries",
    "Jansen",
    "Bakker",
    "O'Brien",
    "MacLeod",
    "Evans",
    "Tanaka",
    "Suzuki",
    "Sato",
    "Nguyen",
    "Patel",
    "García",
    "Rossi",
    "Novak",
    "Kowalski",
    "Lindqvist",
    "Andersen",
    "Clarke",
)
_EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example.com", "outdoors.example.com")

_CENT = Decimal("0.01")


@dataclasses.dataclass
class _Customer:
    customer_id: int
    first_name: str
    last_name: str
    email: str
    country_code: str
    signup_channel: str
    marketing_opt_in: bool
    created_at: datetime
    updated_at: datetime
    weight: float  # how often this customer orders, relative to others


@dataclasses.dataclass
class _Product:
    product_id: int
    sku: str
    product_name: str
    category: str
    unit_price: Decimal
    unit_cost: Decimal
    is_active: bool
    updated_at: datetime
    weight: float  # popularity


@dataclasses.dataclass
class _Order:
    order_id: int
    customer_id: int
    order_status: str
    sales_channel: str
    shipping_country: str
    ordered_at: datetime
    updated_at: datetime
    payment_method: str
    total: Decimal


@dataclasses.dataclass(frozen=True)
class _Transition:
    """A status change of an order, scheduled when the order is created and delivered on its day."""

    order_id: int
    status: str


# ---------------------------------------------------------------------------------------------------------------
# Pure helpers
# ---------------------------------------------------------------------------------------------------------------


def load_contract_columns(contracts_path: Path = CONTRACTS_PATH) -> dict[str, tuple[str, dict[str, str]]]:
    """Return ``{table: (system, {column: duckdb_type})}`` in contract order, read by the loader's own reader."""
    return {t.table: (t.system, dict(t.columns)) for t in load_contracts(contracts_path)}


def landing_key(system: str, day: date, table: str) -> str:
    """The landing key (path relative to the landing dir) of one table's file for one day."""
    return f"{system}/{day.isoformat()}/{table}.{FILE_FORMATS[table]}"


def format_timestamp(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S")


def email_slug(text: str) -> str:
    """ASCII, lower-case, letters and digits only: ``"Lefèvre"`` -> ``"lefevre"``, ``"O'Brien"`` -> ``"obrien"``."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return "".join(ch for ch in folded.lower() if ch.isalnum())


def make_email(first_name: str, last_name: str, customer_id: int, variant: int = 0) -> str:
    """An email that embeds the customer id, so no two customers can ever share one."""
    first, last = email_slug(first_name), email_slug(last_name)
    local = f"{first}.{last}" if variant % 2 == 0 else f"{first[:1]}{last}"
    return f"{local}.{customer_id}@{_EMAIL_DOMAINS[variant % len(_EMAIL_DOMAINS)]}"


def line_total(quantity: int, unit_price: Decimal, discount_amount: Decimal) -> Decimal:
    return quantity * unit_price - discount_amount


def _money(value: Decimal) -> Decimal:
    return value.quantize(_CENT, rounding=ROUND_HALF_UP)


def _weighted(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(tuple(weights), weights=tuple(weights.values()))[0]


def _at(day: date, seconds: int) -> datetime:
    return datetime.combine(day, time()) + timedelta(seconds=seconds)


# ---------------------------------------------------------------------------------------------------------------
# Simulation
# ---------------------------------------------------------------------------------------------------------------


class _Shop:
    """The state of the shop, advanced one day at a time; each call to ``simulate_day`` returns that day's rows."""

    def __init__(self, rng: random.Random, start: date, customers: int) -> None:
        self.rng = rng
        self.start = start
        self.base_customers = customers
        self.customers: dict[int, _Customer] = {}
        self.products: dict[int, _Product] = {}
        self.orders: dict[int, _Order] = {}
        self.pending: dict[date, list[_Transition]] = defaultdict(list)
        self.next_customer_id = FIRST_CUSTOMER_ID
        self.next_order_id = FIRST_ORDER_ID
        self.next_order_item_id = FIRST_ORDER_ITEM_ID
        self.next_payment_no = 1

    # -- customers ----------------------------------------------------------------------------------------------

    def _new_customer(self, created_at: datetime, updated_at: datetime) -> _Customer:
        rng = self.rng
        customer_id = self.next_customer_id
        self.next_customer_id += 1
        first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
        customer = _Customer(
            customer_id=customer_id,
            first_name=first,
            last_name=last,
            email=make_email(first, last, customer_id),
            country_code=_weighted(rng, COUNTRIES),
            signup_channel=_weighted(rng, SIGNUP_CHANNELS),
            marketing_opt_in=rng.random() < 0.45,
            created_at=created_at,
            updated_at=updated_at,
            weight=min(rng.paretovariate(1.6), 15.0),
        )
        self.customers[customer_id] = customer
        return customer

    def _initial_customers(self, day: date) -> list[_Customer]:
        rng = self.rng
        batch = []
        export_time = _at(day, 0)
        for _ in range(self.base_customers):
            created_at = export_time - timedelta(seconds=rng.randint(3600, INITIAL_HISTORY_DAYS * 86400))
            # some profiles were edited after sign-up, before the first export
            edited = rng.random() < 0.3
            span = int((export_time - created_at).total_seconds())
            updated_at = created_at + timedelta(seconds=rng.randint(0, span - 1)) if edited else created_at
            batch.append(self._new_customer(created_at, updated_at))
        return batch

    def _signups(self, day: date) -> list[_Customer]:
        rng = self.rng
        expected = self.base_customers * DAILY_SIGNUP_RATE
        count = max(0, round(expected * rng.uniform(0.6, 1.4)))
        batch = []
        for _ in range(count):
            # sign-ups end by 20:00 so a same-day first order still fits in the day
            created_at = _at(day, rng.randint(0, 20 * 3600))
            batch.append(self._new_customer(created_at, created_at))
        return batch

    def _profile_changes(self, day: date) -> list[_Customer]:
        rng = self.rng
        existing = [c for c in self.customers.values() if c.created_at.date() < day]
        if not existing:
            return []
        count = min(len(existing), max(1, round(len(existing) * DAILY_PROFILE_CHANGE_RATE * rng.uniform(0.5, 1.5))))
        changed = []
        for customer in sorted(rng.sample(existing, count), key=lambda c: c.customer_id):
            roll = rng.random()
            if roll < 0.6 or roll >= 0.95:
                variant = rng.randint(1, 9)
                new_email = make_email(customer.first_name, customer.last_name, customer.customer_id, variant)
                if new_email == customer.email:
                    new_email = make_email(customer.first_name, customer.last_name, customer.customer_id, variant + 1)
                customer.email = new_email
            if roll >= 0.4:
                customer.marketing_opt_in = not customer.marketing_opt_in
            if rng.random() < 0.05:  # moved abroad
                customer.country_code = rng.choice([c for c in COUNTRIES if c != customer.country_code])
            customer.updated_at = _at(day, rng.randint(0, 86399))
            changed.append(customer)
        return changed

    # -- products -----------------------------------------------------------------------------------------------

    def _catalogue(self, day: date) -> list[_Product]:
        rng = self.rng
        product_id = FIRST_PRODUCT_ID
        products = []
        for category in CATEGORIES:
            kinds, low, high = _CATALOGUE[category]
            names = [f"{line} {kind}" for line in _PRODUCT_LINES for kind in kinds]
            for seq, name in enumerate(sorted(rng.sample(names, PRODUCTS_PER_CATEGORY)), start=1):
                price = Decimal(rng.randint(low, high)) + Decimal(rng.choice(("0.00", "0.95", "0.99")))
                product = _Product(
                    product_id=product_id,
                    sku=f"TW-{category[:3].upper()}-{seq:04d}",
                    product_name=name,
                    category=category,
                    unit_price=price,
                    unit_cost=_money(price * rng.randint(38, 62) / 100),
                    is_active=rng.random() < 0.95,
                    updated_at=_at(day, rng.randint(0, 3600)),
                    weight=min(rng.paretovariate(1.3), 30.0),
                )
                self.products[product_id] = product
                products.append(product)
                product_id += 1
        return products

    def _product_changes(self, day: date) -> list[_Product]:
        rng = self.rng
        count = rng.choice((0, 0, 1, 1, 1, 2, 3))
        changed = []
        for product in sorted(rng.sample(list(self.products.values()), count), key=lambda p: p.product_id):
            if rng.random() < 0.15:
                product.is_active = not product.is_active
            else:
                pct = rng.choice((-25, -20, -15, -10, 5, 8, 10, 12))
                whole = max(5, int(product.unit_price * (100 + pct) / 100))
                product.unit_price = Decimal(whole) + Decimal("0.95")
            product.updated_at = _at(day, rng.randint(0, 86399))
            changed.append(product)
        return changed

    # -- orders and payments ------------------------------------------------------------------------------------

    def _payment(self, order: _Order, status: str, processed_at: datetime) -> dict[str, Any]:
        payment_id = f"pay_{self.next_payment_no:06d}"
        self.next_payment_no += 1
        return {
            "payment_id": payment_id,
            "order_id": order.order_id,
            "payment_method": order.payment_method,
            "payment_status": status,
            "amount": order.total,
            "processed_at": processed_at,
        }

    def _schedule(self, order: _Order, day: date, first_status: str) -> None:
        """Draw the order's whole future at creation time, so later days never depend on the window length."""
        rng = self.rng
        if first_status == "placed":
            if rng.random() < 0.35:
                self.pending[day + timedelta(days=rng.randint(1, 3))].append(_Transition(order.order_id, "cancelled"))
                return
            day += timedelta(days=rng.randint(1, 2))
            self.pending[day].append(_Transition(order.order_id, "paid"))
        if rng.random() < 0.04:  # cancelled after payment: refunded
            self.pending[day + timedelta(days=1)].append(_Transition(order.order_id, "cancelled"))
            return
        day += timedelta(days=rng.randint(1, 2))
        self.pending[day].append(_Transition(order.order_id, "shipped"))
        day += timedelta(days=rng.randint(2, 4))
        self.pending[day].append(_Transition(order.order_id, "delivered"))
        if rng.random() < 0.09:
            day += timedelta(days=rng.randint(2, 6))
            self.pending[day].append(_Transition(order.order_id, "returned"))

    def _new_orders(self, day: date, rows: dict[str, list[dict[str, Any]]]) -> None:
        rng = self.rng
        known = [c for c in self.customers.values() if c.created_at.date() <= day]
        active_products = [p for p in self.products.values() if p.is_active]
        if not known or not active_products:
            return
        weekend = 1.25 if day.weekday() >= 5 else 1.0
        count = round(len(known) * DAILY_ORDER_RATE * weekend * rng.uniform(0.8, 1.2))
        cum_weights = []
        running = 0.0
        for customer in known:
            running += customer.weight
            cum_weights.append(running)
        buyers = rng.choices(known, cum_weights=cum_weights, k=count)
        for customer in buyers:
            ordered_at = _at(day, rng.randint(0, 23 * 3600 - 1))
            if ordered_at <= customer.created_at:
                ordered_at = customer.created_at + timedelta(seconds=rng.randint(120, 7200))
            order = _Order(
                order_id=self.next_order_id,
                customer_id=customer.customer_id,
                order_status="paid" if rng.random() < 0.75 else "placed",
                sales_channel=_weighted(rng, SALES_CHANNELS),
                shipping_country=(customer.country_code if rng.random() < 0.92 else _weighted(rng, COUNTRIES)),
                ordered_at=ordered_at,
                updated_at=ordered_at,
                payment_method=_weighted(rng, PAYMENT_METHODS),
                total=Decimal("0.00"),
            )
            self.next_order_id += 1
            self.orders[order.order_id] = order

            pool = list(active_products)
            for _ in range(min(len(pool), rng.choices((1, 2, 3, 4), weights=(45, 30, 15, 10))[0])):
                product = rng.choices(pool, weights=[p.weight for p in pool])[0]
                pool.remove(product)
                quantity = rng.choices((1, 2, 3), weights=(75, 18, 7))[0]
                discount = Decimal("0.00")
                if rng.random() < 0.15:
                    discount = _money(quantity * product.unit_price * rng.choice((10, 15, 20)) / 100)
                rows["order_items"].append(
                    {
                        "order_item_id": self.next_order_item_id,
                        "order_id": order.order_id,
                        "product_id": product.product_id,
                        "quantity": quantity,
                        "unit_price": product.unit_price,
                        "discount_amount": discount,
                    }
                )
                self.next_order_item_id += 1
                order.total += line_total(quantity, product.unit_price, discount)

            if order.order_status == "paid":
                order.updated_at = ordered_at + timedelta(seconds=rng.randint(30, 900))
                if rng.random() < 0.05:
                    failed_at = order.updated_at - timedelta(seconds=rng.randint(5, 25))
                    rows["payments"].append(self._payment(order, "failed", failed_at))
                rows["payments"].append(self._payment(order, "succeeded", order.updated_at))
            elif rng.random() < 0.2:  # the card was declined at checkout; the order waits as placed
                failed_at = ordered_at + timedelta(seconds=rng.randint(10, 300))
                rows["payments"].append(self._payment(order, "failed", failed_at))
            rows["orders"].append(self._order_row(order))
            self._schedule(order, day, order.order_status)

    def _transitions(self, day: date, rows: dict[str, list[dict[str, Any]]]) -> None:
        rng = self.rng
        for transition in sorted(self.pending.pop(day, []), key=lambda t: t.order_id):
            order = self.orders[transition.order_id]
            previous = order.order_status
            order.order_status = transition.status
            order.updated_at = _at(day, rng.randint(0, 86399))
            if transition.status == "paid":
                if rng.random() < 0.15:
                    retry_at = max(_at(day, 0), order.updated_at - timedelta(seconds=rng.randint(60, 600)))
                    rows["payments"].append(self._payment(order, "failed", retry_at))
                rows["payments"].append(self._payment(order, "succeeded", order.updated_at))
            elif transition.status == "returned" or (transition.status == "cancelled" and previous != "placed"):
                rows["payments"].append(self._payment(order, "refunded", order.updated_at))
            rows["orders"].append(self._order_row(order))

    @staticmethod
    def _order_row(order: _Order) -> dict[str, Any]:
        return {
            "order_id": order.order_id,
            "customer_id": order.customer_id,
            "order_status": order.order_status,
            "sales_channel": order.sales_channel,
            "shipping_country": order.shipping_country,
            "ordered_at": order.ordered_at,
            "updated_at": order.updated_at,
        }

    # -- one day ------------------------------------------------------------------------------------------------

    def simulate_day(self, day: date) -> dict[str, list[dict[str, Any]]]:
        rows: dict[str, list[dict[str, Any]]] = {table: [] for table in FILE_FORMATS}
        if day == self.start:
            customers = self._initial_customers(day)
            products = self._catalogue(day)
        else:
            customers = self._profile_changes(day) + self._signups(day)
            products = self._product_changes(day)
        rows["customers"] = [_public(c) for c in customers]
        rows["products"] = [_public(p) for p in products]
        self._transitions(day, rows)
        self._new_orders(day, rows)
        for table, key in (("customers", "customer_id"), ("products", "product_id"), ("orders", "order_id")):
            rows[table].sort(key=lambda row, key=key: row[key])
        return rows


def _public(record: Any) -> dict[str, Any]:
    """A record's delivered fields (the simulation-only ``weight`` stays behind)."""
    row = dataclasses.asdict(record)
    row.pop("weight", None)
    return row


# ---------------------------------------------------------------------------------------------------------------
# Writers: deterministic bytes; each writes to a temporary name and renames, so a watcher never sees half a file
# ---------------------------------------------------------------------------------------------------------------


def _text_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, Decimal):
        return f"{value:.2f}"
    return value


def render_csv(columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_text_value(row[column]) for column in columns])
    return buffer.getvalue().encode("utf-8")


def render_jsonl(columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> bytes:
    lines = []
    for row in rows:
        record = {}
        for column in columns:
            value = row[column]
            record[column] = _text_value(value) if isinstance(value, datetime | Decimal) else value
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    return "".join(lines).encode("utf-8")


def _write_bytes(path: Path, payload: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)


def write_parquet(path: Path, columns: dict[str, str], rows: Sequence[dict[str, Any]]) -> None:
    """Write typed Parquet through DuckDB: values go in as text lists and are cast to the contract types."""
    tmp = path.with_name(f".{path.name}.tmp")
    select = ", ".join(
        f"CAST(unnest(${i}::VARCHAR[]) AS {dtype}) AS {name}" for i, (name, dtype) in enumerate(columns.items(), 1)
    )
    values = [[None if row[c] is None else str(_text_value(row[c])) for row in rows] for c in columns]
    with duckdb.connect() as con:
        con.execute("SET threads = 1")
        con.execute(f"CREATE TABLE batch ({', '.join(f'{n} {t}' for n, t in columns.items())})")
        if rows:
            con.execute(f"INSERT INTO batch SELECT {select}", values)
        con.execute(f"COPY (SELECT * FROM batch) TO '{tmp.as_posix()}' (FORMAT parquet, COMPRESSION zstd)")
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------------------------


def generate(
    landing_dir: Path,
    *,
    seed: int = 42,
    days: int = DEFAULT_DAYS,
    customers: int = DEFAULT_CUSTOMERS,
    start: date | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Write ``days`` daily exports of every contract table under ``landing_dir`` and return a summary.

    ``customers`` is the size of the day-1 customer base; each later day adds about 2.5 % of that in sign-ups,
    and orders scale with the number of known customers (about 7.5 % of them order on a weekday).
    """
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    if customers < 1:
        raise ValueError(f"customers must be at least 1, got {customers}")
    start = start or default_start(days)
    contract = load_contract_columns()
    missing = set(FILE_FORMATS) ^ set(contract)
    if missing:
        raise ValueError(f"demo data and {CONTRACTS_PATH} disagree on the tables: {sorted(missing)}")

    landing_dir = Path(landing_dir)
    shop = _Shop(random.Random(seed), start, customers)
    rows_per_table = dict.fromkeys(FILE_FORMATS, 0)
    files: list[str] = []
    total_bytes = 0
    for offset in tqdm(range(days), desc="demo data", unit="day", disable=not progress):
        day = start + timedelta(days=offset)
        batch = shop.simulate_day(day)
        for table, (system, columns) in contract.items():
            key = landing_key(system, day, table)
            path = landing_dir / key
            path.parent.mkdir(parents=True, exist_ok=True)
            rows = batch[table]
            fmt = FILE_FORMATS[table]
            if fmt == "csv":
                _write_bytes(path, render_csv(list(columns), rows))
            elif fmt == "jsonl":
                _write_bytes(path, render_jsonl(list(columns), rows))
            else:
                write_parquet(path, columns, rows)
            files.append(key)
            rows_per_table[table] += len(rows)
            total_bytes += path.stat().st_size
            logger.debug("wrote %s (%d rows)", key, len(rows))

    summary = {
        "landing_dir": str(landing_dir),
        "seed": seed,
        "first_day": start.isoformat(),
        "last_day": (start + timedelta(days=days - 1)).isoformat(),
        "files_written": len(files),
        "bytes_written": total_bytes,
        "rows": rows_per_table,
        "files": files,
    }
    logger.info(
        "demo data: %d files, %s in %s (%s to %s)",
        len(files),
        ", ".join(f"{n} {t}" for t, n in rows_per_table.items()),
        landing_dir,
        summary["first_day"],
        summary["last_day"],
    )
    return summary


def _holds_files(directory: Path) -> bool:
    return directory.is_dir() and any(p.is_file() for p in directory.rglob("*"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.demo_data",
        description="Write deterministic Tidewater Outfitters demo exports into a landing directory.",
    )
    parser.add_argument("--landing", type=Path, required=True, help="landing directory to write into")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS, help=f"daily exports (default: {DEFAULT_DAYS})")
    parser.add_argument(
        "--customers", type=int, default=DEFAULT_CUSTOMERS, help=f"day-1 customers (default: {DEFAULT_CUSTOMERS})"
    )
    parser.add_argument(
        "--start", type=date.fromisoformat, default=None, help="first export day, YYYY-MM-DD (default: end today)"
    )
    parser.add_argument("--if-absent", action="store_true", help="do nothing if the landing dir holds files")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--first-day", action="store_true", help="only print the earliest landing day found in the landing dir"
    )
    args = parser.parse_args(argv)
    if args.first_day:
        first = first_landing_day(args.landing)
        print(first.isoformat() if first else "")  # noqa: T201 - the command's output, read by the Makefile
        return 0

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.if_absent and _holds_files(args.landing):
        logger.info("%s already holds files; leaving it as it is (--if-absent)", args.landing)
        return 0
    generate(
        args.landing,
        seed=args.seed,
        days=args.days,
        customers=args.customers,
        start=args.start,
        progress=not args.no_progress,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
