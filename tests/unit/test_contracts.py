import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devstack.demo_data import load_contract_columns
from pipeline.core.config_files import ConfigFileError
from pipeline.ingestion.contracts import LINEAGE_COLUMNS, TABLE_KEYS, load_contracts

VALID = """\
systems:
  shop:
    owner: team:shop
    tables:
      orders:
        file: orders
        primary_key: [order_id]
        extra_columns: ignore
        columns:
          order_id: BIGINT
          paid: BOOLEAN
          note: {type: VARCHAR, required: false}
"""
#: plain words YAML 1.1 reads as booleans or null, not as text keys
YAML_WORDS = ("yes", "no", "on", "off", "true", "false", "null")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "contracts.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(tmp_path: Path, text: str) -> list[tuple[int, str]]:
    with pytest.raises(ConfigFileError) as info:
        load_contracts(write(tmp_path, text))
    assert str(info.value).startswith(("A problem in", f"{len(info.value.problems)} problems in"))
    return info.value.problems


def test_shipped_contracts_are_valid():
    tables = {t.table: t for t in load_contracts()}
    assert set(tables) == {"customers", "products", "orders", "order_items", "payments"}
    assert tables["payments"].system == "billing"
    assert tables["orders"].primary_key == ("order_id",)
    assert list(tables["orders"].all_columns())[-3:] == list(LINEAGE_COLUMNS)
    assert tables["orders"].asset_key == ["raw", "orders"]


def test_a_valid_file_with_every_form(tmp_path):
    [orders] = load_contracts(write(tmp_path, VALID))
    assert orders.columns == {"order_id": "BIGINT", "paid": "BOOLEAN", "note": "VARCHAR"}
    assert orders.optional == frozenset({"note"}) and orders.owner == "team:shop"
    assert orders.required_columns == ["order_id", "paid"]


def test_demo_data_reads_the_contracts_through_the_loader(tmp_path):
    """A `{type: ..., required: false}` column is a type to the demo generator too, not a dict."""
    assert load_contract_columns(write(tmp_path, VALID))["orders"] == (
        "shop",
        {"order_id": "BIGINT", "paid": "BOOLEAN", "note": "VARCHAR"},
    )


@pytest.mark.parametrize(
    ("old", "new", "line", "message"),
    [
        ("paid: BOOLEAN", "paid: BOOLEN", 11, "shop.orders.paid: 'BOOLEN' is not a DuckDB type"),
        ("paid: BOOLEAN", "paid: BOOLEN", 11, "did you mean BOOLEAN?"),
        ("paid: BOOLEAN", "paid: DECIMAL(10,2", 11, "is not a DuckDB type"),
        ("paid: BOOLEAN", "paid: INT, x INT", 11, "is not a DuckDB type"),
        ("paid: BOOLEAN", "paid: {type: DECIMAL(10,2)}", 11, "quote the type"),
        ("paid: BOOLEAN", "paid: 12", 11, "the type must be a DuckDB type such as BIGINT, not 12"),
        ("paid: BOOLEAN", "paid:", 11, "the type must be a DuckDB type such as BIGINT, not nothing"),
        ("paid: BOOLEAN", "_loaded_at: TIMESTAMP", 11, "column _loaded_at is added by the loader itself"),
        ("primary_key: [order_id]", "primery_key: [order_id]", 7, "unknown key 'primery_key' (did you mean"),
        ("primary_key: [order_id]", "primery_key: [order_id]", 5, "`primary_key` must list the key's columns"),
        ("primary_key: [order_id]", "primary_key: [order_id, id]", 7, "primary key column 'id' is not among"),
        ("primary_key: [order_id]", "primary_key: [note]", 7, "'note' cannot be `required: false`"),
        ("primary_key: [order_id]", "primary_key: [order_id, order_id]", 7, "names 'order_id' twice"),
        ("primary_key: [order_id]", "primary_key: []", 7, "`primary_key` must list the key's columns"),
        ("extra_columns: ignore", "extra_columns: drop", 8, "`extra_columns` is 'drop'; expected one of ignore"),
        ("extra_columns: ignore", "delimiter: '\"'", 8, "`delimiter` '\"' must be 1 to 4 characters"),
        ("file: orders", "file: orders.csv", 6, "`file` 'orders.csv' must be letters, digits, _ or -"),
        ("file: orders", "file: 7", 6, "`file` must be a non-empty text, not the number 7"),
        ("owner: team:shop", "ownr: team:shop", 3, "shop: unknown key 'ownr' (did you mean 'owner'?)"),
        ("owner: team:shop", "owner: [a, b]", 3, "`owner` must be a non-empty text, not a list"),
        ("  shop:", "  shop floor:", 2, "system shop floor: the name must be letters, digits, _ or -"),
        ("      orders:", "      raw-orders:", 5, "the name must be a letter or _, then letters, digits or _"),
        ("note: {type: VARCHAR, required: false}", "note: {type: VARCHAR, requred: false}", 12, "'requred'"),
        ("note: {type: VARCHAR, required: false}", "note: {type: VARCHAR, required: 'no'}", 12, "true or false"),
        ("systems:", "system:", 1, "unknown key 'system' (did you mean 'systems'?)"),
        ("systems:", "system:", 1, "`systems` is missing or empty"),
    ],
)
def test_each_problem_names_its_line(tmp_path, old, new, line, message):
    assert old in VALID
    found = problems_of(tmp_path, VALID.replace(old, new, 1))
    assert any(at == line and message in text for at, text in found), found


