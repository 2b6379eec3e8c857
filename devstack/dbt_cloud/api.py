"""The dbt Cloud stand-in's HTTP layer: `create_app` builds the Starlette app with the Administrative API v2
routes dagster-dbt's dbt Cloud client calls, all under ``/api/v2/accounts/{account_id}``:

- ``GET`` the account itself (``get_account_details``, ``verify_connection``), ``GET projects/{id}``,
  ``GET environments/{id}``;
- ``GET jobs`` (``project_id``, ``environment_id``, ``limit``/``offset`` paging), ``POST jobs``, ``GET jobs/{id}``,
  ``DELETE jobs/{id}``; ``POST jobs/{id}/run``;
- ``GET runs`` (filters ``project_id``, ``environment_id``, ``job_definition_id``, ``status``/``status__in``,
  ``finished_at__range``; ``order_by``; paging with ``extra.pagination.total_count``), ``GET runs/{id}``
  (``include_related=run_steps,job,trigger``), ``POST runs/{id}/cancel``, ``GET runs/{id}/artifacts`` and
  ``GET runs/{id}/artifacts/{path}`` (the file itself, not wrapped in ``data``).

A run's ``href`` (``/deploy/{account}/projects/{project}/runs/{id}``, the link Dagster logs and puts in metadata) is a
page showing the run's status, steps and their logs, refreshed while it runs; like dbt Cloud's own run page it is for
a browser, so it takes no token (the stand-in listens on loopback only).

Not dbt Cloud: ``GET``/``PUT /_devstack/faults`` (`FaultConfig`), ``GET /_devstack/stats`` (requests per route,
runs by status), ``GET /healthz`` (never needs the token). `ApiGate` checks ``Authorization: Token <t>`` (or
``Bearer <t>``), counts requests per route and injects the request-level faults.
"""

from __future__ import annotations

import datetime as dt
import hmac
import html
import json
import logging
import re
from collections import Counter
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from devstack.dbt_cloud.errors import DbtCloudError, envelope, error_response, invalid, not_found
from devstack.dbt_cloud.faults import FaultConfig, FaultInjector
from devstack.dbt_cloud.runner import DbtSetup, RunWorkers
from devstack.dbt_cloud.store import RUN_ORDERINGS, Job, Run, RunFilter, Seed, Workspace, seed_jobs

logger = logging.getLogger(__name__)

PUBLIC_PATHS = frozenset({"/healthz"})
#: pages for a browser, as dbt Cloud's run links are: no token
PAGE_PREFIX = "/deploy/"
API_PREFIX = "/api/"
MAX_PAGE_LIMIT = 100
INCLUDABLE = frozenset({"run_steps", "job", "trigger", "debug_logs", "environment"})


class ApiGate:
    """In front of every route: counts the request under its route, then answers for it when a fault says so or
    the token is wrong. dbt Cloud takes ``Authorization: Token <t>``; ``Bearer <t>`` works too."""

    def __init__(
        self, app: ASGIApp, *, token: str | None, faults: FaultInjector, routes: Sequence[BaseRoute], requests: Counter
    ) -> None:
        self.app = app
        self._token = token.encode() if token else None
        self._faults = faults
        self._routes = routes
        self._requests = requests

    def _route_name(self, scope: Scope) -> str:
        for route in self._routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return f"{scope['method']} {getattr(route, 'path', '?')}"
        return f"{scope['method']} (no route)"

    def _auth_error(self, scope: Scope) -> str | None:
        if self._token is None:
            return None
        scheme, _, credentials = Headers(scope=scope).get("authorization", "").partition(" ")
        if scheme.lower() not in ("token", "bearer") or not credentials:
            return "Authentication credentials were not provided. Send the header `Authorization: Token <token>`."
        if not hmac.compare_digest(credentials.strip().encode(), self._token):
            return "Invalid token."
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS or scope["path"].startswith(PAGE_PREFIX):
            await self.app(scope, receive, send)
            return
        self._requests[self._route_name(scope)] += 1
        is_api = scope["path"].startswith(API_PREFIX)
        if is_api and self._faults.config.unauthorized:
            response = error_response(401, "Invalid token. (devstack fault injection: unauthorized)")
        elif (message := self._auth_error(scope)) is not None:
            response = error_response(401, message)
        elif is_api and self._faults.take("rate_limit"):
            response = error_response(
                429, "Too many requests. (devstack fault injection: rate_limit)", headers={"Retry-After": "1"}
            )
        else:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)


