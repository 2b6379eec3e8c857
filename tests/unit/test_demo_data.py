"""The demo data generator: deterministic, laid out like the landing store, and internally consistent."""

from __future__ import annotations

import csv
import json
import logging
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from devstack import demo_data

START = date(2026, 11, 1)
DAYS = 10
CUSTOMERS = 60


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _read_parquet(path: Path) -> list[dict]:
    with duckdb.connect() as con:
        cursor = con.execute(f"SELECT * FROM read_parquet('{path.as_posix()}')")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _days(landing: Path, system: str, table: str) -> list[tuple[date, Path]]:
    ext = demo_data.FILE_FORMATS[table]
    return sorted((date.fromisoformat(p.parent.name), p) for p in landing.glob(f"{system}/*/{table}.{ext}"))


def _rows_by_day(landing: Path, system: str, table: str) -> list[tuple[date, list[dict]]]:
    reader = {"csv": _read_csv, "jsonl": _read_jsonl, "parquet": _read_parquet}[demo_data.FILE_FORMATS[table]]
    return [(day, reader(path)) for day, path in _days(landing, system, table)]


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("landing")
    demo_data.generate(directory, seed=7, days=DAYS, customers=CUSTOMERS, start=START, progress=False)
    return directory


@pytest.fixture(scope="module")
def summary(tmp_path_factory: pytest.TempPathFactory) -> dict:
    directory = tmp_path_factory.mktemp("summary")
    return demo_data.generate(directory, seed=7, days=DAYS, customers=CUSTOMERS, start=START, progress=False)


def _file_bytes(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


# -- determinism ---------------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes(tmp_path: Path, landing: Path) -> None:
    demo_data.generate(tmp_path, seed=7, days=DAYS, customers=CUSTOMERS, start=START, progress=False)
    again, first = _file_bytes(tmp_path), _file_bytes(landing)
    assert again.keys() == first.keys()
    for key in first:
        if key.endswith(".parquet"):
            assert _read_parquet(tmp_path / key) == _read_parquet(landing / key), key
        else:
            assert again[key] == first[key], key


def test_other_seed_gives_other_data(tmp_path: Path, landing: Path) -> None:
    demo_data.generate(tmp_path, seed=8, days=2, customers=CUSTOMERS, start=START, progress=False)
    key = f"shop/{START}/customers.csv"
    assert (tmp_path / key).read_bytes() != (landing / key).read_bytes()


def test_more_days_keep_the_earlier_days_unchanged(tmp_path: Path, landing: Path) -> None:
    """A demo 'gets new data' by generating more days: the days it already had must not move."""
    demo_data.generate(tmp_path, seed=7, days=DAYS + 2, customers=CUSTOMERS, start=START, progress=False)
    longer, shorter = _file_bytes(tmp_path), _file_bytes(landing)
    assert len(longer) == len(shorter) + 2 * len(demo_data.FILE_FORMATS)
    for key, payload in shorter.items():
        if not key.endswith(".parquet"):
            assert longer[key] == payload, key


def test_global_random_state_is_untouched(tmp_path: Path) -> None:
    import random

    random.seed(123)
    expected = random.random()
    random.seed(123)
    demo_data.generate(tmp_path, seed=1, days=2, customers=10, start=START, progress=False)
    assert random.random() == expected


# -- layout --------------------------------------------------------------------------------------------------------


def test_layout_one_file_per_table_per_day(landing: Path, summary: dict) -> None:
    expected = {
        f"{system}/{date.fromordinal(START.toordinal() + offset).isoformat()}/{table}.{ext}"
        for offset in range(DAYS)
        for table, ext, system in [
            ("customers", "csv", "shop"),
            ("products", "csv", "shop"),
            ("orders", "jsonl", "shop"),
            ("order_items", "csv", "shop"),
            ("payments", "parquet", "billing"),
        ]
    }
    assert set(_file_bytes(landing)) == expected
    assert summary["files_written"] == len(expected)
    assert set(summary["files"]) == expected
    assert summary["first_day"] == "2026-11-01"
    assert summary["last_day"] == "2026-11-10"


def test_no_temporary_files_left_behind(landing: Path) -> None:
    assert not [p for p in landing.rglob(".*")]


def test_summary_counts_rows(landing: Path, summary: dict) -> None:
    for table in demo_data.FILE_FORMATS:
        system = "billing" if table == "payments" else "shop"
        total = sum(len(rows) for _, rows in _rows_by_day(landing, system, table))
        assert summary["rows"][table] == total, table
        assert total > 0, table


def test_columns_follow_the_contract(landing: Path) -> None:
    contract = demo_data.load_contract_columns()
    for table, (system, columns) in contract.items():
        _, path = _days(landing, system, table)[0]
        if path.suffix == ".csv":
            header = path.read_text(encoding="utf-8").splitlines()[0].split(",")
        elif path.suffix == ".jsonl":
            header = list(_read_jsonl(path)[0])
        else:
            header = list(_read_parquet(path)[0])
        assert header == list(columns), table


def test_every_value_casts_to_its_contract_type(landing: Path) -> None:
    contract = demo_data.load_contract_columns()
    with duckdb.connect() as con:
        for table, (system, columns) in contract.items():
            glob = (landing / system / "*" / f"{table}.{demo_data.FILE_FORMATS[table]}").as_posix()
            as_text = "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in columns) + "}"
            source = {
                "csv": f"read_csv('{glob}', header=true, auto_detect=false, columns={as_text})",
                "jsonl": f"read_json('{glob}', format='newline_delimited', columns={as_text})",
                "parquet": f"read_parquet('{glob}')",
            }[demo_data.FILE_FORMATS[table]]
            casts = ", ".join(f"CAST({c} AS {t}) AS {c}" for c, t in columns.items())
            nulls = " OR ".join(f"{c} IS NULL" for c in columns)
            rows, null_rows = con.execute(
                f"SELECT count(*), count(*) FILTER (WHERE {nulls}) FROM (SELECT {casts} FROM {source})"
            ).fetchall()[0]
            assert rows > 0, table
            assert null_rows == 0, table


