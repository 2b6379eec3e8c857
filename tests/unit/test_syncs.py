import logging
import textwrap
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.activation.destinations.webhook import path_of
from pipeline.activation.syncs import ResolvedSync, load_syncs, relation_problem, resolve_syncs, sync_keys
from pipeline.core.config_files import ConfigFileError

VALID = """\
dbt_project: shop
syncs:
  contacts:
    description: Customers to the CRM.
    model: dim_customers
    owner: team:crm
    destination: crm_contacts
    primary_key: customer_id
    mode: upsert
    max_change_share: 0.5
    fields:
      email: email
      first_name: firstname
  segments:
    model: segments
    destination: webhook
    path: /segments
    primary_key: segment
    mode: mirror
    max_change_share: 1
    fields: {size: customers}
"""
#: plain words YAML 1.1 reads as booleans or null, not as text keys
YAML_WORDS = ("yes", "no", "on", "off", "true", "false", "null")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "syncs.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(tmp_path: Path, text: str) -> list[tuple[int, str]]:
    with pytest.raises(ConfigFileError) as info:
        load_syncs(write(tmp_path, text))
    return info.value.problems


def manifest(project: str, *models: str) -> dict:
    nodes = {
        f"model.{project}.{m}": {
            "name": m,
            "unique_id": f"model.{project}.{m}",
            "resource_type": "model",
            "relation_name": f'"db"."main"."{m}"',
        }
        for m in models
    }
    return {"metadata": {"project_name": project}, "nodes": nodes, "parent_map": {}}


def key_of(unique_id: str) -> dg.AssetKey:
    return dg.AssetKey(unique_id.split(".")[-1])


def test_the_shipped_syncs_are_valid_and_name_their_project():
    syncs = {s.name: s for s in load_syncs()}
    assert set(syncs) == {"crm_contacts_sync", "segment_summary_webhook"}
    assert {s.dbt_project for s in syncs.values()} == {"tidewater"}
    assert path_of(syncs["segment_summary_webhook"]) == "/segments"


def test_a_valid_file(tmp_path):
    contacts, segments = load_syncs(write(tmp_path, VALID))
    assert (contacts.model, contacts.mode, contacts.max_change_share, contacts.owner) == (
        "dim_customers",
        "upsert",
        0.5,
        "team:crm",
    )
    assert contacts.columns == ["customer_id", "email", "first_name"]
    assert (contacts.model_line, segments.model_line) == (5, 15)
    assert (segments.options, segments.max_change_share) == ({"path": "/segments"}, 1.0)
    assert contacts.options == {}


@pytest.mark.parametrize(
    ("old", "new", "line", "message"),
    [
        ("destination: crm_contacts", "destination: crm", 7, "destination 'crm' is not one of crm_contacts, webhook"),
        ("destination: crm_contacts", "destnation: crm_contacts", 7, "unknown key 'destnation' (did you mean"),
        ("destination: crm_contacts", "destnation: crm_contacts", 3, "sync contacts: `destination` is required"),
        ("mode: upsert", "mode: upsrt", 9, "mode 'upsrt' is not one of upsert, mirror"),
        ("max_change_share: 0.5", "max_change_share: 50%", 10, "max_change_share '50%' must be a number above 0"),
        ("max_change_share: 0.5", "max_change_share: 5e1", 10, "max_change_share 50.0 must be a number above 0"),
        ("max_change_share: 0.5", "max_change_share: 0", 10, "must be a number above 0, at most 1"),
        ("max_change_share: 0.5", "max_change_share: true", 10, "must be a number above 0, at most 1"),
        ("primary_key: customer_id", "primary_key: [customer_id]", 8, "`primary_key` must be a non-empty text"),
        ("model: dim_customers", "model:", 5, "`model` is required"),
        ("owner: team:crm", "owner: 7", 6, "`owner` must be a non-empty text, not the number 7"),
        ("      first_name: firstname", "      first_name: email", 13, "first_name and email both write property"),
        ("      first_name: firstname", "      first_name: [a]", 13, "field 'first_name' must map a column"),
        ("    fields:\n      email: email\n      first_name: firstname\n", "", 3, "`fields` is missing or empty"),
        ("    mode: upsert\n", "    mode: upsert\n    path: /c\n", 10, "`path` applies to webhook destinations only"),
        ("path: /segments", "path: segments", 17, "path 'segments' must start with /"),
        ("path: /segments", "path: /seg ments", 17, "must start with / and hold only"),
        ("  contacts:", "  crm-contacts:", 3, "the name must be a letter or _"),
        ("dbt_project: shop", "dbt_projct: shop", 1, "unknown key 'dbt_projct' (did you mean 'dbt_project'?)"),
        ("dbt_project: shop", "dbt_projct: shop", 1, "`dbt_project` is required: the `name` in the dbt_project.yml"),
        ("destination: webhook", "destination: crm_contacts", 14, "contacts writes crm/contacts already"),
        ("      email: email\n", "      email: email\n      email: e2\n", 13, "key 'email' repeats the one on line 12"),
    ],
)
def test_each_problem_names_its_line(tmp_path, old, new, line, message):
    assert old in VALID
    found = problems_of(tmp_path, VALID.replace(old, new, 1))
    assert any(at == line and message in text for at, text in found), found


