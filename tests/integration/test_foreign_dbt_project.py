"""Any dbt-duckdb project loads and builds through DBT_PROJECT_DIR, with the default settings and without edits to it:
harbor_ledger has a vendored package, a seed that loads a table the project also reads as a source, an incremental
model unrelated to our landing dates, a snapshot, a unit test, a semantic model, a metric and an exposure."""

import json
import os
import shutil
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from pipeline import fastpaths
from pipeline.transformation.artifacts import is_invocation_folder
from tests.conftest import dbt_parse

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "harbor_ledger"


@pytest.fixture(scope="module")
def harbor(tmp_path_factory, module_env):
    project = tmp_path_factory.mktemp("foreign") / "harbor_ledger"
    shutil.copytree(FIXTURE, project)
    module_env.setenv("DBT_PROJECT_DIR", str(project))
    module_env.setenv("DUCKDB_PATH", str(project.parent / "unused.duckdb"))
    module_env.setenv("LANDING_URL", str(project.parent / "landing"))
    dbt_parse(project)
    from pipeline.definitions import defs

    return project, defs()


def test_loads_with_its_own_shape(harbor):
    _, defs = harbor
    specs = {s.key: s for s in defs.resolve_all_asset_specs()}
    assert {dg.AssetKey(k) for k in ("accounts", "base_transactions", "account_balances", "monthly_flows")} <= set(
        specs
    )
    # A source no ingestion asset feeds is an external asset upstream of the model that reads it.
    assert specs[dg.AssetKey(["bank", "transactions"])].group_name == "external_sources"
    assert dg.AssetKey(["bank", "transactions"]) in {d.asset_key for d in specs[dg.AssetKey("base_transactions")].deps}
    # Groups follow its folders; our demo syncs are left out because it has no dim_customers.
    assert specs[dg.AssetKey("monthly_flows")].group_name == "ledger"
    assert not any(k.path[-1] == "crm_contacts_sync" for k in specs)
    checks = defs.resolve_asset_graph().asset_check_keys
    assert any(c.name.startswith("unique_account_balances") for c in checks)
    # The source over the fx_rates seed's table is no asset (dagster-dbt's default keys give both reference/fx_rates,
    # which stock dagster-dbt refuses to load): its reader depends on the seed.
    fx_rates = dg.AssetKey(["reference", "fx_rates"])
    assert {d.asset_key for d in specs[dg.AssetKey("base_fx_rates")].deps} == {fx_rates}
    assert [k for k in specs if k.path[-1] == "fx_rates"] == [fx_rates]
    # Its incremental model has nothing to do with our landing dates: nothing of the project is partitioned.
    dbt_ops = {a.node_def.name: a for a in _dbt_assets(defs)}
    assert set(dbt_ops) == {"dbt_build"} and dbt_ops["dbt_build"].partitions_def is None
    assert {dg.AssetKey("daily_flows"), dg.AssetKey(["snapshots", "accounts_history"])} <= dbt_ops["dbt_build"].keys


def _dbt_assets(defs: dg.Definitions) -> list[dg.AssetsDefinition]:
    return [a for a in defs.resolve_asset_graph().assets_defs if a.is_executable and a.node_def.name.startswith("dbt_")]


