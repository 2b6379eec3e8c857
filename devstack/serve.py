"""Run a devstack ASGI app: in a background thread for tests, or in the foreground from the command line.

`ServerThread` binds port 0 and reads the port the OS picked back from uvicorn's listening socket, so parallel
test runs never race for a fixed port and no "find a free port, then bind it" window exists.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from types import TracebackType
from typing import Self

import httpx
import uvicorn
from starlette.types import ASGIApp

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


class ServerThread:
    """Serve `app` with uvicorn on `host`:`port` in a daemon thread; use as a context manager.

    `port=0` (the default) lets the OS pick a free port; `.port` and `.url` report it once started.
    uvicorn's logging config is left alone (`log_config=None`) so starting a server inside pytest does not
    reconfigure the test process's loggers.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        startup_timeout: float = 10.0,
        shutdown_timeout: float = 10.0,
    ) -> None:
        self.host = host
        self._requested_port = port
        self._startup_timeout = startup_timeout
        self._shutdown_timeout = shutdown_timeout
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level=log_level,
            log_config=None,
            access_log=False,
            # Keep-alive connections left open by a client must not hold up shutdown for long.
            timeout_graceful_shutdown=max(1, int(shutdown_timeout / 2)),
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name=f"devstack-uvicorn-{host}", daemon=True)
        self._error: BaseException | None = None
        self._port: int | None = None

    def _run(self) -> None:
        try:
            self._server.run()
        except BaseException as exc:  # uvicorn reports bind/startup failures through sys.exit()
            self._error = exc

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("server not started; use `with ServerThread(app) as server:` or call start()")
        return self._port

    @property
    def url(self) -> str:
        """Base URL without a trailing slash, e.g. ``http://127.0.0.1:54321``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> Self:
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(
                    f"uvicorn failed to start on {self.host}:{self._requested_port}: {self._error!r}"
                ) from self._error
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"uvicorn did not start within {self._startup_timeout}s")
            time.sleep(0.005)
        self._port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._server.should_exit = True
        self._thread.join(self._shutdown_timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(self._shutdown_timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def server_arg_parser(description: str, *, default_port: int) -> argparse.ArgumentParser:
    """The options every devstack server shares; each server's `main()` adds its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=default_port, help="0 picks a free port (default: %(default)s)")
    parser.add_argument("--log-level", default="info", choices=LOG_LEVELS, help="(default: %(default)s)")
    return parser


def configure_logging(log_level: str) -> None:
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run_forever(app: ASGIApp, *, host: str, port: int, log_level: str, access_log: bool = True) -> None:
    """Serve `app` in the foreground until SIGINT/SIGTERM (uvicorn handles the signals on the main thread)."""
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=access_log)


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    return args


def free_port() -> int:
    """A port free on loopback right now, for a server started in another process (which cannot report the port
    it bound back to us); a tiny race with other processes binding in between, acceptable for tests and benches."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    """Something listens on this loopback port (binding as uvicorn does, SO_REUSEADDR: a port a server just left,
    in TIME_WAIT, is free)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def stop_group(
    process: subprocess.Popen,
    *,
    first_signal: signal.Signals = signal.SIGTERM,
    grace: float = 10.0,
    hurry: threading.Event | None = None,
    leader_only: bool = False,
) -> None:
    """Stop the process group `process` leads (started with `start_new_session=True`) and everything in it.

    `first_signal` goes to the whole group (or to the leader alone: `leader_only`, for a leader that stops its
    children itself); the leader gets `grace` seconds to exit (less once `hurry` is set, e.g. by a second Ctrl-C).
    Then SIGKILL goes to the group, whether the leader exited or not: a child that outlived its parent (a run worker,
    a code server waiting for it) has no one left to stop it. Returns once the group is empty, or after 10 s more if
    the system is slow to reap what was killed.
    """
    with suppress(ProcessLookupError):
        if leader_only:
            os.kill(process.pid, first_signal)
        else:
            os.killpg(process.pid, first_signal)
    deadline = time.monotonic() + grace
    while process.poll() is None and time.monotonic() < deadline and not (hurry and hurry.is_set()):
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=0.2)
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)  # signal 0: is anyone left in the group?
        except ProcessLookupError:
            return
        time.sleep(0.1)


@contextmanager
def server_process(
    module: str,
    *args: str,
    port: int | None = None,
    log_level: str = "warning",
    timeout: float = 30.0,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """Run `python -m <module> --port <port> <args>` in its own process group (a free port unless `port` is given);
    yield its URL once /healthz answers; stop the group afterwards. For servers that must not share this process's
    GIL (`make dev`, benchmarks, e2e)."""
    if port and port_in_use(port):  # else the server already there would answer /healthz in the new one's place
        raise RuntimeError(f"{module} cannot start: port {port} is already in use (another `make dev`?)")
    port = port or free_port()
    command = [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", str(port), "--log-level", log_level]
    process = subprocess.Popen([*command, *args], start_new_session=True, stdin=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"{module} exited with {process.returncode} before answering on {url} (is the port in use?)"
                )
            try:
                if httpx.get(f"{url}/healthz", timeout=1, trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{module} did not answer on {url} within {timeout:.0f} s")
            time.sleep(0.1)
        yield url
    finally:
        stop_group(process)
