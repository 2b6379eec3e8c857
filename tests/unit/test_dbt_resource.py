"""PipelineDbtCliResource: the dbt version without `dbt --version`, the adapter handle built while dbt runs."""

from importlib import metadata
from pathlib import Path

import pytest
from dagster_dbt import DbtCliResource
from packaging import version

from pipeline import fastpaths
from pipeline.fastpaths import dagster_dbt as fast_dbt
from pipeline.fastpaths.dagster_dbt import installed_dbt_core_version
from pipeline.transformation.project import PipelineDbtCliResource, dbt_executable


@pytest.fixture
def project_dir(tmp_path):
    (tmp_path / "dbt_project.yml").write_text("name: p\nprofile: p\n")
    return tmp_path


@pytest.mark.fastpaths
def test_the_dagster_dbt_members_we_override_still_exist():
    # If dagster-dbt renames these, our overrides silently stop applying: pin-bump work, see the class docstring.
    assert isinstance(DbtCliResource.__dict__["_cli_version"], fast_dbt.cached_property)
    assert callable(DbtCliResource._initialize_dbt_core_adapter)
    # ... and the ones the dbt assets and dbt_launcher.py read: dagster-dbt's stdout reader, dbt-duckdb's database.
    from dagster_dbt import DbtCliInvocation
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    assert callable(DbtCliInvocation._stream_stdout)
    assert "_ENV" in vars(DuckDBConnectionManager)
    # ... and dagster-dbt's subset selection, which a large subset run uses without its project copy.
    import inspect

    from dagster_dbt import asset_utils

    assert asset_utils._SELECTION_ARGS_THRESHOLD == 200
    assert {"context", "manifest", "select", "exclude", "selector", "dagster_dbt_translator"} <= set(
        inspect.signature(asset_utils.get_subset_selection_for_context).parameters
    )


def test_version_of_this_environments_dbt_comes_from_package_metadata():
    assert installed_dbt_core_version(dbt_executable()) == version.parse(metadata.version("dbt-core"))
    assert installed_dbt_core_version("/bin/sh") is None
    assert installed_dbt_core_version("no-such-dbt-anywhere") is None


@pytest.mark.fastpaths
def test_no_dbt_version_subprocess(monkeypatch, project_dir):
    def forbidden(*args, **kwargs):
        raise AssertionError("dbt --version was run")

    monkeypatch.setattr("dagster_dbt.core.resource.check_output", forbidden)
    resource = PipelineDbtCliResource(project_dir=str(project_dir), dbt_executable=dbt_executable())
    assert resource._cli_version == version.parse(metadata.version("dbt-core"))


def test_another_executable_is_still_asked(monkeypatch, project_dir):
    monkeypatch.setattr("dagster_dbt.core.resource.check_output", lambda *a, **k: b"Core:\n  - installed: 9.8.7\n")
    fake = project_dir / "dbt"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    resource = PipelineDbtCliResource(project_dir=str(project_dir), dbt_executable=str(fake))
    assert resource._cli_version == version.parse("9.8.7")


@pytest.mark.fastpaths
@pytest.mark.parametrize("deferred", [True, False])
def test_adapter_is_deferred_only_inside_cli(monkeypatch, project_dir, deferred):
    calls = []
    monkeypatch.setattr(DbtCliResource, "_initialize_dbt_core_adapter", lambda self, args: calls.append(args) or "A")
    resource = PipelineDbtCliResource(project_dir=str(project_dir), dbt_executable=dbt_executable())
    if deferred:
        with fast_dbt._adapter_after_start():
            assert resource._initialize_dbt_core_adapter(["build"]) is None
        assert calls == []
    else:
        assert resource._initialize_dbt_core_adapter(["build"]) == "A" and calls == [["build"]]


def profile(project_dir, output: str) -> None:
    (project_dir / "profiles.yml").write_text(f"p:\n  target: dev\n  outputs:\n    dev:\n{output}")