def test_csv_is_utf8_with_header_and_iso_timestamps(landing: Path) -> None:
    rows = _read_csv(landing / f"shop/{START}/customers.csv")
    for row in rows:
        datetime.strptime(row["created_at"], "%Y-%m-%d %H:%M:%S")
        datetime.strptime(row["updated_at"], "%Y-%m-%d %H:%M:%S")
        assert row["marketing_opt_in"] in {"true", "false"}


# -- content -------------------------------------------------------------------------------------------------------


def test_keys_unique_within_each_file(landing: Path) -> None:
    keys = {"customers": "customer_id", "products": "product_id", "orders": "order_id",
            "order_items": "order_item_id", "payments": "payment_id"}  # fmt: skip
    for table, key in keys.items():
        system = "billing" if table == "payments" else "shop"
        for day, rows in _rows_by_day(landing, system, table):
            values = [row[key] for row in rows]
            assert len(values) == len(set(values)), (table, day)


def test_enumerations(landing: Path) -> None:
    countries = set(demo_data.COUNTRIES)
    for _, rows in _rows_by_day(landing, "shop", "customers"):
        for row in rows:
            assert row["signup_channel"] in demo_data.SIGNUP_CHANNELS
            assert row["country_code"] in countries
    for _, rows in _rows_by_day(landing, "shop", "products"):
        assert {row["category"] for row in rows} <= set(demo_data.CATEGORIES)
    for _, rows in _rows_by_day(landing, "shop", "orders"):
        for row in rows:
            assert row["order_status"] in demo_data.ORDER_STATUSES
            assert row["sales_channel"] in demo_data.SALES_CHANNELS
            assert row["shipping_country"] in countries
    for _, rows in _rows_by_day(landing, "billing", "payments"):
        for row in rows:
            assert row["payment_method"] in demo_data.PAYMENT_METHODS
            assert row["payment_status"] in demo_data.PAYMENT_STATUSES
            assert row["payment_id"].startswith("pay_") and len(row["payment_id"]) >= 10


def test_day_one_holds_the_full_catalogue(landing: Path) -> None:
    (_, first), *later = _rows_by_day(landing, "shop", "products")
    assert len(first) == len(demo_data.CATEGORIES) * demo_data.PRODUCTS_PER_CATEGORY
    assert {row["category"] for row in first} == set(demo_data.CATEGORIES)
    later_ids = {row["product_id"] for _, rows in later for row in rows}
    assert later_ids <= {row["product_id"] for row in first}