def ok(data: Any, *, extra: Mapping[str, Any] | None = None) -> JSONResponse:
    return JSONResponse(envelope(data, extra=extra))


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise invalid(f"the body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise invalid("the body must be a JSON object")
    return body


def _int_param(request: Request, name: str, default: int | None, *, maximum: int | None = None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or (maximum is not None and int(raw) > maximum):
        bounds = f"0..{maximum}" if maximum is not None else ">= 0"
        raise invalid(f"query parameter {name}={raw!r} must be an integer {bounds}")
    return int(raw)


def _json_list_param(request: Request, name: str) -> list[Any] | None:
    """``status__in=[1,2,3]``, ``finished_at__range=["2026-01-01T00:00:00+00:00", "..."]``: JSON lists."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise invalid(f"query parameter {name}={raw!r} is not a JSON list: {exc}") from exc
    if not isinstance(value, list):
        raise invalid(f"query parameter {name}={raw!r} must be a JSON list")
    return value


def _datetime(value: object, name: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise invalid(f"{name}: {value!r} is not an ISO 8601 timestamp") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _run_filter(request: Request) -> RunFilter:
    statuses = _json_list_param(request, "status__in")
    if (single := _int_param(request, "status", None)) is not None:
        statuses = [*(statuses or []), single]
    if statuses is not None and not all(isinstance(s, int) and not isinstance(s, bool) for s in statuses):
        raise invalid(f"status__in must list status codes (1, 2, 3, 10, 20, 30), got {statuses!r}")
    bounds = _json_list_param(request, "finished_at__range")
    if bounds is not None and len(bounds) != 2:
        raise invalid(f"finished_at__range must be [lower, upper], got {bounds!r}")
    return RunFilter(
        project_id=_int_param(request, "project_id", None),
        environment_id=_int_param(request, "environment_id", None),
        job_definition_id=_int_param(request, "job_definition_id", None),
        statuses=frozenset(statuses) if statuses is not None else None,
        finished_between=(
            (_datetime(bounds[0], "finished_at__range"), _datetime(bounds[1], "finished_at__range"))
            if bounds is not None
            else None
        ),
    )


def _include_related(request: Request) -> set[str]:
    raw = request.query_params.get("include_related", "")
    names = {name.strip(" []\"'") for name in raw.split(",")} - {""}
    if unknown := names - INCLUDABLE:
        raise invalid(f"include_related: unknown {sorted(unknown)}; known: {sorted(INCLUDABLE)}")
    return names


def _page(request: Request, items: Sequence[Any]) -> tuple[Sequence[Any], dict[str, Any]]:
    limit = _int_param(request, "limit", MAX_PAGE_LIMIT, maximum=MAX_PAGE_LIMIT) or MAX_PAGE_LIMIT
    offset = _int_param(request, "offset", 0) or 0
    page = items[offset : offset + limit]
    extra = {
        "filters": {key: value for key, value in request.query_params.items() if key not in ("limit", "offset")},
        "order_by": request.query_params.get("order_by", "id"),
        "pagination": {"count": len(page), "total_count": len(items)},
    }
    return page, extra


def _artifact_paths(target: Path) -> list[str]:
    if not target.is_dir():
        return []
    return sorted(path.relative_to(target).as_posix() for path in target.rglob("*") if path.is_file())


def create_app(
    project_dir: str | Path,
    profiles_dir: str | Path,
    data_dir: str | Path,
    token: str | None,
    *,
    seed: Seed | None = None,
    jobs: Sequence[Mapping[str, Any]] = (),
    faults: FaultConfig | None = None,
    env: Mapping[str, str] | None = None,
) -> Starlette:
    """The dbt Cloud stand-in; its runs execute dbt in `project_dir` with `profiles_dir`, keeping each run's files
    under `data_dir`/runs/<id>. `token=None` disables auth.

    `seed` names the account, project and environment (ids 1 by default); `jobs` are created at start (see
    `seed_jobs`); `faults` switches on fault injection (``PUT /_devstack/faults`` changes it at runtime); `env`
    goes over the server's own environment for the dbt commands. ``app.state`` has `workspace`, `faults` and
    `workers`, for tests.
    """
    seed = seed or Seed()
    workspace = Workspace(seed)
    seed_jobs(workspace, jobs)
    injector = FaultInjector(faults)
    setup = DbtSetup(Path(project_dir).resolve(), Path(profiles_dir).resolve(), Path(data_dir).resolve(), env)
    workers = RunWorkers(workspace, injector, setup)
    requests: Counter[str] = Counter()

    def base_url(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    def check_account(request: Request) -> None:
        if request.path_params["account_id"] != seed.account_id:
            raise not_found(f"Account {request.path_params['account_id']}")

    def get_job(request: Request) -> Job:
        check_account(request)
        job = workspace.job(request.path_params["job_id"])
        if job is None:
            raise not_found(f"Job {request.path_params['job_id']}")
        return job

    def get_run(request: Request) -> Run:
        check_account(request)
        run = workspace.run(request.path_params["run_id"])
        if run is None:
            raise not_found(f"Run {request.path_params['run_id']}")
        return run

    def run_json(request: Request, run: Run, include: Collection[str] = ()) -> dict[str, Any]:
        with workspace.lock:  # a consistent snapshot: the run's worker moves it on under the same lock
            return run.to_json(base_url=base_url(request), job=workspace.job(run.job_definition_id), include=include)

    async def account(request: Request) -> Response:
        check_account(request)
        return ok(workspace.account_json())

    async def project(request: Request) -> Response:
        check_account(request)
        if (data := workspace.project_json(request.path_params["project_id"])) is None:
            raise not_found(f"Project {request.path_params['project_id']}")
        return ok(data)

    async def environment(request: Request) -> Response:
        check_account(request)
        if (data := workspace.environment_json(request.path_params["environment_id"])) is None:
            raise not_found(f"Environment {request.path_params['environment_id']}")
        return ok(data)

    async def list_jobs(request: Request) -> Response:
        check_account(request)
        found = workspace.jobs(
            project_id=_int_param(request, "project_id", None),
            environment_id=_int_param(request, "environment_id", None),
        )
        page, extra = _page(request, found)
        return ok([job.to_json() for job in page], extra=extra)

    async def create_job(request: Request) -> Response:
        check_account(request)
        body = await _json_body(request)
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise invalid("`name` is required")
        if body.get("account_id", seed.account_id) != seed.account_id:
            raise invalid(f"account_id {body['account_id']!r} is not this account ({seed.account_id})")
        project_id, environment_id = body.get("project_id"), body.get("environment_id")
        if project_id != seed.project_id or environment_id != seed.environment_id:
            raise invalid(
                f"project_id={project_id!r}, environment_id={environment_id!r}: this account has project "
                f"{seed.project_id} with environment {seed.environment_id}"
            )
        steps = body.get("execute_steps") or ["dbt build"]
        if not isinstance(steps, list) or not all(isinstance(step, str) for step in steps):
            raise invalid("execute_steps must be a list of dbt commands")
        schedule = body.get("schedule") or {}
        triggers = body.get("triggers") or {}
        job = workspace.create_job(
            name=name,
            project_id=project_id,
            environment_id=environment_id,
            description=str(body.get("description") or ""),
            execute_steps=steps,
            job_type=str(body.get("job_type") or "other"),
            cron=str(schedule.get("cron") or "0 6 * * *"),
            schedule_enabled=bool(triggers.get("schedule", False)),
        )
        logger.info("created job %d %r", job.id, job.name)
        return JSONResponse(envelope(job.to_json(), code=201), status_code=201)

    async def job_detail(request: Request) -> Response:
        return ok(get_job(request).to_json())

    async def delete_job(request: Request) -> Response:
        job = get_job(request)
        workspace.delete_job(job.id)
        return ok(job.to_json())

    async def trigger_run(request: Request) -> Response:
        job = get_job(request)
        body = await _json_body(request)
        cause = body.get("cause")
        if not isinstance(cause, str) or not cause:
            raise invalid("`cause` is required: why the run was triggered")
        steps_override = body.get("steps_override")
        if steps_override is not None and (
            not isinstance(steps_override, list) or not all(isinstance(step, str) for step in steps_override)
        ):
            raise invalid("steps_override must be a list of dbt commands")
        run = workspace.add_run(job, cause=cause, steps_override=steps_override)
        queued = run_json(request, run, {"trigger", "job"})  # as dbt Cloud answers: queued, whatever comes next
        workers.submit(run)
        logger.info("run %d of job %d triggered: %s", run.id, job.id, run.steps)
        return ok(queued)

    async def list_runs(request: Request) -> Response:
        check_account(request)
        order_by = request.query_params.get("order_by", "id")
        if order_by.removeprefix("-") not in RUN_ORDERINGS:
            raise invalid(f"order_by={order_by!r}: one of {list(RUN_ORDERINGS)}, optionally prefixed with -")
        include = _include_related(request)
        page, extra = _page(request, workspace.runs(_run_filter(request), order_by=order_by))
        return ok([run_json(request, run, include) for run in page], extra=extra)

    async def run_detail(request: Request) -> Response:
        run = get_run(request)
        include = _include_related(request)
        if injector.take("poll_500"):
            return error_response(500, "Internal server error. (devstack fault injection: poll_500)")
        return ok(run_json(request, run, include))

    async def run_page(request: Request) -> Response:
        run = workspace.run(request.path_params["run_id"])
        if run is None or request.path_params["account_id"] != seed.account_id:
            return HTMLResponse(f"<p>No run {request.path_params['run_id']} in this stand-in.</p>", status_code=404)
        return HTMLResponse(render_run_page(run_json(request, run, ("run_steps", "trigger", "job"))))

    async def cancel_run(request: Request) -> Response:
        run = get_run(request)
        workers.cancel(run)
        return ok(run_json(request, run))

    async def list_artifacts(request: Request) -> Response:
        run = get_run(request)
        paths = await run_in_threadpool(_artifact_paths, setup.target_dir(run.id)) if run.artifacts_saved else []
        return ok(paths)

    async def get_artifact(request: Request) -> Response:
        run = get_run(request)
        relative: str = request.path_params["path"]
        target = setup.target_dir(run.id)
        path = (target / relative).resolve()
        if not run.artifacts_saved or not path.is_relative_to(target) or not path.is_file():
            raise not_found(f"Artifact {relative!r} of run {run.id}")
        content = await run_in_threadpool(path.read_bytes)
        media_type = "application/json" if path.suffix == ".json" else "text/plain"
        return Response(content, media_type=media_type)

    async def faults_endpoint(request: Request) -> Response:
        if request.method == "PUT":
            injector.configure(FaultConfig.from_json(await _json_body(request)))
        return JSONResponse(injector.config.to_json())

    async def stats(request: Request) -> Response:
        return JSONResponse({**workspace.stats(), "requests": dict(requests)})

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def on_dbt_cloud_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, DbtCloudError)
        logger.info("%s %s -> %d: %s", request.method, request.url.path, exc.status_code, exc.message)
        return error_response(exc.status_code, exc.message)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return error_response(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", exc.headers)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(workers.shutdown)

    accounts = "/api/v2/accounts/{account_id:int}"
    routes = [
        Route(accounts, account, methods=["GET"]),
        Route(f"{accounts}/", account, methods=["GET"]),
        Route(f"{accounts}/projects/{{project_id:int}}", project, methods=["GET"]),
        Route(f"{accounts}/environments/{{environment_id:int}}", environment, methods=["GET"]),
        Route(f"{accounts}/jobs", list_jobs, methods=["GET"]),
        Route(f"{accounts}/jobs", create_job, methods=["POST"]),
        Route(f"{accounts}/jobs/{{job_id:int}}", job_detail, methods=["GET"]),
        Route(f"{accounts}/jobs/{{job_id:int}}", delete_job, methods=["DELETE"]),
        Route(f"{accounts}/jobs/{{job_id:int}}/run", trigger_run, methods=["POST"]),
        Route(f"{accounts}/runs", list_runs, methods=["GET"]),
        Route(f"{accounts}/runs/{{run_id:int}}", run_detail, methods=["GET"]),
        Route(f"{accounts}/runs/{{run_id:int}}/cancel", cancel_run, methods=["POST"]),
        Route(f"{accounts}/runs/{{run_id:int}}/artifacts", list_artifacts, methods=["GET"]),
        Route(f"{accounts}/runs/{{run_id:int}}/artifacts/{{path:path}}", get_artifact, methods=["GET"]),
        Route("/_devstack/faults", faults_endpoint, methods=["GET", "PUT"]),
        Route("/_devstack/stats", stats, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/deploy/{account_id:int}/projects/{project_id:int}/runs/{run_id:int}", run_page, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(ApiGate, token=token, faults=injector, routes=routes, requests=requests)],
        exception_handlers={DbtCloudError: on_dbt_cloud_error, HTTPException: on_http_error},
        lifespan=lifespan,
    )
    app.state.workspace = workspace
    app.state.faults = injector
    app.state.workers = workers
    return app


#: dbt's colours in the logs (ANSI escape sequences), which a page shows as `[0m` litter
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def render_run_page(run: Mapping[str, Any]) -> str:
    """A dbt Cloud run as a plain page: status, job, cause, times, and each step with its log."""

    def e(text: str) -> str:
        return html.escape(ANSI_ESCAPE.sub("", text))

    job = run.get("job") or {}
    trigger = run.get("trigger") or {}
    refresh = '<meta http-equiv="refresh" content="3">' if run.get("in_progress") else ""
    steps = "".join(
        f"<h3>{e(str(step['index']))}. {e(step['name'])}: {e(step['status_humanized'])} ({e(step['duration'])})</h3>"
        f"<pre>{e(step.get('logs') or '')}</pre>"
        for step in run.get("run_steps") or []
    )
    message = f"<p>{e(run['status_message'])}</p>" if run.get("status_message") else ""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'>{refresh}<title>Run #{run['id']}: "
        f"{e(run['status_humanized'])} (dbt Cloud stand-in)</title>"
        "<style>body{font-family:sans-serif;margin:2em}pre{background:#f4f4f4;padding:1em;overflow-x:auto}</style>"
        f"</head><body><h1>Run #{run['id']}: {e(run['status_humanized'])}</h1>"
        f"<p>Job {run['job_definition_id']} {e(job.get('name') or '')} · cause: {e(trigger.get('cause') or '')}"
        f" · started {e(str(run.get('started_at') or 'not yet'))} · took {e(run['duration_humanized'])}</p>"
        f"{message}<h2>Steps</h2>{steps or '<p>None yet.</p>'}"
        "<p><small>The local dbt Cloud stand-in (devstack/dbt_cloud), not dbt Cloud.</small></p></body></html>"
    )