def test_materializes_every_dbt_asset(harbor):
    """Default settings, a fresh warehouse: every asset in one `dbt build`, the seed before the source's reader
    (a plain `dbt build` of this project runs base_fx_rates first, which fails: the table does not exist yet)."""
    project, defs = harbor
    assert not (project / "harbor.duckdb").exists()
    job = defs.resolve_implicit_global_asset_job_def()
    dbt_keys = {k for k in job.asset_layer.executable_asset_keys if k.path[0] != "raw"}
    result = job.get_subset(asset_selection=dbt_keys).execute_in_process(instance=dg.DagsterInstance.ephemeral())
    assert result.success
    materialized = {m.asset_key: m for m in result.asset_materializations_for_node("dbt_build")}
    assert set(materialized) == dbt_keys
    if fastpaths.enabled():  # rows are counted inside the dbt process (a fast path)
        assert materialized[dg.AssetKey("account_balances")].metadata["dagster/row_count"].value == 3
    checks = [e for e in result.get_asset_check_evaluations()]
    assert checks and all(c.passed for c in checks)
    with duckdb.connect(str(project / "harbor.duckdb"), read_only=True) as conn:
        assert conn.execute("select count(*) from monthly_flows").fetchone()[0] == 5
        assert conn.execute("select count(*) from daily_flows").fetchone()[0] == 5
        eur = conn.execute("select balance_eur from balances_in_eur where account_id = 1").fetchone()[0]
        assert eur == Decimal("1563.54")

    runs = Path(os.environ["DBT_ARTIFACTS_URL"]) / "runs" / result.run_id / "dbt_build" / "attempt-0"
    results = {r["unique_id"]: r for r in json.loads((runs / "run_results.json").read_text())["results"]}
    assert results["unit_test.harbor_ledger.account_balances.balances_sum_each_accounts_transactions"]["status"] == (
        "pass"
    )

    def at(unique_id: str, which: str) -> datetime:
        moments = [t[which] for t in results[unique_id]["timing"]]
        return datetime.fromisoformat((min if which == "started_at" else max)(moments).replace("Z", "+00:00"))

    assert at("seed.harbor_ledger.fx_rates", "completed_at") <= at("model.harbor_ledger.base_fx_rates", "started_at")
    # Its artifacts kept, the invocation's own target folder is gone; the project's partial-parse file stays.
    assert not [p.name for p in (project / "target").iterdir() if is_invocation_folder(p)]
    assert (project / "target" / "partial_parse.msgpack").exists()


def test_launcher_streams_the_events_dagster_dbt_makes_from_the_json_log(harbor, capsys):
    """On DuckDB dbt prints a text log and runs through dbt_launcher.py, which reports each result on a line of its
    own: the events made from those lines, while dbt runs, are the ones dagster-dbt makes from dbt's JSON log,
    field for field, plus each model's figures (row counts counted inside the dbt process)."""
    from dagster_dbt import DbtCliResource

    from pipeline.transformation.assets import dbt_log_args, events_with_run_metadata
    from pipeline.transformation.project import LAUNCHER, PipelineDbtCliResource, dbt_executable

    project, _ = harbor
    manifest = json.loads((project / "target" / "manifest.json").read_text())
    plain = DbtCliResource(project_dir=str(project), profiles_dir=str(project), dbt_executable=dbt_executable())
    plain.cli(["seed"]).wait()  # plain dbt does not order the fx_rates seed before its source's reader
    streamed = list(plain.cli(["build"], manifest=manifest).stream())  # JSON log, as dagster-dbt runs dbt

    ours = PipelineDbtCliResource(project_dir=str(project), profiles_dir=str(project), dbt_executable=dbt_executable())
    invocation = ours.cli(["build", *dbt_log_args(ours)], manifest=manifest)
    assert invocation.process.args[1:3] == list(LAUNCHER)  # the dbt launcher, by path
    assert LAUNCHER[0] == "-P" and Path(LAUNCHER[1]).is_file() and Path(LAUNCHER[1]).name == "dbt_launcher.py"
    built, running = [], []
    for event in events_with_run_metadata(invocation, ours.duckdb_path):
        built.append(event)
        running.append(invocation.process.poll() is None)
    assert running[0], "the first result arrives while dbt still runs"

    # Two builds: their invocation ids differ (each event carries its own build's).
    figures = {"execution_seconds", "dagster/row_count", "dbt_tests_passed", "dbt_tests_failed", "invocation_id"}
    invocation_id = invocation.get_artifact("run_results.json")["metadata"]["invocation_id"]
    assert {e.metadata["invocation_id"].value for e in built} == {invocation_id}

    def fields(event) -> tuple:
        metadata = {k: v for k, v in event.metadata.items() if k != "Execution Duration" and k not in figures}
        return (
            type(event).__name__,
            event.asset_key,
            getattr(event, "check_name", None),
            getattr(event, "passed", None),
            getattr(event, "severity", None),
            metadata,
        )

    assert len(streamed) == 15  # 10 models, seeds and snapshots, 5 tests (the unit test gives no event)
    assert any(isinstance(e, dg.AssetCheckEvaluation) for e in streamed)
    assert sorted(map(fields, built), key=repr) == sorted(map(fields, streamed), key=repr)
    materialized = {e.asset_key: e.metadata for e in built if isinstance(e, dg.AssetMaterialization)}
    assert materialized[dg.AssetKey("account_balances")]["execution_seconds"].value > 0
    with duckdb.connect(str(project / "harbor.duckdb"), read_only=True) as conn:
        assert conn.execute("select count(*) from monthly_flows").fetchone()[0] == 5
    if fastpaths.enabled():  # rows are counted inside the dbt process (a fast path)
        assert materialized[dg.AssetKey("account_balances")]["dagster/row_count"].value == 3
        assert materialized[dg.AssetKey("monthly_flows")]["dagster/row_count"].value == 5
    else:
        assert all("dagster/row_count" not in m for m in materialized.values())
    # Without a Dagster context no checks are selected: no test figures (test_pipeline has them).
    assert not any("dbt_tests_passed" in m for m in materialized.values())

    # A dbt of one's own on DuckDB (no launcher) keeps the JSON log: the same events, its messages in the log.
    capsys.readouterr()
    own = list(events_with_run_metadata(plain.cli(["build"], manifest=manifest), ours.duckdb_path))
    assert sorted(map(fields, own), key=repr) == sorted(map(fields, streamed), key=repr)
    assert "Completed successfully" in capsys.readouterr().out


