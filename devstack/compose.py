"""deploy/compose.yaml read as Docker Compose reads it, for running its services without a container runtime.

The production test (tests/integration/test_production.py) starts each service's own command with its own
environment, interpolated from the test's variables exactly as `docker compose` interpolates them from `.env` and
the shell, so the compose file is the one description of the stack that both use. Compose's interpolation syntax:
`$$` (a literal `$`), `$NAME`, `${NAME}`, `${NAME:-default}` / `${NAME-default}` (default when unset or empty /
unset), `${NAME:?message}` / `${NAME?message}` (an error naming the variable when unset or empty / unset), applied
to every string value after the YAML (with its `<<` merge keys) is read. No library does this outside Docker's own
CLI (the Python `docker-compose` v1 package is retired), hence these few lines.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

COMPOSE_FILE = Path(__file__).resolve().parents[1] / "deploy" / "compose.yaml"

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|(?P<plain>[A-Za-z_][A-Za-z0-9_]*)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\})"
)


class ComposeError(ValueError):
    """A variable the compose file requires is unset, or the file is not what this module understands."""


def interpolate(value: str, env: Mapping[str, str], *, where: str = "") -> str:
    """`value` with Compose's variable syntax replaced from `env`."""

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["plain"] or match["braced"]
        op, arg = match["op"], match["arg"] or ""
        current = env.get(name)
        missing = current is None or (current == "" and op is not None and op.startswith(":"))
        if op in ("-", ":-"):
            return arg if missing else current
        if op in ("?", ":?"):
            if missing:
                raise ComposeError(f"{where}: {name} is required: {arg or 'set it'}")
            return current
        return current or ""

    return _VARIABLE.sub(replace, value)


def _interpolated(node: Any, env: Mapping[str, str], where: str) -> Any:
    if isinstance(node, str):
        return interpolate(node, env, where=where)
    if isinstance(node, list):
        return [_interpolated(item, env, where) for item in node]
    if isinstance(node, dict):
        return {key: _interpolated(item, env, f"{where}.{key}") for key, item in node.items()}
    return node


@dataclass(frozen=True)
class Service:
    name: str
    command: list[str]
    environment: dict[str, str]
    #: the variables of its `env_file` entries (compose's `.env` file: the `dotenv` given to `services`)
    env_file: dict[str, str]
    #: the health check's command (compose's `test` without its CMD / CMD-SHELL marker), or None
    healthcheck: list[str] | None
    #: the image's build arguments (`build.args`)
    build_args: dict[str, str]

    @property
    def container_env(self) -> dict[str, str]:
        """What the container's processes see of the compose file: `environment` over `env_file` (as in Compose)."""
        return {**self.env_file, **self.environment}


def services(env: Mapping[str, str], path: Path = COMPOSE_FILE) -> dict[str, Service]:
    """Every service of the compose file at `path`, interpolated from `env`: the variables Compose reads from the
    project's `.env` file and the shell. A service's `env_file: .env` passes the same variables into its container
    (other env files are not supported here)."""
    document = yaml.safe_load(path.read_text())
    found = {}
    for name, raw in document["services"].items():
        spec = _interpolated(raw, env, f"{path.name}: services.{name}")
        environment = spec.get("environment") or {}
        if isinstance(environment, list):  # the KEY=value list form
            environment = dict(item.split("=", 1) for item in environment)
        test = (spec.get("healthcheck") or {}).get("test")
        if isinstance(test, list) and test and test[0] in ("CMD", "CMD-SHELL"):
            test = test[1:] if test[0] == "CMD" else ["sh", "-c", test[1]]
        env_files = spec.get("env_file") or []
        for entry in env_files if isinstance(env_files, list) else [env_files]:
            file = entry["path"] if isinstance(entry, dict) else entry
            if file != ".env":
                raise ComposeError(f"{path.name}: services.{name}.env_file: only .env is supported here, not {file}")
        command = spec.get("command") or []
        if isinstance(command, str):
            raise ComposeError(f"{path.name}: services.{name}.command: write it as a list (no shell in between)")
        found[name] = Service(
            name=name,
            command=[str(part) for part in command],
            environment={key: "" if value is None else str(value) for key, value in environment.items()},
            env_file=dict(env) if env_files else {},
            healthcheck=test,
            build_args={key: str(value) for key, value in ((spec.get("build") or {}).get("args") or {}).items()},
        )
    return found
