"""A synthetic dbt-duckdb project of any size, for the benchmarks that need a large manifest (P1, P2).

`generate(path, models=1000)` writes an ordinary dbt project that `dbt parse` / `dbt build` run as they are:

    <path>/dbt_project.yml   layer and domain configs: materializations, `+group`, `+meta.owner`, `+tags`
    <path>/profiles.yml      dbt-duckdb, `warehouse.duckdb` relative to the working directory (dbt runs in <path>)
    <path>/models/_sources.yml, _groups.yml
    <path>/models/<layer>/<domain>/<model>.sql, _<domain>__models.yml (descriptions, columns, tests, tags)
    <path>/warehouse.duckdb  the source tables (`create_sources`), so the project needs no seeds and no data files

The models sit in `layers` layers (5 to 10 by default, more for larger projects). Layer 0 (`staging`, views) reads
one source each; every model of a later layer (`intermediate` tables, and the last layer, `marts`) `ref()`s one to
three models of earlier layers — one always from the layer right above it, so the graph is as deep as its layers —
and joins them on `id`. Every table is a few hundred rows, so `dbt build` spends its time in dbt, not in DuckDB.
A share of the models carries `unique` + `not_null` tests on `id` (and the key is unique, so they pass), a few are
incremental (`unique_key: id`), a few are tagged `pii` / `hourly`. Domains give dbt groups (with owners) and
`meta.owner`, as in a real project.

Everything is drawn from `random.Random(seed)` in a fixed order: the same arguments write the same bytes.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

PROJECT_NAME = "synthetic"
DATABASE_FILE = "warehouse.duckdb"
SOURCE_NAME = "synth"
SOURCE_SCHEMA = "synth_raw"
DOMAINS = ("finance", "marketing", "sales", "product", "support", "operations")
OWNERS = {d: f"{d}-analytics@synthetic.example" for d in DOMAINS}
CATEGORIES = ("alpha", "beta", "gamma", "delta", "epsilon")


@dataclass(frozen=True)
class Model:
    name: str
    layer: int
    domain: str
    folder: str
    parents: tuple[str, ...]  # model names; empty for staging (which reads `source`)
    source: str | None
    materialized: str
    tested: bool
    tags: tuple[str, ...]


@dataclass
class Project:
    """What `generate` wrote: enough for a caller to assert on the manifest it parses to."""

    path: Path
    models: list[Model]
    sources: list[str]
    layers: int
    rows: int
    tests: int = 0
    by_name: dict[str, Model] = field(default_factory=dict)

    @property
    def database(self) -> Path:
        return self.path / DATABASE_FILE


def default_layers(models: int) -> int:
    """5 layers for small projects, up to 10 for thousands of models."""
    return min(10, max(5, round(math.log2(max(models, 2))) - 2))


def layer_sizes(models: int, layers: int) -> list[int]:
    """~30 % staging, ~15 % marts, the rest spread evenly over the intermediate layers; at least one each."""
    if models < layers:
        raise ValueError(f"{models} models cannot fill {layers} layers")
    staging = max(1, round(models * 0.30))
    marts = max(1, round(models * 0.15))
    middle = layers - 2
    rest = models - staging - marts
    sizes = [staging] + [rest // middle + (1 if i < rest % middle else 0) for i in range(middle)] + [marts]
    if min(sizes) < 1:  # tiny projects: one model per layer, the remainder to staging
        sizes = [models - (layers - 1)] + [1] * (layers - 1)
    assert sum(sizes) == models, sizes
    return sizes


def folder_of(layer: int, layers: int) -> str:
    return "staging" if layer == 0 else "marts" if layer == layers - 1 else "intermediate"


def plan(
    models: int,
    *,
    layers: int | None = None,
    seed: int = 0,
    sources: int | None = None,
    test_share: float = 0.4,
    incremental_share: float = 0.02,
) -> tuple[list[Model], list[str]]:
    """The models (in layer order) and source table names, without writing anything."""
    layers = layers or default_layers(models)
    if layers < 2:
        raise ValueError("layers must be at least 2 (staging and marts)")
    rng = random.Random(seed)
    source_names = [f"src_{i:02d}" for i in range(sources or min(20, max(3, models // 100)))]
    planned: list[Model] = []
    by_layer: list[list[Model]] = []
    number = 0
    for layer, size in enumerate(layer_sizes(models, layers)):
        folder = folder_of(layer, layers)
        prefix = {"staging": "stg", "intermediate": "int", "marts": "mart"}[folder]
        earlier = [m for previous in by_layer for m in previous]
        current: list[Model] = []
        for _ in range(size):
            domain = DOMAINS[number % len(DOMAINS)]
            name = f"{prefix}_{domain}__m{number:05d}"
            tags = tuple(
                t for t, share in (("pii", 0.1), ("hourly", 0.05)) if rng.random() < share
            )  # drawn for every model, so later draws do not depend on earlier outcomes
            tested = rng.random() < test_share
            if layer == 0:
                parents: tuple[str, ...] = ()
                source = rng.choice(source_names)
                materialized = "view"
            else:
                fan_in = rng.choice((1, 1, 2, 2, 3))
                chosen = [rng.choice(by_layer[layer - 1])]
                for _ in range(fan_in - 1):
                    candidate = rng.choice(earlier)
                    if candidate not in chosen:
                        chosen.append(candidate)
                parents = tuple(m.name for m in chosen)
                source = None
                incremental = folder == "intermediate" and rng.random() < incremental_share
                materialized = "incremental" if incremental else "table"
            current.append(Model(name, layer, domain, folder, parents, source, materialized, tested, tags))
            number += 1
        by_layer.append(current)
        planned.extend(current)
    return planned, source_names


def generate(
    path: Path | str,
    models: int,
    *,
    layers: int | None = None,
    seed: int = 0,
    sources: int | None = None,
    rows: int = 200,
    test_share: float = 0.4,
    incremental_share: float = 0.02,
    create_database: bool = True,
) -> Project:
    """Write the project into `path` (created; files of an earlier project of the same name are overwritten)."""
    path = Path(path)
    planned, source_names = plan(
        models,
        layers=layers,
        seed=seed,
        sources=sources,
        test_share=test_share,
        incremental_share=incremental_share,
    )
    layer_count = max(m.layer for m in planned) + 1
    path.mkdir(parents=True, exist_ok=True)
    _write(path / "dbt_project.yml", _project_yml(planned))
    _write(path / "profiles.yml", _PROFILES)
    _write(path / "models" / "_sources.yml", _sources_yml(source_names))
    _write(path / "models" / "_groups.yml", _groups_yml())
    grouped: dict[tuple[str, str], list[Model]] = {}
    for model in planned:
        folder = path / "models" / model.folder / model.domain
        _write(folder / f"{model.name}.sql", _model_sql(model, layer_count))
        grouped.setdefault((model.folder, model.domain), []).append(model)
    for (folder, domain), members in grouped.items():
        _write(path / "models" / folder / domain / f"_{domain}__models.yml", _models_yml(members))
    project = Project(
        path, planned, source_names, layer_count, rows, tests=2 * sum(m.tested for m in planned) + len(source_names)
    )
    project.by_name = {m.name: m for m in planned}
    if create_database:
        create_sources(project.database, source_names, rows)
    return project


def create_sources(database: Path, source_names: list[str], rows: int) -> None:
    """(Re)create the source tables: `rows` rows each, `id` 1..rows unique, deterministic values."""
    database.unlink(missing_ok=True)
    database.with_name(database.name + ".wal").unlink(missing_ok=True)
    categories = ", ".join(f"'{c}'" for c in CATEGORIES)
    with duckdb.connect(str(database)) as conn:
        conn.execute(f"CREATE SCHEMA {SOURCE_SCHEMA}")
        for number, name in enumerate(source_names):
            conn.execute(
                f"""CREATE TABLE {SOURCE_SCHEMA}.{name} AS SELECT
                    i AS id,
                    round(((i * 37 + {number} * 11) % 1000) / 10.0, 2)::DOUBLE AS amount,
                    ([{categories}])[1 + ((i + {number}) % {len(CATEGORIES)})] AS category,
                    TIMESTAMP '2026-01-01' + INTERVAL (i % 720) HOUR AS updated_at
                FROM range(1, {rows + 1}) t(i)"""
            )


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


_PROFILES = f"""\
# dbt runs with the working directory at the project (so does dagster-dbt): the warehouse is ./{DATABASE_FILE}.
{PROJECT_NAME}:
  target: dev
  outputs:
    dev:
      type: duckdb
      path: {DATABASE_FILE}
      threads: 4
