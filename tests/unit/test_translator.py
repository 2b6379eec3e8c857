from pipeline.transformation.translator import group_from_path, owners_from_meta


def test_group_is_the_top_folder():
    assert group_from_path({"resource_type": "model", "original_file_path": "models/staging/shop/stg.sql"}) == "staging"
    assert group_from_path({"resource_type": "model", "original_file_path": "models/my-marts/x.sql"}) == "my_marts"
    assert group_from_path({"resource_type": "model", "original_file_path": "models/x.sql"}) == "models"
    assert group_from_path({"resource_type": "seed", "original_file_path": "seeds/regions.csv"}) == "seeds"
    assert group_from_path({"resource_type": "snapshot", "original_file_path": "snapshots/s.yml"}) == "snapshots"
    assert group_from_path({"resource_type": "source", "original_file_path": "models/staging/src.yml"}) is None


def test_owners_come_from_meta():
    assert owners_from_meta({"meta": {"owner": "data@example.com"}}) == ["data@example.com"]
    assert owners_from_meta({"config": {"meta": {"owner": ["a@x.io", "team:growth"]}}}) == ["a@x.io", "team:growth"]
    assert owners_from_meta({"meta": {"owner": "Analytics Eng"}}) == ["team:Analytics_Eng"]
    assert owners_from_meta({"meta": {}}) is None