def test_customers_change_email_on_a_later_day(landing: Path) -> None:
    versions: dict[str, list[tuple[date, dict]]] = defaultdict(list)
    for day, rows in _rows_by_day(landing, "shop", "customers"):
        for row in rows:
            versions[row["customer_id"]].append((day, row))
    changed = [v for v in versions.values() if len({row["email"] for _, row in v}) > 1]
    assert changed
    for history in changed:
        assert [row["updated_at"] for _, row in history] == sorted(row["updated_at"] for _, row in history)
    # an email belongs to one customer at any point in time
    for _, rows in _rows_by_day(landing, "shop", "customers"):
        emails = [row["email"] for row in rows]
        assert len(emails) == len(set(emails))


def test_orders_progress_status_on_later_days(landing: Path) -> None:
    versions: dict[int, list[tuple[date, dict]]] = defaultdict(list)
    for day, rows in _rows_by_day(landing, "shop", "orders"):
        for row in rows:
            versions[row["order_id"]].append((day, row))
    progressed = [v for v in versions.values() if len({row["order_status"] for _, row in v}) > 1]
    assert progressed
    allowed_next = {
        "placed": {"paid", "cancelled"},
        "paid": {"shipped", "cancelled"},
        "shipped": {"delivered"},
        "delivered": {"returned"},
    }
    for history in versions.values():
        statuses = [row["order_status"] for _, row in history]
        assert statuses[0] in {"placed", "paid"}
        for before, after in zip(statuses, statuses[1:], strict=False):
            assert after in allowed_next[before], statuses
        stamps = [row["updated_at"] for _, row in history]
        assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
        assert all(row["ordered_at"] == history[0][1]["ordered_at"] for _, row in history)
    seen = {row["order_status"] for history in versions.values() for _, row in history}
    assert seen == set(demo_data.ORDER_STATUSES)


def test_referential_integrity(landing: Path) -> None:
    customers_by_day: dict[date, set[str]] = {}
    known: set[str] = set()
    created: dict[str, str] = {}
    for day, rows in _rows_by_day(landing, "shop", "customers"):
        for row in rows:
            known.add(row["customer_id"])
            created.setdefault(row["customer_id"], row["created_at"])
        customers_by_day[day] = set(known)
    products = {row["product_id"] for _, rows in _rows_by_day(landing, "shop", "products") for row in rows}

    order_day: dict[int, date] = {}
    for day, rows in _rows_by_day(landing, "shop", "orders"):
        for row in rows:
            assert str(row["customer_id"]) in customers_by_day[day]
            assert row["ordered_at"] >= created[str(row["customer_id"])]
            order_day.setdefault(row["order_id"], day)
    items_day: dict[int, date] = {}
    for day, rows in _rows_by_day(landing, "shop", "order_items"):
        for row in rows:
            assert row["product_id"] in products
            order_id = int(row["order_id"])
            assert order_day[order_id] == day, "items arrive with their order"
            items_day[order_id] = day
    assert set(items_day) == set(order_day), "every order has at least one item"
    for day, rows in _rows_by_day(landing, "billing", "payments"):
        for row in rows:
            assert order_day[row["order_id"]] <= day


def test_order_item_ids_unique_across_days(landing: Path) -> None:
    ids = [row["order_item_id"] for _, rows in _rows_by_day(landing, "shop", "order_items") for row in rows]
    assert len(ids) == len(set(ids))
    payment_ids = [row["payment_id"] for _, rows in _rows_by_day(landing, "billing", "payments") for row in rows]
    assert len(payment_ids) == len(set(payment_ids))


def test_payments_match_order_totals(landing: Path) -> None:
    totals: dict[int, Decimal] = defaultdict(Decimal)
    for _, rows in _rows_by_day(landing, "shop", "order_items"):
        for row in rows:
            totals[int(row["order_id"])] += demo_data.line_total(
                int(row["quantity"]), Decimal(row["unit_price"]), Decimal(row["discount_amount"])
            )
    latest_status = {}
    for _, rows in _rows_by_day(landing, "shop", "orders"):
        for row in rows:
            latest_status[row["order_id"]] = row["order_status"]

    net: dict[int, Decimal] = defaultdict(Decimal)
    statuses: dict[str, int] = defaultdict(int)
    for _, rows in _rows_by_day(landing, "billing", "payments"):
        for row in rows:
            statuses[row["payment_status"]] += 1
            assert row["amount"] == totals[row["order_id"]], "every attempt and refund is for the order total"
            if row["payment_status"] == "succeeded":
                net[row["order_id"]] += row["amount"]
            elif row["payment_status"] == "refunded":
                net[row["order_id"]] -= row["amount"]
    assert set(statuses) == set(demo_data.PAYMENT_STATUSES)
    for order_id, status in latest_status.items():
        expected = totals[order_id] if status in {"paid", "shipped", "delivered"} else Decimal("0")
        assert net[order_id] == expected, (order_id, status)