def test_the_duckdb_file_is_read_from_the_profile_without_an_adapter(monkeypatch, project_dir):
    """On DuckDB the resource knows the warehouse file from the rendered profile (env_var() included; relative to
    the project folder, where dbt runs) and builds no adapter handle, inside `cli` or out."""
    monkeypatch.setenv("BENCH_WAREHOUSE", "data/w.duckdb")
    profile(project_dir, "      type: duckdb\n      path: \"{{ env_var('BENCH_WAREHOUSE') }}\"\n")
    monkeypatch.setattr(DbtCliResource, "_initialize_dbt_core_adapter", lambda self, args: "A")
    resource = PipelineDbtCliResource(project_dir=str(project_dir), dbt_executable=dbt_executable())
    assert resource.duckdb_path == str(project_dir / "data" / "w.duckdb")
    # fast paths off: dagster-dbt builds its handle as it always does
    assert resource._initialize_dbt_core_adapter(["build"]) == (None if fastpaths.enabled() else "A")


@pytest.mark.parametrize(
    "output",
    [
        "      type: postgres\n      host: localhost\n",  # another adapter: the handle is built as before
        "      type: duckdb\n      path: \"{{ env_var('NOT_SET_ANYWHERE_42') }}\"\n",  # dbt will say what is wrong
    ],
)
def test_other_targets_still_get_an_adapter(monkeypatch, project_dir, output):
    profile(project_dir, output)
    monkeypatch.setattr(DbtCliResource, "_initialize_dbt_core_adapter", lambda self, args: "A")
    resource = PipelineDbtCliResource(project_dir=str(project_dir), dbt_executable=dbt_executable())
    assert resource.duckdb_path is None
    assert resource._initialize_dbt_core_adapter(["build"]) == "A"


def test_the_launcher_and_its_text_log_go_together(project_dir):
    """dbt prints a text log only where dbt_launcher.py reports the results (DuckDB, the dbt beside this
    interpreter); any other dbt keeps dagster-dbt's JSON log, from which the results are read."""
    from pipeline.transformation.assets import dbt_log_args

    (project_dir / "profiles.yml").write_text(
        "p:\n  target: dev\n  outputs:\n    dev:\n      type: duckdb\n      path: w.duckdb\n"
    )
    ours = PipelineDbtCliResource(
        project_dir=str(project_dir), profiles_dir=str(project_dir), dbt_executable=dbt_executable()
    )
    assert ours.reports_through_launcher and dbt_log_args(ours) == ["--log-format", "text"]
    other = project_dir / "dbt"
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    elsewhere = PipelineDbtCliResource(
        project_dir=str(project_dir), profiles_dir=str(project_dir), dbt_executable=str(other)
    )
    assert not elsewhere.reports_through_launcher and dbt_log_args(elsewhere) == []
    (project_dir / "profiles.yml").write_text("p:\n  target: dev\n  outputs:\n    dev:\n      type: postgres\n")
    postgres = PipelineDbtCliResource(
        project_dir=str(project_dir), profiles_dir=str(project_dir), dbt_executable=dbt_executable()
    )
    assert not postgres.reports_through_launcher and dbt_log_args(postgres) == []


def test_arguments_too_long_for_a_command_line_reach_dbt_through_a_file(monkeypatch):
    from pipeline.transformation import project as project_module
    from pipeline.transformation.dbt_launcher import SEEDS_BEFORE_SOURCES, own_options

    monkeypatch.setattr(project_module, "LONGEST_ARGUMENT", 10)
    long_selection = "a.b.model_one a.b.model_two"
    args = ["build", "--select", long_selection, "--exclude", long_selection + " x", "--target", "dev"]
    kept, path = project_module.spill_long_arguments(args)
    assert kept == ["build", "--select", "@argument-0", "--exclude", "@argument-1", "--target", "dev"]
    assert path is not None and Path(path).exists()
    seeds_first, count_rows, restored = own_options([SEEDS_BEFORE_SOURCES, "--arguments-file", path, *kept])
    assert seeds_first and not count_rows and restored == args
    assert not Path(path).exists()  # the launcher removes it
    assert project_module.spill_long_arguments(["build", "--target", "dev"]) == (["build", "--target", "dev"], None)
