import pytest

from pipeline.ingestion.contracts import LINEAGE_COLUMNS, load_contracts


def test_shipped_contracts_are_valid():
    tables = {t.table: t for t in load_contracts()}
    assert set(tables) == {"customers", "products", "orders", "order_items", "payments"}
    assert tables["payments"].system == "billing"
    assert tables["orders"].primary_key == ("order_id",)
    assert list(tables["orders"].all_columns())[-3:] == list(LINEAGE_COLUMNS)
    assert tables["orders"].asset_key == ["raw", "orders"]


def test_primary_key_must_be_a_declared_column(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("systems: {s: {tables: {t: {primary_key: [nope], columns: {id: BIGINT}}}}}")
    with pytest.raises(ValueError, match="nope"):
        load_contracts(path)


def test_table_names_are_unique_across_systems(tmp_path):
    path = tmp_path / "c.yaml"
    spec = "{tables: {t: {primary_key: [id], columns: {id: BIGINT}}}}"
    path.write_text(f"systems: {{a: {spec}, b: {spec}}}")
    with pytest.raises(ValueError, match="repeated"):
        load_contracts(path)
