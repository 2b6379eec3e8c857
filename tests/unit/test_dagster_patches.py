"""pipeline/dagster_patches: Dagster's per-output set building is computed once, with the same answers; a step failed
by a `dg.Failure` is recorded with its message, without a stack trace, while a crash keeps its stack."""

import dagster as dg
import pytest

from pipeline.fastpaths import dagster_patches

pytestmark = pytest.mark.fastpaths

SPECS = [dg.AssetSpec(name) for name in ("first", "second", "third")]
CHECKS = [dg.AssetCheckSpec("positive", asset=name) for name in ("first", "third")]
SEEN: list[frozenset] = []


@dg.multi_asset(specs=SPECS, check_specs=CHECKS, can_subset=True)
def three(context: dg.AssetExecutionContext):
    step = context.op_execution_context._step_execution_context  # noqa: SLF001 - the patched object
    for spec in SPECS:  # each output asks for the step's keys again, as Dagster's own checks do
        yield dg.MaterializeResult(asset_key=spec.key)
        SEEN.append(step.get_output_asset_keys())
    for check in CHECKS:
        yield dg.AssetCheckResult(asset_key=check.asset_key, check_name=check.name, passed=True)


def test_the_patch_applies_to_this_dagster():
    """Fails when a Dagster upgrade changes the patched members: review pipeline/fastpaths/dagster_patches.py then.
    (The code location applies it when it builds its definitions: `pipeline.definitions.build_defs`.)"""
    assert dagster_patches.apply()
    assert dagster_patches.is_applied()
    assert dagster_patches.apply()  # idempotent


def test_same_answers_computed_once():
    dagster_patches.apply()
    assert three.asset_and_check_keys == {s.key for s in SPECS} | {c.key for c in CHECKS}
    assert three.asset_and_check_keys is three.asset_and_check_keys
    subset = three.subset_for({dg.AssetKey("second")}, selected_asset_check_keys=set())
    assert subset.asset_and_check_keys == {dg.AssetKey("second")}  # a subset is its own object, its own answer

    SEEN.clear()
    result = dg.materialize([three], instance=dg.DagsterInstance.ephemeral())
    assert result.success
    assert len(SEEN) == 3 and SEEN[0] is SEEN[1] is SEEN[2]
    assert SEEN[0] == {s.key for s in SPECS}
    assert {e.asset_key for e in result.get_asset_materialization_events()} == {s.key for s in SPECS}


PARENT, CHILD = dg.AssetKey("parent"), dg.AssetKey("child")


@dg.multi_asset(
    specs=[dg.AssetSpec(PARENT), dg.AssetSpec(CHILD, deps=[PARENT])],
    check_specs=[dg.AssetCheckSpec("filled", asset=PARENT)],
)
def parent_and_child():
    yield dg.MaterializeResult(asset_key=PARENT)
    yield dg.AssetCheckResult(asset_key=PARENT, check_name="filled", passed=True)
    yield dg.MaterializeResult(asset_key=CHILD)


def test_a_step_reads_its_own_materializations_back_from_the_storage_not_the_database(tmp_path, monkeypatch):
    """With our local instance, the child's provenance and the parent check's target come from the record the storage
    kept when it committed the parent's materialization — the one Dagster's query returns — without the query."""
    import shutil

    from devstack import INSTANCE_YAML

    dagster_patches.apply()
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    shutil.copy(INSTANCE_YAML, tmp_path / "dagster.yaml")
    with dg.DagsterInstance.get() as instance:
        asked: list = []
        get_asset_records = instance.get_asset_records
        monkeypatch.setattr(
            instance, "get_asset_records", lambda keys=None: asked.append(keys) or get_asset_records(keys)
        )
        for _ in range(2):  # the second run must point at its own parent materialization, not the first run's
            result = dg.materialize([parent_and_child], instance=instance)
            assert result.success
            parent = instance.fetch_materializations(PARENT, limit=1).records[0]
            assert parent.run_id == result.run_id
            child = instance.fetch_materializations(CHILD, limit=1).records[0].asset_materialization
            assert child.tags["dagster/input_event_pointer/parent"] == str(parent.storage_id)
            assert (
                child.tags["dagster/input_data_version/parent"]
                == parent.asset_materialization.tags["dagster/data_version"]
            )
            [evaluation] = result.get_asset_check_evaluations()
            assert evaluation.target_materialization_data.storage_id == parent.storage_id
        assert not any(PARENT in (keys or []) for keys in asked), "the parent was read back from the database"


@dg.asset
def refused() -> None:
    raise dg.Failure("Sync refused: 3 of 4 records would change", metadata={"planned": 3}, allow_retries=False)


@dg.asset
def crashed() -> None:
    raise ZeroDivisionError("a real bug")


def step_failure(asset: dg.AssetsDefinition) -> dg.DagsterEvent:
    dagster_patches.apply()
    result = dg.materialize([asset], instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    [failure] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    return failure


def test_a_failure_is_recorded_with_its_message_and_metadata_but_no_stack():
    data = step_failure(refused).step_failure_data
    assert data.error.message == "Sync refused: 3 of 4 records would change"
    assert data.error.stack == [] and data.error.cause is None  # the UI prints no "Stack Trace:" under it
    assert data.error.cls_name == "Failure"
    assert data.user_failure_data.description == "Sync refused: 3 of 4 records would change"
    assert data.user_failure_data.metadata["planned"].value == 3
    assert data.error_display_string == "Sync refused: 3 of 4 records would change"  # the run worker's log line


def test_a_crash_keeps_its_stack():
    data = step_failure(crashed).step_failure_data
    assert "ZeroDivisionError: a real bug" in data.error_display_string
    assert any("raise ZeroDivisionError" in frame for frame in data.error.cause.stack)
