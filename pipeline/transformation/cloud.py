"""dbt Cloud as the transformation engine: the project's nodes are the same assets and checks as on dbt Core, built
by dbt Cloud runs that Dagster triggers, waits for and reads back.

Set DBT_CLOUD_ACCOUNT_ID (with the project, the environment and DBT_CLOUD_TOKEN) and `transformation_defs` builds
this stage instead of the dbt Core one. Everything comes from dagster-dbt's dbt Cloud integration:

- `DbtCloudWorkspace` parses the project in dbt Cloud when the code location loads (a `dbt parse` run of the job
  Dagster triggers) and keeps the manifest with the definitions, so run workers do not parse again;
- `load_dbt_cloud_asset_specs` / `load_dbt_cloud_check_specs` turn that manifest into specs through our
  `PipelineTranslator`: the same keys (sources wired to the raw tables by `meta.dagster.asset_key`), groups from
  folders, owners from `meta`, automation conditions and dbt tests as checks, so the syncs' gates, the freshness
  checks and the alerts work unchanged;
- `DbtCloudWorkspace.cli` triggers `dbt build` with the step's selection and turns `run_results.json` into events;
- the polling sensor records the runs dbt Cloud's own scheduler (or a person) starts: dagster-dbt's
  `build_dbt_cloud_polling_sensor`, with the tests' results recorded too (`dbt_cloud_run_sensor` says why).

What is ours is how the job is operated, as teams do it around dbt Cloud with Airflow or Kestra: a run of the job
already in progress is waited for (or the step skips, DBT_CLOUD_IF_RUNNING) instead of queueing a second; the run
is polled every DBT_CLOUD_POLL_INTERVAL_SECONDS up to DBT_CLOUD_TIMEOUT_SECONDS, then cancelled; a failed run
fails the step with its URL and the failed nodes with their messages; the API's transient errors are retried with
backoff and a refused token fails at once (`RetryingDbtCloudClient`); each run's manifest.json and run_results.json
are kept in DBT_ARTIFACTS_URL like dbt Core's.

`@dbt_cloud_assets` is the same multi-asset as `dbt_cloud_multi_asset` below, which spells it out only to add what
the decorator takes no parameter for: the `warehouse` pool (the run writes the warehouse the raw loads write) and a
retry policy.
"""

import json
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import requests
from dagster_dbt import (
    DbtCloudCredentials,
    DbtCloudWorkspace,
    load_dbt_cloud_asset_specs,
    load_dbt_cloud_check_specs,
)
from dagster_dbt.asset_utils import (
    DAGSTER_DBT_EXCLUDE_METADATA_KEY,
    DAGSTER_DBT_SELECT_METADATA_KEY,
    DAGSTER_DBT_SELECTOR_METADATA_KEY,
)
from dagster_dbt.cloud_v2.client import DbtCloudWorkspaceClient
from dagster_dbt.cloud_v2.resources import DAGSTER_ADHOC_PREFIX
from dagster_dbt.cloud_v2.run_handler import DbtCloudJobRunResults
from dagster_dbt.cloud_v2.sensor_builder import (
    MAIN_LOOP_TIMEOUT_SECONDS,
    START_LOOKBACK_SECONDS,
    DbtCloudPollingSensorCursor,
    sorted_asset_events,
)
from dagster_dbt.cloud_v2.types import DbtCloudJobRunStatusType, DbtCloudRun, DbtCloudWorkspaceData
from urllib3.util.retry import Retry

from ..automation.conditions import dbt_depth
from ..core.resources import DbtArtifactsResource
from ..core.settings import WAREHOUSE_POOL, DbtCloudSettings, Settings
from .artifacts import ArtifactStore
from .assets import DbtStage, external_source_specs, seed_fed_sources
from .cloud_jobs import load_schedules
from .translator import PipelineTranslator

#: Retried, with exponential backoff and dbt Cloud's Retry-After: rate limits and server errors, which pass.
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
#: A refused token or a token without the permission: retrying cannot help, the token setting must change.
AUTH_STATUSES = frozenset({401, 403})
UNFINISHED_RESULTS = ("error", "fail", "runtime error")


