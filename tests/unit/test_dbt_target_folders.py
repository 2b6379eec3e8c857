"""dagster-dbt's per-invocation target folders stay bounded (pipeline/transformation/artifacts.py)."""

import os
import time

from pipeline.transformation.artifacts import (
    KEEP_FAILED_SECONDS,
    is_invocation_folder,
    remove_invocation_folder,
    sweep_invocation_folders,
)


def folder(parent, name, age_seconds=0.0):
    path = parent / name
    (path / "compiled").mkdir(parents=True)
    (path / "dbt.log").write_text("log")
    stamp = time.time() - age_seconds
    os.utime(path, (stamp, stamp))
    return path


def test_only_dagster_dbts_invocation_folders_are_recognised(tmp_path):
    assert is_invocation_folder(tmp_path / "dbt_build-1a2b3c4-9f8e7d6")
    assert is_invocation_folder(tmp_path / "9f8e7d6")  # an invocation without a Dagster context
    for other in ("target", "compiled", "run", "dbt_build", "partial_parse.msgpack", "dbt_build-1a2b3c4-9F8E7D6"):
        assert not is_invocation_folder(tmp_path / other)


def test_an_invocation_folder_is_removed_and_nothing_else(tmp_path):
    target = tmp_path / "target"
    done = folder(target, "dbt_build-1a2b3c4-9f8e7d6")
    (target / "partial_parse.msgpack").write_bytes(b"\x80")
    assert remove_invocation_folder(done) and not done.exists()
    assert not remove_invocation_folder(target / "compiled")  # an explicit target path of one's own: left alone
    assert (target / "partial_parse.msgpack").exists()


def test_the_sweep_removes_folders_left_longer_than_the_retention(tmp_path):
    target = tmp_path / "target"
    old = folder(target, "dbt_build-1a2b3c4-0000001", KEEP_FAILED_SECONDS + 60)
    recent = folder(target, "dbt_build-1a2b3c4-0000002", KEEP_FAILED_SECONDS - 60)
    own = folder(target, "my_notes", KEEP_FAILED_SECONDS * 2)  # not dagster-dbt's: never swept
    assert sweep_invocation_folders(target) == [old.name]
    assert not old.exists() and recent.exists() and own.exists()
    assert sweep_invocation_folders(tmp_path / "missing") == []
