"""Records incoming webhook POSTs, for `make dev` and the integration tests.

It stands in for a Slack incoming webhook (answers ``200 ok`` to any POST, like Slack) and for a receiver of the
generic signed webhooks. It keeps the raw body and every header: a signature is checked against the exact bytes that
were sent, not against re-serialised JSON.

- ``POST /<any path>``: record the request; ``200 ok``. With a `secret`, the request is verified the way a real
  receiver should (`pipeline.activation.signing.verify`): a bad or stale signature is recorded with
  ``rejected`` and answered ``401``. A request whose ``Idempotency-Key`` was already accepted is recorded with
  ``duplicate: true`` and answered ``200`` again: a receiver applies each key once.
- ``GET /_devstack/received``: the recorded requests, oldest first. ``DELETE`` clears them.
- ``GET /healthz``: readiness probe.

With `log_path` each request is also appended to a JSONL file, so a `make dev` session can be inspected afterwards.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from devstack.serve import parse_args, run_forever, server_arg_parser
from pipeline.activation.signing import SignatureError, verify

logger = logging.getLogger(__name__)


class ReceivedLog:
    """Recorded requests in memory (and optionally a JSONL file); safe to share between worker threads."""

    def __init__(self, log_path: Path | None = None) -> None:
        self.log_path = log_path
        self._lock = threading.Lock()
        self._records: list[dict[str, Any]] = []
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._records.append(record)
            if self.log_path is not None:
                with self.log_path.open("a", encoding="utf-8") as file:
                    file.write(json.dumps(record, ensure_ascii=False) + "\n")

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._records)

    def clear(self) -> int:
        """Forget the in-memory records (the JSONL file is kept); returns how many there were."""
        with self._lock:
            count = len(self._records)
            self._records.clear()
            return count


async def _record(request: Request) -> tuple[bytes, dict[str, Any]]:
    raw = await request.body()
    body = raw.decode("utf-8", errors="replace")
    try:
        parsed: Any = json.loads(raw) if raw else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        parsed = None
    headers: dict[str, str] = {}
    for name, value in request.headers.items():  # names arrive lower-cased; repeats join as HTTP allows
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return raw, {
        "received_at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "method": request.method,
        "path": request.url.path,
        "query": request.url.query,
        "headers": headers,
        "body": body,
        "json": parsed,
    }


def create_app(log_path: Path | None = None, secret: str | None = None) -> Starlette:
    """A receiver that answers every POST with ``200 ok`` (verifying signatures with `secret` when given); the log
    is reachable as ``app.state.received``."""
    received = ReceivedLog(log_path)
    accepted_keys: set[str] = set()
    keys_lock = threading.Lock()

    async def receive(request: Request) -> Response:
        raw, record = await _record(request)
        if secret:
            try:
                verify(secret, raw, record["headers"])
            except SignatureError as exc:
                record["rejected"] = str(exc)
                await run_in_threadpool(received.append, record)
                return PlainTextResponse(f"rejected: {exc}", status_code=401)
        key = record["headers"].get("idempotency-key")
        if key:
            with keys_lock:
                record["duplicate"] = key in accepted_keys
                accepted_keys.add(key)
        await run_in_threadpool(received.append, record)
        logger.debug("received %s %s (%d bytes)", record["method"], record["path"], len(record["body"]))
        return PlainTextResponse("ok")

    async def list_received(request: Request) -> Response:
        return JSONResponse(received.snapshot())

    async def clear_received(request: Request) -> Response:
        return JSONResponse({"cleared": received.clear()})

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[
            Route("/_devstack/received", list_received, methods=["GET"]),
            Route("/_devstack/received", clear_received, methods=["DELETE"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/{path:path}", receive, methods=["POST"]),
        ]
    )
    app.state.received = received
    return app


def main(argv: Sequence[str] | None = None) -> None:
    parser = server_arg_parser("Webhook receiver that records every POST (devstack).", default_port=8766)
    parser.add_argument("--log", type=Path, default=None, help="also append each request to this JSONL file")
    parser.add_argument(
        "--secret", default=None, help="verify signed webhooks with this secret (default: $WEBHOOK_SECRET)"
    )
    args = parse_args(parser, argv)
    app = create_app(args.log, args.secret or os.environ.get("WEBHOOK_SECRET") or None)
    logger.info("webhook receiver: log=%s", args.log or "memory only")
    run_forever(app, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