"""


def _project_yml(models: list[Model]) -> str:
    lines = [
        "# Generated by bench/synthetic.py: a layered project of synthetic models over generated source tables.",
        f"name: {PROJECT_NAME}",
        'version: "1.0.0"',
        f"profile: {PROJECT_NAME}",
        'model-paths: ["models"]',
        "clean-targets: [target, logs]",
        "flags:",
        "  send_anonymous_usage_stats: false",
        "models:",
        f"  {PROJECT_NAME}:",
    ]
    folders = sorted({m.folder for m in models}, key=lambda f: ("staging", "intermediate", "marts").index(f))
    for folder in folders:
        lines += [f"    {folder}:", f"      +materialized: {'view' if folder == 'staging' else 'table'}"]
        lines += [f"      +tags: [{folder}]"]
        for domain in sorted({m.domain for m in models if m.folder == folder}):
            lines += [
                f"      {domain}:",
                f"        +group: {domain}",
                "        +meta:",
                f"          owner: {OWNERS[domain]}",
            ]
    return "\n".join(lines) + "\n"


def _sources_yml(source_names: list[str]) -> str:
    lines = [
        "version: 2",
        "sources:",
        f"  - name: {SOURCE_NAME}",
        f"    schema: {SOURCE_SCHEMA}",
        "    description: Tables the generator creates in the warehouse (stand-ins for loaded raw data).",
        "    tables:",
    ]
    for name in source_names:
        lines += [
            f"      - name: {name}",
            "        columns:",
            "          - name: id",
            "            data_tests: [not_null]",
        ]
    return "\n".join(lines) + "\n"


def _groups_yml() -> str:
    lines = ["version: 2", "groups:"]
    for domain in DOMAINS:
        lines += [
            f"  - name: {domain}",
            "    owner:",
            f"      name: {domain} analytics",
            f"      email: {OWNERS[domain]}",
        ]
    return "\n".join(lines) + "\n"


def _model_sql(model: Model, layers: int) -> str:
    header = f"-- layer {model.layer} of {layers}, domain {model.domain}\n"
    config = ""
    if model.materialized == "incremental":
        config = "{{ config(materialized='incremental', unique_key='id') }}\n\n"
    if model.source is not None:
        return (
            f"{header}select id, amount, category, updated_at\n"
            f"from {{{{ source('{SOURCE_NAME}', '{model.source}') }}}}\n"
        )
    amount = " + ".join(["p1.amount"] + [f"coalesce(p{i}.amount, 0)" for i in range(2, len(model.parents) + 1)])
    joins = "".join(
        f"\nleft join {{{{ ref('{parent}') }}}} as p{i} on p{i}.id = p1.id"
        for i, parent in enumerate(model.parents[1:], start=2)
    )
    incremental = ""
    if model.materialized == "incremental":
        incremental = (
            "\n{% if is_incremental() %}\nwhere p1.updated_at > (select coalesce(max(updated_at), "
            "timestamp '1970-01-01') from {{ this }})\n{% endif %}"
        )
    return (
        f"{header}{config}select\n    p1.id,\n    round({amount}, 2) as amount,\n    p1.category,\n"
        f"    p1.updated_at\nfrom {{{{ ref('{model.parents[0]}') }}}} as p1{joins}{incremental}\n"
    )


def _models_yml(models: list[Model]) -> str:
    lines = ["version: 2", "models:"]
    for model in models:
        reads = f"source {model.source}" if model.source else ", ".join(model.parents)
        lines += [f"  - name: {model.name}", f"    description: Layer {model.layer} {model.domain} model over {reads}."]
        if model.tags:
            lines += ["    config:", f"      tags: [{', '.join(model.tags)}]"]
        lines += ["    columns:", "      - name: id", "        description: Row key, unique."]
        if model.tested:
            lines += ["        data_tests: [unique, not_null]"]
        lines += [
            "      - name: amount",
            "        description: Sum of the parents' amounts.",
            "      - name: category",
            "      - name: updated_at",
        ]
    return "\n".join(lines) + "\n"
