"""`make dev` as a developer runs it: typed into an interactive shell on a terminal, stopped by one Ctrl-C while a
run is in progress. Every process it started (local CRM, webhook receiver, `dagster dev`, its webserver, daemon,
code server, the run's worker) must be gone within a bound, no port left held, and the run must not look alive to
the next start (it is marked canceled and holds no `warehouse` slot).

The terminal is a pseudo-terminal whose session leader is `bash -i`: the shell puts `make` in its own foreground
process group, and the Ctrl-C byte makes the terminal send SIGINT to that group, exactly as at a keyboard. The
processes are found as descendants of the shell (/proc, Linux), never by name.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import signal
import socket
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import dagster as dg
import httpx
import pytest

from devstack.dagster_dev import GraphQL, launch_assets, refuse_a_local_env_file, run_status, run_worker_pid
from devstack.dagster_dev import wait_until_loaded as wait_until_ui_loaded
from devstack.serve import free_port
from pipeline.core.settings import REPO_ROOT, WAREHOUSE_POOL
from tests.marts import make_dim_customers

pytestmark = [
    pytest.mark.integration,
    pytest.mark.once,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the stack's processes through /proc"),
]

TOKEN = "make-dev-token"
#: Ctrl-C until the shell's prompt is back and every process is gone: devstack.dev gives `dagster dev` 20 s to shut
#: down, then kills what is left; the rest is the servers' own shutdown and a loaded machine.
STOP_BOUND = 90.0
STARTUP_TIMEOUT = 400.0  # make's prerequisites (dbt parse), then dagster dev and the code location
CTRL_C = b"\x03"
#: What runs under `make dev` (matched in the command lines of the shell's descendants, to show the test sees them).
PARTS = ("devstack.crm", "devstack.webhook_receiver", "dagster dev", "dagster_webserver", "dagster._daemon")


def process_table() -> dict[int, tuple[int, int, int, str, int, str]]:
    """pid -> (ppid, pgid, sid, state, start ticks, command line) of every process, from /proc."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue  # exited meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()
        state, ppid, pgid, sid, start = fields[0], int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19])
        table[int(entry.name)] = (ppid, pgid, sid, state, start, cmdline)
    return table


def descendants(root: int) -> dict[int, tuple[int, int, int, str, int, str]]:
    table = process_table()
    found, frontier = {}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, info in table.items():
            if info[0] == parent and pid not in found:
                found[pid] = info
                frontier.append(pid)
    return found


def still_running(snapshot: dict[int, tuple], groups: set[int], shell: int) -> list[str]:
    """Processes of the snapshot that still exist (same pid and start time, not a zombie), and any process in one of
    the snapshot's process groups or sessions, but the shell."""
    left = []
    for pid, (_, pgid, sid, state, start, cmdline) in process_table().items():
        if pid == shell or state == "Z":
            continue
        if (pid in snapshot and snapshot[pid][4] == start) or pgid in groups or sid in groups - {shell}:
            left.append(f"{pid} {cmdline[:100]}")
    return left


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT of closed connections does not count
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class Terminal:
    """`bash -i` on a pseudo-terminal, in its own session; everything it prints goes to `log`."""

    def __init__(self, log: Path, env: dict[str, str]) -> None:
        self.master, slave = os.openpty()

        def controlling_terminal() -> None:
            os.setsid()
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)

        self.shell = subprocess.Popen(
            ["bash", "--norc", "--noprofile", "-i"],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            preexec_fn=controlling_terminal,
            env=env,
            cwd=REPO_ROOT,
        )
        os.close(slave)
        self.log = log
        self._reader = threading.Thread(target=self._copy_output, daemon=True)
        self._reader.start()

    def _copy_output(self) -> None:
        with self.log.open("wb") as out:
            while True:
                try:
                    data = os.read(self.master, 65536)
                except OSError:  # the terminal closed
                    return
                if not data:
                    return
                out.write(data)
                out.flush()

    def type(self, text: bytes) -> None:
        os.write(self.master, text)

    @property
    def job_in_foreground(self) -> bool:
        """Whether a command (not the shell, at its prompt) holds the terminal."""
        return os.tcgetpgrp(self.master) != self.shell.pid

    def close(self) -> None:
        with suppress(OSError):
            self.type(b"exit\n")
        try:
            self.shell.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.shell.kill()
            self.shell.wait()
        os.close(self.master)