class DbtCloudApiError(dg.Failure):
    """dbt Cloud's API refused a request, or kept failing after the retries: the message says which and what to do."""


class _DbtCloudRetry(Retry):
    """urllib3's retry with one exception: a POST (trigger a run, cancel, create the job) is repeated only after a
    429, which dbt Cloud answers before doing anything. After a 5xx the run may have been started: a second trigger
    could start a second run, so that error goes to the step instead."""

    def is_retry(self, method: str, status_code: int, has_retry_after: bool = False) -> bool:
        if method.upper() == "POST":
            return status_code == 429 and bool(self.total)
        return super().is_retry(method, status_code, has_retry_after)


class _ReachingAdapter(requests.adapters.HTTPAdapter):
    """Once urllib3 has retried, a server that cannot be reached (refused, unknown host, timed out) is a
    `DbtCloudApiError` naming the address and DBT_CLOUD_URL: the library would report only `Max retries (0)`."""

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        try:
            return super().send(request, *args, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as exc:
            reason = getattr(exc.args[0], "reason", None) if exc.args else None
            raise DbtCloudApiError(
                f"dbt Cloud could not be reached at {request.url} ({reason or exc}) after retries with backoff:"
                " check DBT_CLOUD_URL (your account's access URL, e.g. https://ACCOUNT_PREFIX.us1.dbt.com) and the"
                " network. Under `make dev DBT_ENGINE=cloud` the local stand-in must be running."
            ) from exc


class RetryingDbtCloudClient(DbtCloudWorkspaceClient):
    """dagster-dbt's dbt Cloud client, with its HTTP sessions retrying what is transient and failing at once on what
    is not.

    The library retries every failed request the same way (`request_max_retries` times, a fixed delay), a 401 as
    much as a 503, and reports `Max retries exceeded` without the status. Its requests all go through the session
    `_get_session` / `_get_artifact_session` build (README, "Fast paths": internals behaviour needs), so the
    sessions here carry urllib3's `Retry` (429 and 5xx with exponential backoff, capped, honouring Retry-After;
    connection errors and read timeouts on GETs) and a response hook that turns what is left into a
    `DbtCloudApiError` naming the status, the request and the setting to fix.
    """

    retries: int = 5
    backoff_seconds: float = 1.0
    token_variable: str = "DBT_CLOUD_TOKEN"

    def _get_session(self) -> requests.Session:
        return self._with_retries(super()._get_session())

    def _get_artifact_session(self) -> requests.Session:
        return self._with_retries(super()._get_artifact_session())

    def _with_retries(self, session: requests.Session) -> requests.Session:
        retry = _DbtCloudRetry(
            total=self.retries,
            connect=self.retries,
            read=self.retries,
            status=self.retries,
            backoff_factor=self.backoff_seconds,
            backoff_max=30,
            status_forcelist=TRANSIENT_STATUSES,
            allowed_methods=frozenset({"GET", "HEAD", "DELETE"}),
            respect_retry_after_header=True,
            raise_on_status=False,  # the hook below reports the last answer
        )
        adapter = _ReachingAdapter(max_retries=retry)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.hooks["response"].append(self._refused)
        return session

    def _refused(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        status, request = response.status_code, response.request
        where = f"{request.method} {request.url}"
        body = response.text[:300].strip()
        if status in AUTH_STATUSES:
            raise DbtCloudApiError(
                f"dbt Cloud refused the token ({status} {response.reason}) for {where}: set {self.token_variable} to"
                f" a service token of account {self.account_id} with the Job Admin permission (or a personal token"
                " with access to the project). Not retried.",
                allow_retries=False,
            )
        if status in TRANSIENT_STATUSES:
            tried = (
                "not repeated (the run may have started)"
                if request.method == "POST" and status != 429
                else (f"after {self.retries} retries with backoff")
            )
            raise DbtCloudApiError(f"dbt Cloud answered {status} {response.reason} to {where}, {tried}: {body}")


class PipelineDbtCloudWorkspace(DbtCloudWorkspace):
    """dagster-dbt's workspace with our client, and one `dbt parse` run in dbt Cloud per definitions load.

    The library fetches the workspace (creates the job, runs `dbt parse`, downloads the manifest) once per resource
    object, and copies the resource while it builds the specs: a load would parse twice, and so would the polling
    sensor's first tick. `fetch_workspace_data` is therefore shared within a process until the next load starts
    (`forget_fetched`); run workers never fetch (the definitions carry the manifest).
    """

    token_variable: str = "DBT_CLOUD_TOKEN"

    def get_client(self) -> DbtCloudWorkspaceClient:
        return RetryingDbtCloudClient(
            account_id=self.credentials.account_id,
            token=self.credentials.token,
            access_url=self.credentials.access_url,
            request_max_retries=0,  # the session retries (above); the library's own loop would repeat a refusal
            request_retry_delay=self.request_retry_delay,
            request_timeout=self.request_timeout,
            token_variable=self.token_variable,
        )

    def fetch_workspace_data(self) -> DbtCloudWorkspaceData:
        key = (self.credentials.access_url, self.credentials.account_id, self.unique_id, self.adhoc_job_name)
        with _FETCH_LOCK:
            if key not in _FETCHED:
                _FETCHED[key] = super().fetch_workspace_data()
            return _FETCHED[key]


_FETCHED: dict[tuple[Any, ...], DbtCloudWorkspaceData] = {}
_FETCH_LOCK = threading.Lock()


def forget_fetched() -> None:
    with _FETCH_LOCK:
        _FETCHED.clear()


def dbt_cloud_workspace(cloud: DbtCloudSettings) -> PipelineDbtCloudWorkspace:
    return PipelineDbtCloudWorkspace(
        credentials=DbtCloudCredentials(
            account_id=cloud.account_id,
            # DbtCloudCredentials is a plain tuple the library reads when the code location loads (it parses the
            # project then), so the token is read here; it never goes into run config, tags, logs or metadata.
            token=dg.EnvVar(cloud.token_variable).get_value() or "",
            access_url=cloud.url,
        ),
        project_id=cloud.project_id,
        environment_id=cloud.environment_id,
        adhoc_job_name=cloud.job_name,
        token_variable=cloud.token_variable,
    )


# --- operating the job ------------------------------------------------------------------------------------------


def run_url(client: DbtCloudWorkspaceClient, run_id: int) -> str:
    return DbtCloudRun.from_run_details(client.get_run_details(run_id)).url or f"dbt Cloud run {run_id}"


def wait_until_idle(
    client: DbtCloudWorkspaceClient, cloud: DbtCloudSettings, job_id: int, log: Any, deadline: float
) -> bool:
    """True once the job has no run queued, starting or running; False if it still has one at `deadline`."""
    announced = False
    while client.get_active_job_ids(cloud.project_id, cloud.environment_id, [job_id]):
        if not announced:
            log.info(
                f"dbt Cloud job {job_id} already has a run in progress: waiting for it to end before triggering"
                f" (DBT_CLOUD_IF_RUNNING=wait), polling every {cloud.poll_interval_seconds:g} s"
            )
            announced = True
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(cloud.poll_interval_seconds, max(0.0, deadline - time.monotonic())))
    return True


def failed_nodes(run_results: Mapping[str, Any] | None) -> list[str]:
    """`- unique_id (status): message` of each node that errored or failed, from run_results.json."""
    lines = []
    for result in (run_results or {}).get("results", []):
        if result.get("status") in UNFINISHED_RESULTS:
            message = " ".join((result.get("message") or "").split())[:500]
            lines.append(f"- {result['unique_id']} ({result['status']}): {message}")
    return lines


def without_skipped_tests(events: Iterable[Any]) -> Iterator[Any]:
    """The events of a run's results, less the tests dbt skipped (an upstream node failed): dagster-dbt's dbt Cloud
    conversion reports them as failed checks (`passed` is `status == "pass"`), which would show checks that never
    ran as failed and keep the syncs' gates shut after the failure is fixed. Its dbt Core path records nothing for
    them, and neither does this."""
    for event in events:
        if isinstance(event, dg.AssetCheckResult | dg.AssetCheckEvaluation):
            status = (event.metadata or {}).get("status")
            if getattr(status, "value", status) == "skipped":
                continue
        yield event


def run_failure(client: DbtCloudWorkspaceClient, run_id: int, run_results: Mapping[str, Any] | None) -> dg.Failure:
    """The step's failure for a dbt Cloud run that errored or was cancelled: its URL, its status, and the nodes that
    failed with dbt's messages, or the step it failed in when dbt left no run_results.json."""
    details = client.get_run_details(run_id, include_related=["run_steps"])
    run = DbtCloudRun.from_run_details(details)
    status = details.get("status_humanized") or (run.status.name.lower() if run.status else "unknown")
    lines = [f"dbt Cloud run {run_id} ended {status}: {run.url or ''}".rstrip()]
    if details.get("status_message"):
        lines.append(f"dbt Cloud says: {details['status_message']}")
    nodes = failed_nodes(run_results)
    unfinished = [r for r in (run_results or {}).get("results", []) if r.get("status") in UNFINISHED_RESULTS]
    only_tests = bool(unfinished) and all(r.get("status") == "fail" for r in unfinished)
    if nodes:
        lines += [f"{len(nodes)} dbt nodes failed (run_results.json):", *nodes[:20]]
        if len(nodes) > 20:
            lines.append(f"... and {len(nodes) - 20} more")
    else:
        steps = [s for s in details.get("run_steps") or [] if (s.get("status_humanized") or "") not in ("Success", "")]
        lines.append("No run_results.json: the run ended before dbt built anything.")
        for step in steps[-1:]:
            tail = "\n".join((step.get("logs") or "").strip().splitlines()[-10:])
            lines.append(f"Step {step.get('name')!r} {step.get('status_humanized', '').lower()}:\n{tail}")
    if run.status == DbtCloudJobRunStatusType.CANCELLED:
        lines.append("Cancelled in dbt Cloud: not retried.")
    elif only_tests:
        lines.append("Only dbt tests failed: not retried, the data has to change first.")
    return dg.Failure(
        "\n".join(lines),
        metadata={"dbt_cloud_run_url": dg.MetadataValue.url(run.url) if run.url else run_id},
        allow_retries=not (only_tests or run.status == DbtCloudJobRunStatusType.CANCELLED),
    )


def keep_artifacts(
    store: ArtifactStore, client: DbtCloudWorkspaceClient, run_id: int, context: dg.AssetExecutionContext
) -> None:
    """The run's manifest.json and run_results.json, kept under the Dagster run and attempt like dbt Core's (a
    successful build's become `latest/`, slim CI's production state)."""
    try:
        available = set(client.list_run_artifacts(run_id))
        with tempfile.TemporaryDirectory() as folder:
            for name in ("manifest.json", "run_results.json"):
                if name in available:
                    Path(folder, name).write_text(json.dumps(client.get_run_artifact(run_id, name)))
            details = client.get_run_details(run_id)
            succeeded = details.get("status") == DbtCloudJobRunStatusType.SUCCESS
            saved = store.save(context.run_id, context.op.name, context.retry_number, Path(folder), succeeded=succeeded)
        context.log.info(f"dbt Cloud run {run_id}'s artifacts kept in {store.url}: {', '.join(saved) or 'none'}")
    except Exception as exc:  # the build's outcome stands: losing its artifacts is worth a warning, not a failure
        context.log.warning(f"Could not keep dbt Cloud run {run_id}'s artifacts: {exc}")


@dataclass(frozen=True)
class CloudStep:
    """What the step needs at run time: the workspace, the settings, the translator the specs were built with."""

    workspace: PipelineDbtCloudWorkspace
    cloud: DbtCloudSettings
    translator: PipelineTranslator

    def run(self, context: dg.AssetExecutionContext, store: ArtifactStore) -> Iterator[Any]:
        cloud, client = self.cloud, self.workspace.get_client()
        job_id = self.workspace.get_or_fetch_workspace_data().adhoc_job_ids[0]
        deadline = time.monotonic() + cloud.timeout_seconds
        if cloud.if_running == "skip":
            if client.get_active_job_ids(cloud.project_id, cloud.environment_id, [job_id]):
                context.log.warning(
                    f"Skipped: dbt Cloud job {job_id} already has a run in progress, and DBT_CLOUD_IF_RUNNING=skip. No"
                    " dbt Cloud run was triggered; nothing was built. The next run builds what changed meanwhile."
                )
                return
        elif not wait_until_idle(client, cloud, job_id, context.log, deadline):
            raise dg.Failure(
                f"dbt Cloud job {job_id} still had a run in progress after {cloud.timeout_seconds:g} s"
                " (DBT_CLOUD_TIMEOUT_SECONDS): no run was triggered. See the job's runs in dbt Cloud.",
                allow_retries=False,
            )
        # `buildable`, as on dbt Core (DBT_ENV_DEFAULTS): a subset's build runs a relationships test only when both
        # its models are selected or upstream, so a subset on a fresh warehouse does not test a model never built.
        # dagster-dbt's own --indirect-selection, when it selects tests itself, comes after this one and wins.
        args = ["build", "--indirect-selection", "buildable"]
        invocation = self.workspace.cli(args, dagster_dbt_translator=self.translator, context=context)
        run_id = invocation.run_handler.run_id
        context.log.info(f"Triggered dbt Cloud run {run_id} of job {job_id}: {run_url(client, run_id)}")
        try:
            self._wait(context, client, run_id, deadline)
            run_results: Mapping[str, Any] | None = None
            try:
                yield from without_skipped_tests(invocation.wait(timeout=max(1.0, deadline - time.monotonic())))
            except dg.Failure:
                if "run_results.json" in client.list_run_artifacts(run_id):
                    run_results = client.get_run_results_json(run_id)
                raise run_failure(client, run_id, run_results) from None
        finally:
            keep_artifacts(store, client, run_id, context)

    def _wait(self, context: dg.AssetExecutionContext, client: DbtCloudWorkspaceClient, run_id: int, deadline: float):
        """Until the run ends; cancelled in dbt Cloud past DBT_CLOUD_TIMEOUT_SECONDS (so it does not keep writing)."""
        timeout = max(1.0, deadline - time.monotonic())
        try:
            client.poll_run(run_id, poll_interval=self.cloud.poll_interval_seconds, poll_timeout=timeout)
        except dg.Failure:
            raise
        except Exception:
            if time.monotonic() < deadline:
                raise
            client.cancel_run(run_id)
            raise dg.Failure(
                f"dbt Cloud run {run_id} did not end within {self.cloud.timeout_seconds:g} s"
                f" (DBT_CLOUD_TIMEOUT_SECONDS), so it was cancelled: {run_url(client, run_id)}. Raise the timeout if"
                " the build is that long, or find out in dbt Cloud what held it up.",
                allow_retries=False,
            ) from None


# --- runs dbt Cloud started ----------------------------------------------------------------------------------------


def dbt_cloud_run_sensor(
    workspace: PipelineDbtCloudWorkspace, translator: PipelineTranslator, interval_seconds: int
) -> dg.SensorDefinition:
    """dagster-dbt's `build_dbt_cloud_polling_sensor` (same name, cursor, lookback and run filter: the runs of
    Dagster's own jobs are skipped), recording what it leaves out: the results of the run's tests as asset checks.

    The library's sensor records materializations only ("Currently, only materializations are tracked"), so a test
    that failed in a run dbt Cloud's scheduler started would not reach the syncs' gates, which would judge the
    rebuilt marts by the previous run's passing results. It also ends the tick's pass over the runs at the first
    run that built nothing (a `dbt test` job). Here every run is read, its materializations are recorded first
    (in graph order) and then its tests' results, so each judges the materialization just recorded.
    """
    name = f"dbt_cloud_{workspace.credentials.account_id}_{workspace.project_id}_{workspace.environment_id}"

    @dg.sensor(
        name=f"{name}__run_status_sensor",
        description=(
            f"Records the runs dbt Cloud starts itself (its scheduler, a person) in project {workspace.project_id},"
            f" environment {workspace.environment_id}: their models as materializations, their tests as checks."
        ),
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def dbt_cloud_run_status_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        try:
            cursor = dg.deserialize_value(context.cursor, DbtCloudPollingSensorCursor) if context.cursor else None
        except Exception:
            context.log.warning(f"Unreadable cursor {context.cursor!r}: starting from the last minute's runs")
            cursor = None
        cursor = cursor or DbtCloudPollingSensorCursor()
        started = time.time()
        lower = cursor.finished_at_lower_bound or started - START_LOOKBACK_SECONDS
        upper = cursor.finished_at_upper_bound or started
        offset = cursor.offset or 0
        client, data = workspace.get_client(), workspace.get_or_fetch_workspace_data()
        ours = {j["id"] for j in data.jobs if (j.get("name") or "").startswith(DAGSTER_ADHOC_PREFIX)}
        ours.update(data.adhoc_job_ids)
        repository = context.repository_def
        assert repository is not None, "a sensor of a code location"
        graph = repository.asset_graph
        materializations: list[Any] = []
        checks: list[Any] = []

        def out_of_time() -> bool:  # the rest waits for the next tick: the cursor keeps the offset
            return time.time() - started >= MAIN_LOOP_TIMEOUT_SECONDS

        done = False
        while not done and not out_of_time():
            runs, total = client.get_runs_batch(
                project_id=workspace.project_id,
                environment_id=workspace.environment_id,
                finished_at_lower_bound=datetime.fromtimestamp(lower, tz=UTC),
                finished_at_upper_bound=datetime.fromtimestamp(upper, tz=UTC),
                offset=offset,
            )
            for details in runs:
                if out_of_time():
                    break
                offset += 1
                built, tested = run_events(context, client, data, translator, graph, details, ours)
                materializations += built
                checks += tested
            else:
                done = not runs or offset >= total
        cursor = (
            DbtCloudPollingSensorCursor(finished_at_lower_bound=upper, finished_at_upper_bound=None, offset=0)
            if done
            else DbtCloudPollingSensorCursor(
                finished_at_lower_bound=lower, finished_at_upper_bound=upper, offset=offset
            )
        )
        context.update_cursor(dg.serialize_value(cursor))
        return dg.SensorResult(asset_events=[*sorted_asset_events(materializations, repository), *checks])

    return dbt_cloud_run_status_sensor


def run_events(
    context: dg.SensorEvaluationContext,
    client: DbtCloudWorkspaceClient,
    data: DbtCloudWorkspaceData,
    translator: PipelineTranslator,
    graph: Any,
    details: Mapping[str, Any],
    skip_job_ids: set[int],
) -> tuple[list[dg.AssetMaterialization], list[dg.AssetCheckEvaluation]]:
    """The materializations and test results of one finished dbt Cloud run (none for a run of Dagster's own job,
    recorded by its step, or a run that left no run_results.json), limited to the assets and checks of the graph."""
    run = DbtCloudRun.from_run_details(details)
    if run.job_definition_id in skip_job_ids:
        return [], []
    if "run_results.json" not in client.list_run_artifacts(run.id):
        context.log.info(f"dbt Cloud run {run.id} left no run_results.json: nothing to record")
        return [], []
    results = DbtCloudJobRunResults.from_run_results_json(client.get_run_results_json(run.id))
    events = list(
        without_skipped_tests(
            results.to_default_asset_events(client=client, manifest=data.manifest, dagster_dbt_translator=translator)
        )
    )
    built = [e for e in events if isinstance(e, dg.AssetMaterialization) and graph.has(e.asset_key)]
    tested = [
        e for e in events if isinstance(e, dg.AssetCheckEvaluation) and e.asset_check_key in graph.asset_check_keys
    ]
    failed = ", ".join(e.asset_check_key.name for e in tested if not e.passed)
    context.log.info(
        f"dbt Cloud run {run.id} (job {run.job_definition_id}): {len(built)} materializations, {len(tested)} test"
        f" results{'; failed: ' + failed if failed else ''}"
    )
    return built, tested


#: dbt Cloud is retried when a run errored (not when tests failed or it was cancelled: see `run_failure`).
DBT_CLOUD_RETRY = dg.RetryPolicy(max_retries=2, delay=30, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


def dbt_cloud_multi_asset(
    workspace: PipelineDbtCloudWorkspace,
    cloud: DbtCloudSettings,
    translator: PipelineTranslator,
    retry_policy: dg.RetryPolicy = DBT_CLOUD_RETRY,
) -> dg.AssetsDefinition:
    """What `@dbt_cloud_assets` builds (its specs, check specs and op tags, through the library's loaders), plus the
    `warehouse` pool and a retry policy, which the decorator has no parameter for."""
    selection = {"select": cloud.select, "exclude": cloud.exclude, "selector": ""}
    step = CloudStep(workspace, cloud, translator)

    @dg.multi_asset(
        name="dbt_cloud_build",
        specs=load_dbt_cloud_asset_specs(workspace, dagster_dbt_translator=translator, **selection),
        check_specs=load_dbt_cloud_check_specs(workspace, dagster_dbt_translator=translator, **selection),
        can_subset=True,
        op_tags={
            DAGSTER_DBT_SELECT_METADATA_KEY: cloud.select,
            DAGSTER_DBT_EXCLUDE_METADATA_KEY: cloud.exclude,
            DAGSTER_DBT_SELECTOR_METADATA_KEY: "",
        },
        pool=WAREHOUSE_POOL,
        retry_policy=retry_policy,
    )
    def dbt_cloud_build(context: dg.AssetExecutionContext, dbt_artifacts: DbtArtifactsResource) -> Iterator[Any]:
        """`dbt build` of the selected nodes as a dbt Cloud run; holds the `warehouse` slot while it runs."""
        yield from step.run(context, ArtifactStore(dbt_artifacts.store()))

    return dbt_cloud_build


def cloud_transformation_defs(settings: Settings, ingested: set[dg.AssetKey]) -> DbtStage:
    """The dbt stage on dbt Cloud: the project's nodes as assets built by dbt Cloud runs, the sources no ingestion
    asset feeds as external assets (as on dbt Core), the polling sensor, and the imported job schedules."""
    cloud = settings.dbt_cloud
    assert cloud is not None, "DBT_CLOUD_ACCOUNT_ID is not set: dbt Core runs the project"
    forget_fetched()  # a new load: parse the project in dbt Cloud once more
    workspace = dbt_cloud_workspace(cloud)
    manifest = dict(workspace.get_or_fetch_workspace_data().manifest)
    fed = seed_fed_sources(manifest)
    translator = PipelineTranslator(depth=dbt_depth(manifest), seed_of_source=fed)

    def key_of(unique_id: str) -> dg.AssetKey:
        return translator.get_asset_spec(manifest, fed.get(unique_id, unique_id), None).key

    assets = dbt_cloud_multi_asset(workspace, cloud, translator)
    sensor = dbt_cloud_run_sensor(workspace, translator, cloud.sensor_interval_seconds)
    jobs, schedules = load_schedules(cloud.schedules_path, manifest, translator)
    return DbtStage(
        defs=dg.Definitions(
            assets=[assets, *external_source_specs(manifest, key_of, ingested, skip=fed.keys())],
            sensors=[sensor],
            jobs=jobs,
            schedules=schedules,
        ),
        manifest=manifest,
        key_of=key_of,
        depth=dbt_depth(manifest),
    )