def test_dagster_dev_parses_a_vendored_project_without_dbt_deps(tmp_path, monkeypatch):
    """Under `dagster dev` a stale manifest is parsed again; with every listed package in dbt_packages/ that takes no
    `dbt deps` (dagster-dbt's preparation runs it, which needs the dbt hub and can drop vendored packages)."""
    from dagster_dbt import DbtProject
    from dagster_dbt.dbt_project import DagsterDbtProjectPreparer

    from pipeline.transformation.project import prepare

    project_dir = tmp_path / "harbor_ledger"
    shutil.copytree(FIXTURE, project_dir, ignore=shutil.ignore_patterns("target", "logs"))
    monkeypatch.setattr(DagsterDbtProjectPreparer, "prepare", lambda *a: pytest.fail("dbt deps was to be run"))
    project = DbtProject(project_dir=project_dir, profiles_dir=project_dir)
    prepare(project)
    assert project.manifest_path.exists()
    assert (project_dir / "dbt_packages" / "harbor_utils" / "macros" / "cents.sql").exists()


@pytest.mark.fastpaths
def test_a_large_subset_builds_the_projects_own_warehouse(tmp_path, monkeypatch, module_env):
    """A subset run of more nodes than dagster-dbt selects on the command line (200; lowered to 3 here): dagster-dbt
    would build a copy of the project in a temporary folder, and harbor's relative DuckDB path would then be the
    copy's. Ours selects the subset on dbt's command line in the project itself; a selection longer than a command
    line takes (the limit lowered here too) goes through dbt_launcher.py's arguments file."""
    import glob
    import tempfile

    import dagster_dbt.asset_utils

    from pipeline.fastpaths import dagster_dbt as fast_dbt
    from pipeline.transformation import project

    project_dir = tmp_path / "harbor_ledger"
    shutil.copytree(FIXTURE, project_dir)
    module_env.setenv("DBT_PROJECT_DIR", str(project_dir))
    dbt_parse(project_dir)
    monkeypatch.setattr(dagster_dbt.asset_utils, "_SELECTION_ARGS_THRESHOLD", 3)
    monkeypatch.setattr(fast_dbt, "_SELECTION_ARGS_THRESHOLD", 3)
    monkeypatch.setattr(project, "LONGEST_ARGUMENT", 20)
    from pipeline.definitions import defs

    job = defs().resolve_implicit_global_asset_job_def()
    subset = {k for k in job.asset_layer.executable_asset_keys if k.path[0] != "raw"} - {dg.AssetKey("monthly_flows")}
    copies = set(glob.glob(f"{tempfile.gettempdir()}/tmp*/dbt_project.yml"))
    result = job.get_subset(asset_selection=subset).execute_in_process(instance=dg.DagsterInstance.ephemeral())
    assert result.success
    assert set(glob.glob(f"{tempfile.gettempdir()}/tmp*/dbt_project.yml")) == copies, "a copy of the project was made"
    assert {m.asset_key for m in result.asset_materializations_for_node("dbt_build")} == subset
    with duckdb.connect(str(project_dir / "harbor.duckdb"), read_only=True) as conn:
        built = {r[0] for r in conn.execute("select table_name from information_schema.tables").fetchall()}
    assert {"account_balances", "daily_flows", "balances_in_eur"} <= built and "monthly_flows" not in built
    assert not glob.glob(f"{tempfile.gettempdir()}/dbt-arguments-*.json"), "the launcher removes its arguments file"
