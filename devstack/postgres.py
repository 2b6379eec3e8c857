"""A throwaway PostgreSQL server: `initdb` + `pg_ctl` on a temporary data folder, listening on a loopback port only.

The production test runs Dagster's Postgres storage against it, in place of compose's `postgres` service (the
official image cannot be pulled on the test machine): the database, role and password are the ones that service
creates from its POSTGRES_* variables, and clients reach it with password authentication, as over compose's
network. Needs Debian's `postgresql` package (`.ci/run` installs it). PostgreSQL refuses to run as root: as root,
the server runs as the package's `postgres` user, its data folder owned by that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from devstack.serve import free_port

INSTALL_HINT = "install PostgreSQL: sudo apt-get install -y postgresql (Debian/Ubuntu; .ci/run does it)"
START_TIMEOUT = 60.0


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries on this machine; the message says how to install them."""


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    db: str
    user: str
    password: str

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{self.db}"


def server_binaries() -> Path:
    """The folder holding initdb, pg_ctl and psql of the newest PostgreSQL installed (Debian's layout, then PATH)."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if versions:
        return versions[-1].parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise PostgresUnavailable(f"no PostgreSQL server (initdb) found: {INSTALL_HINT}")


def _as_server_user(command: list[str]) -> list[str]:
    """`command` as the `postgres` user when this process is root (initdb and postgres refuse root)."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@contextmanager
def postgres_server(*, db: str, user: str, password: str) -> Iterator[Postgres]:
    """A running server with database `db` owned by `user` (password auth over TCP); removed afterwards."""
    bin_dir = server_binaries()
    root = Path(tempfile.mkdtemp(prefix="pg-"))
    data, sockets, log = root / "data", root / "sockets", root / "server.log"
    sockets.mkdir()
    password_file = root / "superuser-password"
    password_file.write_text(password + "\n")
    if os.geteuid() == 0:
        server_user = pwd.getpwnam("postgres")
        for path in (root, sockets, password_file):
            os.chown(path, server_user.pw_uid, server_user.pw_gid)
    port = free_port()
    try:
        subprocess.run(
            _as_server_user(
                [
                    str(bin_dir / "initdb"),
                    "--pgdata",
                    str(data),
                    "--username",
                    user,
                    "--pwfile",
                    str(password_file),
                    "--auth-host",
                    "scram-sha-256",
                    "--auth-local",
                    "trust",
                    "--encoding",
                    "UTF8",
                    "--no-sync",
                ]
            ),
            check=True,
            capture_output=True,
            text=True,
        )
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} -c fsync=off -c full_page_writes=off"
        subprocess.run(
            _as_server_user(
                [str(bin_dir / "pg_ctl"), "--pgdata", str(data), "--log", str(log), "-o", options, "-w", "start"]
            ),
            check=True,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
        )
        subprocess.run(
            _as_server_user(
                [str(bin_dir / "createdb"), "-h", str(sockets), "-p", str(port), "-U", user, "-O", user, db]
            ),
            check=True,
            capture_output=True,
            text=True,
        )
        yield Postgres(host="127.0.0.1", port=port, db=db, user=user, password=password)
    except subprocess.CalledProcessError as exc:
        server_log = log.read_text(errors="replace") if log.exists() else ""
        raise RuntimeError(f"{exc.cmd[-1]!r} failed: {exc.stderr}\n{server_log}") from exc
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(
                _as_server_user([str(bin_dir / "pg_ctl"), "--pgdata", str(data), "-m", "immediate", "-w", "stop"]),
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(root, ignore_errors=True)
