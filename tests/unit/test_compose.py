"""deploy/compose.yaml as devstack.compose reads it for the production test: Compose's interpolation rules, and
what the file promises (every secret from the environment, the code server alone with the data and settings)."""

import pytest

from devstack.compose import ComposeError, interpolate, services
from devstack.production import dockerignore_patterns, ignored

REQUIRED = {
    "DAGSTER_PG_PASSWORD": "pw",
    "CRM_URL": "https://crm.example",
    "CRM_TOKEN": "tok",
    "WEBHOOK_URL": "https://hooks.example",
    "WEBHOOK_SECRET": "whs",
}


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${A}", {"A": "1"}, "1"),
        ("$A/x", {"A": "1"}, "1/x"),
        ("${A:-d}", {}, "d"),
        ("${A:-d}", {"A": ""}, "d"),
        ("${A-d}", {"A": ""}, ""),
        ("${A-d}", {}, "d"),
        ("${A:?}", {"A": "v"}, "v"),
        ("$${A}", {"A": "1"}, "${A}"),
        ("${A}", {}, ""),
        ("pre-${A:-x}-${B}", {"B": "b"}, "pre-x-b"),
    ],
)
def test_interpolation_follows_compose(text, env, expected):
    assert interpolate(text, env) == expected


def test_a_required_variable_is_named_with_its_message():
    with pytest.raises(ComposeError, match="X is required: set X please"):
        interpolate("${X:?set X please}", {"X": ""}, where="here")
    assert interpolate("${X?unset only}", {"X": ""}) == ""


def test_every_secret_comes_from_the_environment():
    for name in REQUIRED:
        with pytest.raises(ComposeError, match=f"{name} is required"):
            services({k: v for k, v in REQUIRED.items() if k != name})
    found = services(REQUIRED)
    assert found["postgres"].environment["POSTGRES_PASSWORD"] == "pw"
    assert found["code-server"].environment["DAGSTER_PG_PASSWORD"] == "pw"
    assert found["code-server"].environment["CRM_TOKEN"] == "tok"


def test_the_code_server_alone_gets_the_pipelines_settings_and_env_file():
    found = services({**REQUIRED, "SLACK_WEBHOOK_URL": "https://hooks.example/x"})
    code_server = found["code-server"]
    assert code_server.container_env["SLACK_WEBHOOK_URL"] == "https://hooks.example/x"  # through env_file: .env
    assert code_server.container_env["DUCKDB_PATH"] == "/data/warehouse.duckdb"
    assert code_server.build_args == {"DUCKDB_PATH": "/data/warehouse.duckdb"}
    for name in ("webserver", "daemon"):
        assert "CRM_TOKEN" not in found[name].container_env and "DUCKDB_PATH" not in found[name].container_env
        assert found[name].environment["DAGSTER_CODE_SERVER_HOST"] == "code-server"
    assert found["webserver"].command[0] == "dagster-webserver" and found["daemon"].command[:2] == [
        "dagster-daemon",
        "run",
    ]
    assert code_server.command[:3] == ["dagster", "code-server", "start"]
    assert code_server.healthcheck == ["dagster", "api", "grpc-health-check", "--port", "4000"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (".git", True),
        ("deploy/.env", True),
        (".env", True),
        (".git/config", True),
        ("pipeline/__pycache__/x.pyc", True),
        ("dbt_project/target/manifest.json", True),
        ("tests/fixtures/p/target/m.json", True),
        ("analytics_pipeline.egg-info/PKG-INFO", True),
        ("pipeline/definitions.py", False),
        ("dbt_project/models/x.sql", False),
        ("deploy/image/build.sh", False),
    ],
)
def test_the_build_context_follows_dockerignore(path, expected):
    assert ignored(path, dockerignore_patterns()) is expected