@contextmanager
def terminal(log: Path, env: dict[str, str]) -> Iterator[Terminal]:
    term = Terminal(log, env)
    groups: set[int] = set()
    try:
        yield term
    finally:
        groups = {info[1] for info in descendants(term.shell.pid).values()}
        for group in groups - {term.shell.pid}:  # only if the test failed half-way: what it started, by group
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        term.close()


def test_one_ctrl_c_stops_make_dev_with_a_run_in_progress(tmp_path, monkeypatch):
    refuse_a_local_env_file()  # the Makefile and `dagster dev` would both read it
    ports = {"CRM_PORT": free_port(), "WEBHOOK_PORT": free_port(), "DAGSTER_PORT": free_port()}
    home = tmp_path / "dagster_home"
    landing = tmp_path / "landing"
    landing.mkdir()
    (landing / "README.txt").write_text("not a landing file: keeps `make demo-data` (--if-absent) from writing any\n")
    db = tmp_path / "warehouse.duckdb"  # named like the default: the manifest's relations use the file's stem
    make_dim_customers(db, 600)
    make = [
        "make",
        "dev",
        f"DAGSTER_HOME={home}",
        f"LANDING_URL={landing}",
        f"DUCKDB_PATH={db}",
        f"DEV_DATA={tmp_path / 'data'}",
        f"CRM_TOKEN={TOKEN}",
        *(f"{name}={port}" for name, port in ports.items()),
    ]
    env = {name: os.environ[name] for name in ("HOME", "LANG", "USER", "TMPDIR") if name in os.environ}
    env.update(
        PATH=os.environ["PATH"],
        TERM="dumb",
        PS1="$ ",
        DBT_ARTIFACTS_URL=str(tmp_path / "dbt_artifacts"),
        SYNC_CONCURRENCY="1",  # one batch at a time: the sync is still sending when the Ctrl-C comes
    )
    log = tmp_path / "terminal.log"
    url = f"http://127.0.0.1:{ports['DAGSTER_PORT']}"
    with terminal(log, env) as term, httpx.Client(base_url=f"http://127.0.0.1:{ports['CRM_PORT']}") as crm:
        term.type(shlex.join(make).encode() + b"\n")
        gql = GraphQL(url)
        wait_until_ui_loaded(gql, url, term.shell, log, STARTUP_TIMEOUT)
        crm.headers["Authorization"] = f"Bearer {TOKEN}"
        crm.put("/_devstack/faults", json={"slow_seconds": 3.0}).raise_for_status()
        run_id = launch_assets(gql, ["crm_contacts_sync"])
        deadline = time.monotonic() + 180
        while crm.get("/_devstack/stats").json()["upsert_requests"] < 1:  # the first of six batches is in
            assert time.monotonic() < deadline, f"the sync never reached the CRM; see {log}"
            time.sleep(0.5)
        assert run_status(gql, run_id) == "STARTED"
        worker = run_worker_pid(gql, run_id)
        gql.close()

        stack = descendants(term.shell.pid)
        commands = " | ".join(info[5] for info in stack.values())
        for part in PARTS:
            assert part in commands, f"{part} is not running under make dev: {commands}"
        assert worker in stack, "the run's worker is one of the stack's processes"
        groups = {info[1] for info in stack.values()} | {info[2] for info in stack.values()}

        term.type(CTRL_C)
        deadline = time.monotonic() + STOP_BOUND
        while term.job_in_foreground or still_running(stack, groups, term.shell.pid):
            assert time.monotonic() < deadline, (
                f"{STOP_BOUND:.0f} s after one Ctrl-C: make {'still' if term.job_in_foreground else 'no longer'} holds"
                f" the terminal; still running: {still_running(stack, groups, term.shell.pid)}; see {log}"
            )
            time.sleep(0.5)

    assert all(port_free(port) for port in ports.values()), "a port is still held"
    output = log.read_text(errors="replace")
    assert f"Run {run_id} was still active: marked canceled" in output
    assert "Found a dagster instance configuration value" not in output, "dagster dev starts quietly"
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # devstack/dagster.yaml keeps Dagster's folders under DAGSTER_HOME
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.CANCELED
        assert not instance.event_log_storage.get_concurrency_info(WAREHOUSE_POOL).claimed_slots
