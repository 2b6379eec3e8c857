"""Library internals are used in one place: pipeline/fastpaths/ (behind PIPELINE_FAST_PATHS), plus the few that
behaviour needs, listed here and in the README ("Fast paths"). A new use elsewhere fails this test: put it in
pipeline/fastpaths/ behind the switch, or add it below and to the README with the reason."""

from __future__ import annotations

import ast
from pathlib import Path

from pipeline.core.settings import REPO_ROOT

PIPELINE = REPO_ROOT / "pipeline"
LIBRARIES = ("dagster", "dagster_dbt", "dbt", "dbt_common")

#: file -> the internals it may use outside pipeline/fastpaths/ (the README says why each is needed)
ALLOWED = {
    "run_launcher.py": {"dagster._core.launcher"},
    "automation/freshness.py": {"dagster._time", "dagster._utils.schedules"},
    "automation/alerts.py": {"dagster._core.execution.plan.objects"},
    "transformation/assets.py": {"_get_result_check_keys", "_get_check_properties", "_stream_stdout"},
    "transformation/dbt_launcher.py": {"_ENV"},
    "transformation/project.py": {
        "dbt.clients.yaml_helper",
        "dbt.config.profile",
        "dbt.config.renderer",
        "dbt_common.context",
    },
}


def internals(path: Path) -> set[str]:
    """Private modules imported (`dagster._core...`, dbt's non-CLI modules) and private attributes read on
    anything but self/cls/super()."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in LIBRARIES:
            module = node.module
            if any(part.startswith("_") for part in module.split(".")) or (
                module.split(".")[0] in ("dbt", "dbt_common")
                and not module.startswith("dbt.cli")
                and not module.startswith("dbt.adapters")
            ):
                found.add(module)
            found.update(a.name for a in node.names if a.name.startswith("_"))
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super":
                continue
            found.add(node.attr)
    return found


def test_internals_are_used_only_in_the_fast_paths_or_where_listed():
    unexpected = {}
    for path in sorted(PIPELINE.rglob("*.py")):
        relative = path.relative_to(PIPELINE).as_posix()
        if relative.startswith("fastpaths/"):
            continue
        extra = internals(path) - ALLOWED.get(relative, set())
        if extra:
            unexpected[relative] = sorted(extra)
    assert not unexpected, f"library internals outside pipeline/fastpaths/: {unexpected}"


def test_the_fast_paths_do_use_internals():
    """The check above finds what it looks for (it would pass on a scanner that finds nothing)."""
    assert "dagster._core.execution.context.data_version_cache" in internals(PIPELINE / "fastpaths/dagster_patches.py")
    assert "_SELECTION_ARGS_THRESHOLD" in internals(PIPELINE / "fastpaths/dagster_dbt.py")
    assert {"_ENV"} <= internals(PIPELINE / "transformation/dbt_launcher.py")


def test_the_internals_behaviour_needs_are_still_there():
    """Fails when an upgrade removes one of the internals listed in ALLOWED (they are used whatever the switch says):
    find the replacement before the upgrade lands."""
    import inspect

    from dagster._core.execution.plan.objects import StepFailureData
    from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
    from dagster._time import get_current_timestamp
    from dagster._utils.schedules import get_latest_completed_cron_tick, get_next_cron_tick
    from dagster_dbt import DbtCliInvocation
    from dagster_dbt.core.dbt_cli_event import DbtCoreCliEventMessage
    from dbt.clients.yaml_helper import load_yaml_text
    from dbt.config.profile import Profile, read_profile
    from dbt.config.renderer import ProfileRenderer
    from dbt_common.context import set_invocation_context

    assert {"RUNNING", "NOT_FOUND"} <= set(WorkerStatus.__members__)
    assert callable(CheckRunHealthResult) and callable(StepFailureData) and callable(get_current_timestamp)
    assert list(inspect.signature(get_next_cron_tick).parameters) == ["cron_string", "current_time", "timezone"]
    assert callable(get_latest_completed_cron_tick)
    assert callable(DbtCoreCliEventMessage._get_check_properties)
    assert callable(DbtCoreCliEventMessage._get_result_check_keys)
    assert callable(DbtCliInvocation._stream_stdout)  # marked @public by dagster-dbt despite its name
    assert callable(Profile.render_profile) and callable(read_profile) and callable(load_yaml_text)
    assert callable(ProfileRenderer) and callable(set_invocation_context)
    # transformation/cloud.py overrides the dbt Cloud client's session builders (retries, refused tokens): every
    # request must still go through them
    from dagster_dbt.cloud_v2.client import DbtCloudWorkspaceClient

    client_code = inspect.getsource(DbtCloudWorkspaceClient)
    assert "session = getattr(self, session_attr)()" in inspect.getsource(DbtCloudWorkspaceClient._make_request)
    assert 'session_attr="_get_artifact_session"' in client_code and "requests.get(" not in client_code
    assert callable(DbtCloudWorkspaceClient._get_session) and callable(DbtCloudWorkspaceClient._get_artifact_session)
