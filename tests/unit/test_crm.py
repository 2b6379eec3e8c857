from datetime import date, datetime
from decimal import Decimal

import pytest

from pipeline.activation.crm import batched, to_property, upsert_inputs


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ""),
        (True, "true"),
        (False, "false"),
        (Decimal("1234.50"), "1234.50"),
        (datetime(2026, 11, 3, 9, 5, 1, 999), "2026-11-03T09:05:01"),
        (date(2026, 11, 3), "2026-11-03"),
        (42, "42"),
        ("x", "x"),
    ],
)
def test_property_values_are_hubspot_strings(value, expected):
    assert to_property(value) == expected


def test_upsert_inputs_shape():
    rows = [{"customer_id": 7, "email": "a@example.com", "lifetime_value": Decimal("10.00"), "vip": None}]
    fields = {"email": "email", "lifetime_value": "ltv", "vip": "vip"}
    assert list(upsert_inputs(rows, "customer_id", fields, "ext_id")) == [
        {"idProperty": "ext_id", "id": "7", "properties": {"email": "a@example.com", "ltv": "10.00", "vip": ""}}
    ]


def test_batches_never_exceed_the_limit():
    sizes = [len(b) for b in batched(range(250), 100)]
    assert sizes == [100, 100, 50]
    assert list(batched([], 100)) == []
    with pytest.raises(ValueError):
        list(batched(range(3), 101))