def test_a_list_where_a_mapping_belongs(tmp_path):
    found = problems_of(tmp_path, "systems:\n  shop:\n    tables: [orders, items]\n")
    assert found == [(3, "system shop: `tables` must be a mapping of `key: value` lines, not a list")]


def test_every_problem_is_reported_at_once_in_line_order(tmp_path):
    text = VALID.replace("BOOLEAN", "BOOLEN").replace("extra_columns: ignore", "extra_columns: drop")
    text += "  billing:\n    tables:\n      orders:\n        primary_key: id\n        columns: {id: VARCHAR}\n"
    found = problems_of(tmp_path, text)
    assert [line for line, _ in found] == [8, 11, 15]
    assert "raw table orders is declared by system shop too" in found[2][1]


def test_two_tables_of_one_system_cannot_read_one_file(tmp_path):
    text = VALID + "      orders_again:\n        file: orders\n        primary_key: [id]\n        columns: {id: INT}\n"
    [(line, message)] = problems_of(tmp_path, text)
    assert line == 13 and "reads file 'orders', as orders does" in message


def test_syntax_errors_and_repeated_keys_have_their_line(tmp_path):
    [(line, message)] = problems_of(tmp_path, VALID.replace("paid: BOOLEAN", "paid: [BOOLEAN"))
    assert line in (11, 12, 13) and message.startswith("not valid YAML")
    [(line, message)] = problems_of(tmp_path, VALID.replace("paid: BOOLEAN", "order_id: VARCHAR"))
    assert (line, message) == (11, "key 'order_id' repeats the one on line 10")


def test_the_message_names_the_file_and_what_to_do(tmp_path):
    with pytest.raises(ConfigFileError) as info:
        load_contracts(write(tmp_path, VALID.replace("BOOLEAN", "BOOLEN")))
    first, second = str(info.value).splitlines()
    assert first == f"A problem in {tmp_path / 'contracts.yaml'} (fix the file and reload the code location; the" + (
        " README's ingestion section describes each key):"
    )
    assert second.startswith(f"  {tmp_path / 'contracts.yaml'}:11: shop.orders.paid")


DUCKDB_TYPES = ["BIGINT", "INT8", "INTEGER", "int", "HUGEINT", "UBIGINT", "SMALLINT", "TINYINT", "VARCHAR", "TEXT"]
DUCKDB_TYPES += ["DATE", "TIMESTAMP", "TIMESTAMPTZ", "DOUBLE", "DECIMAL(18,4)", "BOOLEAN", "UUID", "VARCHAR[]"]


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=30, deadline=None)
@given(st.sampled_from(DUCKDB_TYPES), st.booleans())
def test_any_duckdb_type_in_any_case_is_accepted(tmp_path, type_, lower):
    declared = type_.lower() if lower else type_
    [orders] = load_contracts(write(tmp_path, VALID.replace("paid: BOOLEAN", f"paid: '{declared}'")))
    assert orders.columns["paid"] == declared


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=30, deadline=None)
@given(st.from_regex(r"[a-z_]{3,12}", fullmatch=True).filter(lambda k: k not in TABLE_KEYS + YAML_WORDS))
def test_any_unknown_table_key_is_reported_on_its_line(tmp_path, key):
    found = problems_of(tmp_path, VALID.replace("        file: orders\n", f"        file: orders\n        {key}: x\n"))
    assert any(line == 7 and f"unknown key {key!r}" in message for line, message in found), found
