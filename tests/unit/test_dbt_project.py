import os

from pipeline.transformation.project import manifest_is_stale


def test_manifest_is_stale_only_after_a_project_file_changes(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "target").mkdir()
    model = tmp_path / "models" / "a.sql"
    model.write_text("select 1")
    manifest = tmp_path / "target" / "manifest.json"
    assert manifest_is_stale(tmp_path, manifest)
    manifest.write_text("{}")
    os.utime(model, (1, 1))
    assert not manifest_is_stale(tmp_path, manifest)
    (tmp_path / "target" / "run_results.json").write_text("{}")  # dbt's own output does not count
    assert not manifest_is_stale(tmp_path, manifest)
    os.utime(model, (manifest.stat().st_mtime + 5,) * 2)
    assert manifest_is_stale(tmp_path, manifest)