def test_two_webhook_syncs_cannot_post_to_one_path(tmp_path):
    text = VALID + "  segments_too:\n    model: m\n    destination: webhook\n    path: /segments\n"
    text += "    primary_key: k\n    fields: {a: b}\n"
    [(line, message)] = problems_of(tmp_path, text)
    assert line == 22 and "segments writes webhook/segments already" in message


def test_every_problem_at_once_with_the_file_and_what_to_do(tmp_path):
    path = write(tmp_path, VALID.replace("mode: upsert", "mode: upsrt").replace("path: /segments", "path: x"))
    with pytest.raises(ConfigFileError) as info:
        load_syncs(path)
    lines = str(info.value).splitlines()
    assert lines[0] == f"2 problems in {path} (fix the file and reload the code location; the comments at its top" + (
        " describe each key):"
    )
    assert [line.split(": ")[0] for line in lines[1:]] == [f"  {path}:9", f"  {path}:17"]


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=30, deadline=None)
@given(st.from_regex(r"[a-z_]{3,16}", fullmatch=True).filter(lambda k: k not in sync_keys() + YAML_WORDS))
def test_any_unknown_sync_key_is_reported_on_its_line(tmp_path, key):
    found = problems_of(tmp_path, VALID.replace("    owner: team:crm\n", f"    owner: team:crm\n    {key}: 1\n"))
    assert any(line == 7 and f"unknown key {key!r}" in message for line, message in found), found


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=30, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_max_change_share_is_a_share(tmp_path, share):
    text = VALID.replace("max_change_share: 0.5", f"max_change_share: {share!r}".replace("inf", ".inf"))
    text = text.replace("nan", ".nan")
    if 0 < share <= 1:  # 1e-05 too, which YAML 1.1 reads as text
        assert load_syncs(write(tmp_path, text))[0].max_change_share == share
    else:
        assert any(line == 10 for line, _ in problems_of(tmp_path, text))


def test_a_missing_model_of_this_project_stops_the_load_at_its_line(tmp_path):
    specs = load_syncs(write(tmp_path, VALID))
    with pytest.raises(ConfigFileError) as info:
        resolve_syncs(specs, manifest("shop", "dim_customer", "orders"), key_of)
    assert info.value.problems == [
        (5, "sync contacts reads model 'dim_customers', which dbt project 'shop' lacks (did you mean dim_customer?)"),
        (
            15,
            "sync segments reads model 'segments', which dbt project 'shop' lacks (build or rename the model, or"
            " remove the sync)",
        ),
    ]


def test_syncs_written_for_another_project_are_left_out_with_a_warning(tmp_path, caplog):
    specs = load_syncs(write(tmp_path, VALID))
    with caplog.at_level(logging.WARNING, logger="pipeline.activation.syncs"):
        assert resolve_syncs(specs, manifest("harbor_ledger", "ledger"), key_of) == []
    [record] = caplog.records
    assert "is written for dbt project 'shop' and the loaded one is 'harbor_ledger'" in record.getMessage()
    assert "its syncs contacts, segments are left out" in record.getMessage()
    assert "set `dbt_project: harbor_ledger` there" in record.getMessage()


def test_syncs_of_this_project_resolve_to_their_model(tmp_path):
    contacts, segments = resolve_syncs(
        load_syncs(write(tmp_path, VALID)), manifest("shop", "dim_customers", "segments"), key_of
    )
    assert (contacts.model_key, contacts.relation) == (dg.AssetKey("dim_customers"), '"db"."main"."dim_customers"')
    assert segments.model_key == dg.AssetKey("segments")


@pytest.fixture
def warehouse():
    with duckdb.connect(":memory:") as conn:
        yield conn


def test_a_model_never_built_is_named_with_its_relation_and_what_to_do(tmp_path, warehouse):
    [spec, _] = load_syncs(write(tmp_path, VALID))
    sync = ResolvedSync(spec, dg.AssetKey("dim_customers"), "main.dim_customers")
    problem = relation_problem(warehouse, sync, "/data/warehouse.duckdb")
    assert problem == (
        "Sync contacts reads dbt model dim_customers, whose table main.dim_customers does not exist in the warehouse"
        " /data/warehouse.duckdb: the model has not been built there yet. Materialize dim_customers (with its"
        " upstream assets, or Materialize all), then this sync."
    )


def test_a_model_lacking_a_column_the_sync_reads(tmp_path, warehouse):
    [spec, _] = load_syncs(write(tmp_path, VALID))
    sync = ResolvedSync(spec, dg.AssetKey("dim_customers"), "main.dim_customers")
    warehouse.execute("CREATE TABLE dim_customers (Customer_ID BIGINT, email VARCHAR)")
    problem = relation_problem(warehouse, sync, "w.duckdb")
    assert problem.startswith("Sync contacts reads column(s) first_name of dim_customers (main.dim_customers), which")
    assert "(it has Customer_ID, email)" in problem
    warehouse.execute("ALTER TABLE dim_customers ADD COLUMN first_name VARCHAR")
    assert relation_problem(warehouse, sync, "w.duckdb") is None


def test_a_share_in_exponent_form_is_a_number(tmp_path):
    """YAML 1.1 reads `1e-3` (no '.') as text; it is still the number a user wrote."""
    [contacts, _] = load_syncs(write(tmp_path, VALID.replace("max_change_share: 0.5", "max_change_share: 1e-3")))
    assert contacts.max_change_share == 0.001
