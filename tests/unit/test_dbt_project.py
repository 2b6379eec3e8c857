import os

from pipeline.transformation.project import manifest_is_stale, packages_installed


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


def test_packages_count_as_installed_when_each_listed_one_has_a_folder(tmp_path):
    (tmp_path / "dbt_project.yml").write_text("name: p\nprofile: p\n")
    assert packages_installed(tmp_path)  # lists none
    (tmp_path / "packages.yml").write_text("packages:\n  - local: utils\n  - package: acme/audit\n    version: 1.0.0\n")
    assert not packages_installed(tmp_path)
    (tmp_path / "dbt_packages" / "audit").mkdir(parents=True)
    assert not packages_installed(tmp_path)
    (tmp_path / "utils").mkdir()
    (tmp_path / "dbt_packages" / "utils").symlink_to(tmp_path / "utils")  # as `dbt deps` installs a local package
    assert packages_installed(tmp_path)
    (tmp_path / "dbt_project.yml").write_text("name: p\nprofile: p\npackages-install-path: vendor\n")
    assert not packages_installed(tmp_path)
