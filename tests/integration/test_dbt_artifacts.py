"""The dbt artifacts store, local folder and S3 alike (moto's server): per run and attempt, plus `latest/`."""

import json

import pytest

from pipeline.transformation.artifacts import ArtifactStore, summary, unfinished_nodes

pytest_plugins = ["tests.s3_fixtures"]

RUN_RESULTS = {
    "elapsed_time": 12.5,
    "results": [
        {"unique_id": "model.p.a", "status": "success", "execution_time": 2.0},
        {"unique_id": "model.p.b", "status": "error", "execution_time": 0.5},
        {"unique_id": "model.p.c", "status": "skipped", "execution_time": 0},
        {"unique_id": "test.p.not_null_a_id.1", "status": "pass", "execution_time": 0.1},
        {"unique_id": "test.p.unique_b_id.2", "status": "fail", "execution_time": 0.1},
    ],
}
MANIFEST = {"nodes": {f"model.p.{n}": {"name": n} for n in "abc"}}


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return ArtifactStore.open(str(tmp_path / "artifacts"))
    bucket = request.getfixturevalue("s3_bucket")
    return ArtifactStore.open(f"s3://{bucket.bucket}/dbt/artifacts", endpoint_url=bucket.endpoint_url)


def test_artifacts_are_kept_by_run_and_attempt_and_the_last_success_is_latest(store, tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    (target / "manifest.json").write_text(json.dumps(MANIFEST))
    (target / "run_results.json").write_text(json.dumps(RUN_RESULTS))
    saved = store.save("run-1", "dbt_build", 0, target, succeeded=False)
    assert saved == [
        "runs/run-1/dbt_build/attempt-0/manifest.json",
        "runs/run-1/dbt_build/attempt-0/run_results.json",
    ]
    assert store.run_results("run-1", "dbt_build", 0) == RUN_RESULTS
    assert store.run_results("run-1", "dbt_build", 1) is None
    assert store.load("latest/manifest.json") is None, "a failed build is not the state CI compares against"
    store.save("run-1", "dbt_build", 1, target, succeeded=True)
    assert store.load("latest/manifest.json") == MANIFEST


def test_unfinished_nodes_and_summary():
    assert unfinished_nodes(RUN_RESULTS) == ["model.p.b", "model.p.c", "test.p.unique_b_id.2"]
    figures = summary(RUN_RESULTS, MANIFEST)
    assert figures["tests"] == {"passed": 1, "failed": 1, "warned": 0}
    assert figures["by_status"] == {"success": 1, "error": 1, "skipped": 1, "pass": 1, "fail": 1}
    assert figures["slowest"][0] == {"node": "a", "seconds": 2.0}
