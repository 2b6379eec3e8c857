"""The deployment files say the same thing: the Helm values' instance settings are deploy/dagster.production.yaml's,
and their user deployment runs the compose file's code server (the production test runs the compose file and the
production instance for real: tests/integration/test_production.py)."""

from pathlib import Path

import yaml

from devstack.compose import services
from pipeline.core.settings import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
PRODUCTION = yaml.safe_load((DEPLOY / "dagster.production.yaml").read_text())
HELM = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
COMPOSE = services(dict.fromkeys(("DAGSTER_PG_PASSWORD", "CRM_URL", "CRM_TOKEN", "WEBHOOK_URL", "WEBHOOK_SECRET"), "-"))


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def camel_keys(value):
    if isinstance(value, dict):
        return {camel(key): camel_keys(item) for key, item in value.items()}
    if isinstance(value, list):
        return [camel_keys(item) for item in value]
    return value


def test_the_helm_values_carry_the_production_instance_settings():
    daemon = HELM["dagsterDaemon"]
    assert daemon["runMonitoring"] == camel_keys(PRODUCTION["run_monitoring"])
    assert daemon["runRetries"] == camel_keys(PRODUCTION["run_retries"])
    assert {k: v for k, v in HELM["concurrency"].items() if k != "enabled"} == camel_keys(PRODUCTION["concurrency"])
    assert HELM["retention"]["schedule"] == camel_keys(PRODUCTION["retention"]["schedule"])
    assert HELM["retention"]["sensor"] == camel_keys(PRODUCTION["retention"]["sensor"])
    assert HELM["telemetry"] == PRODUCTION["telemetry"]
    assert HELM["postgresql"]["postgresqlScheme"] == PRODUCTION["storage"]["postgres"]["postgres_db"]["scheme"]


def test_the_user_deployment_is_the_compose_code_server():
    [deployment] = HELM["dagster-user-deployments"]["deployments"]
    command = COMPOSE["code-server"].command
    assert command[:3] == ["dagster", "code-server", "start"]
    # the chart adds --host and --port itself
    args = command[3:]
    port = args[args.index("--port") + 1]
    for flag in ("--host", "--port"):
        i = args.index(flag)
        del args[i : i + 2]
    assert deployment["codeServerArgs"] == args
    assert str(deployment["port"]) == port
    env = {item["name"]: item["value"] for item in deployment["env"]}
    assert env["DBT_TARGET"] == COMPOSE["code-server"].environment["DBT_TARGET"]
    assert env["DUCKDB_PATH"] == COMPOSE["code-server"].build_args["DUCKDB_PATH"], "the path the image was parsed for"
    assert HELM["global"]["dagsterHome"] == dockerfile_env()["DAGSTER_HOME"]


def dockerfile_env() -> dict[str, str]:
    """The runtime stage's ENV of the Dockerfile (`ENV A=1 \\ B=2` lines)."""
    text = (REPO_ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    runtime = text[text.index("AS runtime") :]
    env = {}
    for line in runtime.splitlines():
        if line.startswith("ENV "):
            for pair in line[4:].split():
                name, _, value = pair.partition("=")
                env[name] = value
    return env


def test_the_image_runs_as_a_non_root_user_with_a_health_check():
    text = (REPO_ROOT / "Dockerfile").read_text()
    runtime = text[text.index("AS runtime") :]
    assert "\nUSER dagster\n" in runtime and "HEALTHCHECK" in runtime
    assert "deploy/image/build.sh deps" in text and "deploy/image/build.sh app" in text
    assert Path(REPO_ROOT / "deploy" / "image" / "build.sh").stat().st_mode & 0o111, "build.sh is executable"
