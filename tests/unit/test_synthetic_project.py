"""bench/synthetic.py: the layered project the load and overhead benchmarks run on (no dbt here: see
tests/integration/test_synthetic_project.py for parse and build)."""

import filecmp

import pytest

from bench.synthetic import default_layers, generate, layer_sizes, plan


@pytest.mark.parametrize("models", [12, 50, 1000, 5000])
def test_layers_hold_every_model(models):
    layers = default_layers(models)
    assert 5 <= layers <= 10
    sizes = layer_sizes(models, layers)
    assert len(sizes) == layers and sum(sizes) == models and min(sizes) >= 1


def test_refs_are_layered_fan_in_from_earlier_layers():
    models, sources = plan(300, seed=3)
    layer_of = {m.name: m.layer for m in models}
    assert len(models) == 300 and len({m.name for m in models}) == 300
    for model in models:
        if model.layer == 0:
            assert model.parents == () and model.source in sources and model.materialized == "view"
            continue
        assert 1 <= len(model.parents) <= 3 and len(set(model.parents)) == len(model.parents)
        assert all(layer_of[p] < model.layer for p in model.parents)
        assert layer_of[model.parents[0]] == model.layer - 1  # so the graph is as deep as its layers
    assert {len(m.parents) for m in models if m.layer} == {1, 2, 3}
    assert any(m.tested for m in models) and not all(m.tested for m in models)


def test_same_arguments_write_the_same_project(tmp_path):
    a = generate(tmp_path / "a", 60, seed=1, create_database=False)
    b = generate(tmp_path / "b", 60, seed=1, create_database=False)
    c = generate(tmp_path / "c", 60, seed=2, create_database=False)
    files = sorted(p.relative_to(a.path) for p in a.path.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b.path) for p in b.path.rglob("*") if p.is_file())
    _, mismatch, errors = filecmp.cmpfiles(a.path, b.path, [str(f) for f in files], shallow=False)
    assert not mismatch and not errors
    assert [m.parents for m in a.models] != [m.parents for m in c.models]
    assert len(list((a.path / "models").rglob("*.sql"))) == 60
