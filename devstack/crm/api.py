"""The CRM stand-in's HTTP layer: `create_app` builds the Starlette app with HubSpot's contacts routes.

Routes (HubSpot CRM v3 shapes unless noted): batch upsert, batch read, batch archive, list (cursor paging), get by
id or ``idProperty``; ``/_devstack/stats`` and ``/_devstack/faults`` (not HubSpot); ``/healthz``. Also here:
`BearerTokenAuth` (every path but ``/healthz`` needs the token), request-body and query-parameter parsing, and
the handlers that turn `CrmError` and Starlette's HTTP errors into HubSpot-shaped error bodies.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from devstack.crm.contacts import (
    DEFAULT_PAGE_LIMIT,
    MAX_PAGE_LIMIT,
    OBJECT_ID_PROPERTY,
    PROPERTY_NAME,
    batch_response,
    compact_json,
    parse_batch_ids,
    parse_upsert_body,
    utc_now,
)
from devstack.crm.errors import CrmError, error_response, validation_error
from devstack.crm.faults import FaultConfig, FaultInjector
from devstack.crm.idempotency import (
    IDEMPOTENCY_KEY_HEADER,
    IDEMPOTENT_REPLAYED_HEADER,
    body_sha256,
    idempotency_key,
    upsert_once,
)
from devstack.crm.store import ContactStore

logger = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/healthz"})


class BearerTokenAuth:
    """Require ``Authorization: Bearer <token>`` on every path except `PUBLIC_PATHS`, like a HubSpot private app."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in PUBLIC_PATHS:
            scheme, _, credentials = Headers(scope=scope).get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not credentials:
                message = "Authentication credentials not found. Send the header `Authorization: Bearer <token>`."
            elif not hmac.compare_digest(credentials.strip().encode(), self._token):
                message = "The access token is invalid."
            else:
                message = None
            if message is not None:
                await error_response(401, "INVALID_AUTHENTICATION", message)(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _json_body(request: Request) -> object:
    try:
        raw = await request.body()
    except ClientDisconnect:  # the client went away mid-body (a run worker killed mid-send): nothing to answer
        logger.info("%s %s: the client disconnected before its body arrived", request.method, request.url.path)
        raise CrmError(400, "CLIENT_DISCONNECTED", "The client disconnected before sending its whole body.") from None
    try:
        raw.decode("utf-8")
        return orjson.loads(raw)
    except UnicodeDecodeError as exc:
        raise validation_error(f"Request body is not UTF-8: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise validation_error(f"Invalid input JSON on line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc


def _int_param(request: Request, name: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or int(raw) < minimum or (maximum is not None and int(raw) > maximum):
        bounds = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
        raise validation_error(f"Query parameter {name}={raw!r} must be an integer {bounds}")
    return int(raw)


def _property_names(request: Request) -> list[str] | None:
    raw = request.query_params.get("properties")
    return None if raw is None else [name for name in raw.split(",") if name]


def create_app(db_path: str | Path, token: str | None, faults: FaultConfig | None = None) -> Starlette:
    """The CRM stand-in over the SQLite file `db_path` (created if missing); `token=None` disables auth.

    `faults` switches on fault injection for batch upserts (see `FaultConfig`); ``PUT /_devstack/faults`` changes
    it at runtime. The store is ``app.state.store`` and the injector ``app.state.faults``, for tests.
    """
    store = ContactStore(db_path)
    injector = FaultInjector(faults)

    async def upsert(request: Request) -> Response:
        started_at = utc_now()
        if (fault := await injector.before_apply()) is not None:
            return fault
        body = await _json_body(request)
        inputs = parse_upsert_body(body)
        key = idempotency_key(request)
        if key is None:
            results = store.upsert_batch(inputs)
            status, response, replayed = 200, compact_json(batch_response(results, started_at)), False
        else:
            status, response, replayed = upsert_once(
                store, inputs, key=key, body_sha256=body_sha256(body), started_at=started_at
            )
        if replayed:
            logger.info("batch upsert: replayed the response recorded for %s %r", IDEMPOTENCY_KEY_HEADER, key)
            replay = {IDEMPOTENT_REPLAYED_HEADER: "true"}
            return Response(response, status_code=status, media_type="application/json", headers=replay)
        if (fault := injector.fail_after_apply()) is not None:
            return fault
        return Response(response, status_code=status, media_type="application/json")

    async def batch_read(request: Request) -> Response:
        body = await _json_body(request)
        id_property, values, names = parse_batch_ids(body, allow_id_property=True)
        found = await run_in_threadpool(lambda: [store.find(id_property, value) for value in values])
        results = [contact.to_json(names) for contact in found if contact is not None]
        missing = [value for value, contact in zip(values, found, strict=True) if contact is None]
        response: dict[str, Any] = {"status": "COMPLETE", "results": results}
        if missing:
            response["errors"] = [
                {
                    "status": "error",
                    "category": "OBJECT_NOT_FOUND",
                    "message": "Could not get some CONTACT objects",
                    "context": {"ids": missing},
                }
            ]
        return JSONResponse(response, status_code=207 if missing else 200)

    async def batch_archive(request: Request) -> Response:
        _, values, _ = parse_batch_ids(await _json_body(request), allow_id_property=False)
        ids = [int(value) for value in values if value.isdigit()]
        await run_in_threadpool(store.archive, ids)
        return Response(status_code=204)

    async def faults_endpoint(request: Request) -> Response:
        if request.method == "PUT":
            injector.configure(FaultConfig.from_json(await _json_body(request)))
            logger.info("fault injection set to %s", injector.config)
        return JSONResponse(injector.config.to_json())

    async def list_contacts(request: Request) -> Response:
        limit = _int_param(request, "limit", DEFAULT_PAGE_LIMIT, minimum=1, maximum=MAX_PAGE_LIMIT)
        after = _int_param(request, "after", 0, minimum=0)
        names = _property_names(request)
        contacts, next_after = await run_in_threadpool(store.page, limit=limit, after=after)
        body: dict[str, Any] = {"results": [contact.to_json(names) for contact in contacts]}
        if next_after is not None:
            link = f"{request.url.path}?limit={limit}&after={next_after}"
            body["paging"] = {"next": {"after": str(next_after), "link": link}}
        return JSONResponse(body)

    async def get_contact(request: Request) -> Response:
        value: str = request.path_params["contact_id"]
        id_property = request.query_params.get("idProperty") or OBJECT_ID_PROPERTY
        if not PROPERTY_NAME.fullmatch(id_property):
            raise validation_error(f"idProperty={id_property!r} is not a property name")
        contact = await run_in_threadpool(store.find, id_property, value)
        if contact is None:
            raise CrmError(404, "OBJECT_NOT_FOUND", f"No contact with {id_property}={value!r}")
        return JSONResponse(contact.to_json(_property_names(request)))

    async def stats(request: Request) -> Response:
        return JSONResponse(await run_in_threadpool(store.stats))

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def on_crm_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, CrmError)
        logger.info("%s %s -> %d: %s", request.method, request.url.path, exc.status_code, exc.message)
        return error_response(exc.status_code, exc.category, exc.message, exc.errors)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        category = "OBJECT_NOT_FOUND" if exc.status_code == 404 else "VALIDATION_ERROR"
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return error_response(exc.status_code, category, message, headers=exc.headers)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        store.close()

    contacts = "/crm/v3/objects/contacts"
    app = Starlette(
        routes=[
            Route(f"{contacts}/batch/upsert", upsert, methods=["POST"]),
            Route(f"{contacts}/batch/read", batch_read, methods=["POST"]),
            Route(f"{contacts}/batch/archive", batch_archive, methods=["POST"]),
            Route(contacts, list_contacts, methods=["GET"]),
            Route(f"{contacts}/{{contact_id}}", get_contact, methods=["GET"]),
            Route("/_devstack/stats", stats, methods=["GET"]),
            Route("/_devstack/faults", faults_endpoint, methods=["GET", "PUT"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
        middleware=[Middleware(BearerTokenAuth, token=token)] if token else [],
        exception_handlers={CrmError: on_crm_error, HTTPException: on_http_error},
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.faults = injector
    return app
