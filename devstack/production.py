"""The production stack (deploy/compose.yaml) as processes on this machine, for the production test: no container
runtime, the same files.

- `build_image_tree`: what `docker build` does to the repository, outside a container: the files .dockerignore
  lets through are copied to a folder (the image's /app), then deploy/image/build.sh runs its two steps there (the
  Dockerfile's RUN lines): the locked dependencies with the `production` extra into that folder's own virtualenv,
  the dbt manifest, the production instance config into DAGSTER_HOME.
- `ProductionStack`: each service's command and environment from the compose file, interpolated from the
  variables given (as `docker compose` reads `deploy/.env`), started in the built folder (the image's WORKDIR)
  with the virtualenv's bin on PATH and DAGSTER_HOME set (the Dockerfile's ENV), each in its own process group;
  a service counts as started once its compose health check passes.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from devstack.compose import COMPOSE_FILE, Service, services

# The processes take from this one's environment only what dagster_dev's stack takes (a container starts from
# its image's environment, not the host's).
from devstack.dagster_dev import PASSED_THROUGH, tail
from devstack.serve import stop_group
from pipeline.core.settings import REPO_ROOT

BUILD_SCRIPT = Path("deploy/image/build.sh")
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
#: The code server loads the definitions (the manifest is prepared: no dbt parse) before it answers health checks.
HEALTHY_TIMEOUT = 240.0


def ignored(relative: str, patterns: list[str]) -> bool:
    """Whether .dockerignore's `patterns` exclude `relative` (a POSIX path in the build context): a pattern matches
    the path or one of its parent folders; `**/` matches any number of folders (Docker's own rules, without `!`)."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for pattern in patterns:
        candidates = [pattern]
        if pattern.startswith("**/"):
            candidates.append(pattern[3:])
        for candidate in candidates:
            anywhere = candidate != pattern
            for prefix in prefixes:
                target = prefix.rsplit("/", 1)[-1] if anywhere and "/" not in candidate else prefix
                if fnmatch.fnmatchcase(target, candidate):
                    return True
    return False


def dockerignore_patterns(path: Path = DOCKERIGNORE) -> list[str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    patterns = [line.rstrip("/") for line in lines if line and not line.startswith("#")]
    if any(pattern.startswith("!") for pattern in patterns):
        raise ValueError(f"{path}: exceptions (!pattern) are not supported by devstack.production")
    return patterns


def copy_build_context(dest: Path, source: Path = REPO_ROOT) -> None:
    """The files `docker build` would send from `source` (its .dockerignore applied), copied to `dest`."""
    patterns = dockerignore_patterns(source / ".dockerignore")
    for folder, dirs, files in os.walk(source):
        relative_folder = Path(folder).relative_to(source)
        dirs[:] = [d for d in dirs if not ignored((relative_folder / d).as_posix(), patterns)]
        for name in files:
            relative = (relative_folder / name).as_posix()
            if not ignored(relative, patterns):
                (dest / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source / relative, dest / relative)


def build_image_tree(app: Path, dagster_home: Path, *, log: Path, build_args: Mapping[str, str]) -> None:
    """The image's build outside a container: the build context copied to `app`, then the Dockerfile's two
    `deploy/image/build.sh` steps run there with the compose file's `build_args`, with this checkout's uv (`make
    install` put it in .bootstrap/)."""
    copy_build_context(app)
    # The build sees the machine's network settings (proxies, CA bundles: SSL_CERT_FILE, ...), as `docker build`
    # does through the host; not this process's virtualenv.
    env = {name: value for name, value in os.environ.items() if name not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(
        UV=str(REPO_ROOT / ".bootstrap" / "bin" / "uv"),
        UV_LINK_MODE="copy",
        UV_PYTHON_DOWNLOADS="never",
        PYTHON=os.environ.get("PYTHON", "python3"),
        UV_PROJECT_ENVIRONMENT=str(app / ".venv"),
        DAGSTER_HOME=str(dagster_home),
    )
    env.update(build_args)
    with log.open("ab") as out:
        for step in ("deps", "app"):
            done = subprocess.run([str(app / BUILD_SCRIPT), step], cwd=app, env=env, stdout=out, stderr=out)
            if done.returncode:
                raise RuntimeError(f"{BUILD_SCRIPT} {step} failed ({done.returncode}); {log}:\n{tail(log, 40)}")


@dataclass
class ProductionStack:
    """The compose services started as processes from the built folder `app`."""

    app: Path
    dagster_home: Path
    variables: Mapping[str, str]
    logs: Path
    compose_file: Path = COMPOSE_FILE
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def service(self, name: str) -> Service:
        return services(self.variables, self.compose_file)[name]

    def environment(self, service: Service) -> dict[str, str]:
        """The service's environment from the compose file over the image's (the Dockerfile's ENV)."""
        # From this process's environment only what dagster_dev's stack takes: a container starts from its image's
        # environment, not the host's.
        env = {name: os.environ[name] for name in PASSED_THROUGH if name in os.environ}
        env.update(
            PATH=os.pathsep.join([str(self.app / ".venv" / "bin"), os.environ.get("PATH", os.defpath)]),
            DAGSTER_HOME=str(self.dagster_home),
            PYTHONUNBUFFERED="1",
            PYTHONDONTWRITEBYTECODE="1",
        )
        env.update(service.container_env)
        return env

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def start(self, name: str, timeout: float = HEALTHY_TIMEOUT) -> subprocess.Popen:
        """Start service `name` and wait until its compose health check passes."""
        service = self.service(name)
        env = self.environment(service)
        with self.log(name).open("ab") as out:
            process = subprocess.Popen(
                service.command,
                cwd=self.app,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes[name] = process
        if service.healthcheck:
            deadline = time.monotonic() + timeout
            while subprocess.run(service.healthcheck, cwd=self.app, env=env, capture_output=True).returncode:
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {process.returncode}; {self.log(name)}:\n{self.tail(name)}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} not healthy within {timeout:.0f} s:\n{self.tail(name)}")
                time.sleep(1.0)
        return process

    def stop(self, name: str, *, grace: float = 30.0) -> None:
        """SIGTERM to the service's process group (what `docker compose stop` sends), SIGKILL after `grace`."""
        process = self.processes.pop(name)
        stop_group(process, first_signal=signal.SIGTERM, grace=grace)

    def tail(self, name: str, lines: int = 60) -> str:
        return tail(self.log(name), lines)

    def stop_all(self) -> None:
        for name in reversed(list(self.processes)):
            self.stop(name)


@contextmanager
def production_stack(
    app: Path, dagster_home: Path, variables: Mapping[str, str], logs: Path, *names: str
) -> Iterator[ProductionStack]:
    """Start the services `names` in order (each healthy before the next, compose's `depends_on`); stop them all
    afterwards, in reverse order."""
    logs.mkdir(parents=True, exist_ok=True)
    stack = ProductionStack(app, dagster_home, variables, logs)
    with ExitStack() as cleanup:
        cleanup.callback(stack.stop_all)
        for name in names:
            stack.start(name)
        yield stack