def test_failed_attempt_precedes_success(landing: Path) -> None:
    attempts: dict[int, list[tuple[datetime, str]]] = defaultdict(list)
    for _, rows in _rows_by_day(landing, "billing", "payments"):
        for row in rows:
            attempts[row["order_id"]].append((row["processed_at"], row["payment_status"]))
    retried = [a for a in attempts.values() if any(s == "failed" for _, s in a) and any(s == "succeeded" for _, s in a)]
    assert retried
    for history in retried:
        history.sort()
        first_success = next(i for i, (_, s) in enumerate(history) if s == "succeeded")
        assert any(s == "failed" for _, s in history[:first_success])


# -- CLI -----------------------------------------------------------------------------------------------------------


def test_cli_writes_then_skips_when_present(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    args = ["--landing", str(tmp_path), "--days", "2", "--customers", "10", "--seed", "3", "--no-progress",
            "--start", "2026-11-01"]  # fmt: skip
    assert demo_data.main(args) == 0
    written = _file_bytes(tmp_path)
    assert len(written) == 2 * len(demo_data.FILE_FORMATS)

    (tmp_path / "shop" / "2026-11-01" / "customers.csv").write_text("tampered", encoding="utf-8")
    with caplog.at_level(logging.INFO, logger="devstack.demo_data"):
        assert demo_data.main([*args, "--if-absent"]) == 0
    assert (tmp_path / "shop" / "2026-11-01" / "customers.csv").read_text(encoding="utf-8") == "tampered"
    assert "--if-absent" in caplog.text


def test_cli_start_option(tmp_path: Path) -> None:
    demo_data.main(["--landing", str(tmp_path), "--days", "1", "--customers", "5", "--start", "2027-01-31",
                    "--no-progress"])  # fmt: skip
    assert (tmp_path / "shop" / "2027-01-31" / "orders.jsonl").exists()


@pytest.mark.parametrize("kwargs", [{"days": 0}, {"customers": 0}])
def test_rejects_empty_sizes(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        demo_data.generate(tmp_path, progress=False, **kwargs)


@pytest.mark.parametrize(
    ("text", "slug"), [("Lefèvre", "lefevre"), ("O'Brien", "obrien"), ("de Vries", "devries"), ("Zoë", "zoe")]
)
def test_email_slug(text: str, slug: str) -> None:
    assert demo_data.email_slug(text) == slug


def test_make_email_embeds_the_id() -> None:
    assert demo_data.make_email("Sofía", "García", 42) == "sofia.garcia.42@example.com"
    assert demo_data.make_email("Sofía", "García", 42, variant=1) == "sgarcia.42@example.org"


def test_by_default_the_days_end_today_and_the_first_day_is_found_again(tmp_path: Path, capsys) -> None:
    """`make dev` writes the demo once and starts the raw partitions on its first day, read back from the folder."""
    assert demo_data.main(["--landing", str(tmp_path), "--days", "3", "--customers", "5", "--no-progress"]) == 0
    today = datetime.now(UTC).date()
    assert sorted(p.name for p in (tmp_path / "shop").iterdir()) == [
        (today - timedelta(days=d)).isoformat() for d in (2, 1, 0)
    ]
    capsys.readouterr()
    # Loaded files move to processed/ (and their folders may go): the first day is still found there.
    (tmp_path / "processed").mkdir()
    (tmp_path / "shop").rename(tmp_path / "processed" / "shop")
    assert demo_data.main(["--landing", str(tmp_path), "--first-day"]) == 0
    assert capsys.readouterr().out.strip() == (today - timedelta(days=2)).isoformat()
    assert demo_data.main(["--landing", str(tmp_path / "empty"), "--first-day"]) == 0
    assert capsys.readouterr().out.strip() == ""
