"""bench/synthetic.py: the layered, real-world-shaped project the load and overhead benchmarks run on (no dbt here:
see tests/integration/test_synthetic_project.py for parse and build)."""

import filecmp

import pytest
import yaml

from bench.synthetic import DOMAINS, default_layers, generate, layer_sizes, plan, seeds


@pytest.mark.parametrize("models", [12, 50, 1000, 5000])
def test_layers_hold_every_model(models):
    layers = default_layers(models)
    assert 5 <= layers <= 10
    sizes = layer_sizes(models, layers)
    assert len(sizes) == layers and sum(sizes) == models and min(sizes) >= 1


def test_refs_are_layered_fan_in_from_earlier_layers():
    models, sources, snapshots = plan(300, seed=3)
    layered = [m for m in models if m.kind == "layered"]
    layer_of = {m.name: m.layer for m in layered}
    assert len(layered) == 300 and len({m.name for m in models}) == len(models)
    for model in layered:
        if model.layer == 0:
            assert model.parents == () and model.source in sources and model.materialized == "view"
            continue
        own = [p for p in model.parents if not p.startswith("stg_reference__")]
        assert 1 <= len(own) <= 3 and len(set(model.parents)) == len(model.parents)
        assert all(layer_of[p] < model.layer for p in own)
        assert layer_of[own[0]] == model.layer - 1  # so the graph is as deep as its layers
    assert {len(m.parents) for m in layered if m.layer} >= {1, 2, 3}
    assert any(m.tested for m in models) and not all(m.tested for m in models)


def test_the_shapes_of_a_real_project_are_planned():
    models, _, snapshots = plan(1000, seed=0)
    by_name = {m.name: m for m in models}
    kinds = {m.materialized for m in models}
    assert {"view", "table", "incremental", "ephemeral"} <= kinds
    incremental = [m for m in models if m.materialized == "incremental"]
    assert {m.incremental_strategy for m in incremental} == {"delete+insert", "append"}
    # Seeds that feed sources: one reference model reads each, and some intermediate models join those.
    fed = [s.name for s in seeds() if s.feeds_source]
    reference = [m for m in models if m.kind == "reference"]
    assert sorted(m.source for m in reference) == sorted(fed)
    assert any(p.startswith("stg_reference__") for m in models for p in m.parents)
    assert any(m.seed for m in models)  # a seed ref()ed directly too
    # Snapshots of staging models, each read by a history mart.
    assert snapshots and all(by_name[s.model].folder == "staging" for s in snapshots)
    assert sorted(m.parents[0] for m in models if m.kind == "history") == sorted(s.name for s in snapshots)
    assert {s.strategy for s in snapshots} == {"timestamp", "check"}
    # Unit tests only where the model reads one relation; nothing tests or unit-tests an ephemeral model.
    ephemeral = {m.name for m in models if m.materialized == "ephemeral"}
    for model in models:
        if model.unit_tested:
            assert len(model.parents) == 1 and model.parents[0] not in ephemeral and model.materialized == "table"
        assert model.relationship not in ephemeral
        if model.materialized == "ephemeral":
            assert not (model.tested or model.unit_tested or model.contract)
    assert sum(m.unit_tested for m in models) >= 10 and any(m.contract for m in models)
    assert {m.domain for m in models} == set(DOMAINS)


def test_same_arguments_write_the_same_project(tmp_path):
    a = generate(tmp_path / "a", 60, seed=1, create_database=False)
    b = generate(tmp_path / "b", 60, seed=1, create_database=False)
    c = generate(tmp_path / "c", 60, seed=2, create_database=False)
    files = sorted(p.relative_to(a.path) for p in a.path.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b.path) for p in b.path.rglob("*") if p.is_file())
    _, mismatch, errors = filecmp.cmpfiles(a.path, b.path, [str(f) for f in files], shallow=False)
    assert not mismatch and not errors
    assert [m.parents for m in a.models] != [m.parents for m in c.models]
    assert len(list((a.path / "models").rglob("*.sql"))) == len(a.models) + 1  # + the time spine


def test_packages_are_vendored_and_seeds_feed_sources(tmp_path):
    project = generate(tmp_path / "p", 60, create_database=False)
    packages = yaml.safe_load((project.path / "packages.yml").read_text())["packages"]
    assert {"local": "packages/synth_utils"} in packages
    # Installed as `dbt deps` would leave them, so dbt parses without network: one folder per listed package.
    installed = sorted(p.name for p in (project.path / "dbt_packages").iterdir())
    assert installed == ["synth_audit", "synth_utils"] and len(packages) == len(installed)
    assert (project.path / "dbt_packages" / "synth_utils").resolve() == (project.path / "packages" / "synth_utils")
    sources = yaml.safe_load((project.path / "models" / "_sources.yml").read_text())["sources"]
    reference = next(s for s in sources if s["name"] == "reference_data")
    assert [t["name"] for t in reference["tables"]] == project.fed_seeds
    for name in project.fed_seeds:
        assert (project.path / "seeds" / f"{name}.csv").is_file()
