import json

import duckdb
import pytest

from pipeline.activation import shape
from pipeline.activation.destinations.crm_contacts import MAX_BATCH, CrmDestination
from pipeline.activation.destinations.webhook import WebhookDestination
from pipeline.activation.syncs import SyncSpec


def spec(fields):
    return SyncSpec("s", "", "m", "crm_contacts", "customer_id", "upsert", fields)


def shaped(destination, conn, relation="m"):
    types = shape.column_types(conn, relation, destination.spec.columns)
    return [
        r[0] for r in conn.execute(f"SELECT {destination.record_sql(types)} FROM {relation} m ORDER BY 1").fetchall()
    ]


@pytest.mark.parametrize(
    ("sql_value", "expected"),
    [
        ("NULL::VARCHAR", ""),
        ("true", "true"),
        ("false", "false"),
        ("1234.50::DECIMAL(18, 2)", "1234.50"),
        ("TIMESTAMP '2026-11-03 09:05:01.000999'", "2026-11-03T09:05:01"),
        ("TIMESTAMPTZ '2026-11-03 09:05:01+02'", "2026-11-03T07:05:01+00:00"),
        ("DATE '2026-11-03'", "2026-11-03"),
        ("42", "42"),
        ("'x'", "x"),
    ],
)
def test_property_values_are_hubspot_strings(sql_value, expected):
    with duckdb.connect() as conn:
        conn.execute(f"CREATE TABLE m AS SELECT 7 AS customer_id, {sql_value} AS v")
        [record] = shaped(CrmDestination(None, None, spec({"v": "prop"}), "ext_id"), conn)
    assert json.loads(record) == {"idProperty": "ext_id", "id": "7", "properties": {"prop": expected}}


def test_webhook_records_keep_json_types_and_stringify_decimals_and_times():
    with duckdb.connect() as conn:
        conn.execute(
            "CREATE TABLE m AS SELECT 7 AS customer_id, 'a\"b' AS name, 2.50::DECIMAL(6, 2) AS value, true AS vip,"
            " NULL::INT AS n, TIMESTAMP '2026-11-03 09:05:01' AS at"
        )
        fields = {"name": "name", "value": "value", "vip": "vip", "n": "n", "at": "at"}
        [record] = shaped(WebhookDestination(None, None, spec(fields), "/x", ["s"]), conn)
    assert json.loads(record) == {
        "customer_id": 7,
        "name": 'a"b',
        "value": "2.50",
        "vip": True,
        "n": None,
        "at": "2026-11-03T09:05:01",
    }


@pytest.mark.parametrize("size", [0, MAX_BATCH + 1])
def test_a_crm_batch_never_exceeds_hubspots_limit(size):
    with pytest.raises(ValueError, match=r"CRM batch size must be 1\.\.100 \(HubSpot's limit\), got"):
        CrmDestination(None, None, spec({"v": "prop"}), "ext_id", batch_size=size)
