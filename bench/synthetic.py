"""A synthetic dbt-duckdb project of any size, shaped like a real one, for the benchmarks that need a large manifest
(P1, P2) and for the tests of a project brought through DBT_PROJECT_DIR.

`generate(path, models=1000)` writes an ordinary dbt project that `dbt parse` / `dbt seed && dbt build` run as they are:

    <path>/dbt_project.yml     layer and domain configs (materializations, `+group`, `+meta.owner`, `+tags`), vars,
                               an on-run-end hook from a package, seeds in their own schema
    <path>/profiles.yml        dbt-duckdb, `warehouse.duckdb` relative to the working directory (dbt runs in <path>)
    <path>/packages.yml        a local package (packages/synth_utils: macros, a generic test) and a hub package
                               vendored in dbt_packages/ (synth_audit: a macro, a model); never `dbt deps`, no network
    <path>/macros/             generate_schema_name (custom schemas used as they are), a project macro
    <path>/seeds/              reference data; some seeds load a table the project *also* declares as a source
                               (`reference_data.<seed>`): dbt does not know that edge (see `Seed.feeds_source`)
    <path>/snapshots/          YAML snapshots of staging models (timestamp and check strategies)
    <path>/models/_sources.yml the generated source tables (with freshness) and the seed-fed `reference` source
    <path>/models/<layer>/<domain>/<model>.sql, _<domain>__models.yml (docs blocks, columns, data tests, unit tests,
                               contracts)
    <path>/models/metrics/     a MetricFlow time spine, semantic models and metrics over marts
    <path>/models/_exposures.yml, _groups.yml, _docs.md, tests/ (singular tests), analyses/
    <path>/warehouse.duckdb    the source tables (`create_sources`): the project needs no data files besides its seeds

The layered models sit in `layers` layers (5 to 10 by default, more for larger projects). Layer 0 (`staging`, views)
reads one source each; every model of a later layer (`intermediate` tables, and the last layer, `marts`) `ref()`s one
to three models of earlier layers — one always from the layer right above it, so the graph is as deep as its layers —
and joins them on `id`. Some intermediate models also join a reference model (a staging view over a seed-fed source)
or a seed directly; a few are incremental on `updated_at` (logic that has nothing to do with landing dates: `merge`
on a key or `append`), a few ephemeral. Beside them: one reference staging model per seed-fed source and one history
mart per snapshot. Every table is a few hundred rows, so `dbt build` spends its time in dbt, not in DuckDB. A share
of the models carries `unique` + `not_null` tests on `id` (and the key is unique, so they pass), some
`accepted_values`, `relationships` and the package's generic test; domains give dbt groups (with owners) and
`meta.owner`, as in a real project.

Everything is drawn from `random.Random(seed)` in a fixed order and written in a fixed order: the same arguments
write the same bytes.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import yaml

PROJECT_NAME = "synthetic"
DATABASE_FILE = "warehouse.duckdb"
SOURCE_NAME = "synth"
SOURCE_SCHEMA = "synth_raw"
#: the source the seed-fed tables are declared under, in the seeds' own schema (see `generate_schema_name`). Not named
#: after the schema: stock dagster-dbt gives a seed in schema `x` and a source named `x` one asset key and refuses
#: to load (ours does not: the harbor_ledger test fixture has that shape); the benchmarks time stock dagster-dbt too.
REFERENCE_SOURCE = "reference_data"
SEED_SCHEMA = "reference"
SNAPSHOT_SCHEMA = "snapshots"
DOMAINS = ("finance", "marketing", "sales", "product", "support", "operations")
OWNERS = {d: f"{d}-analytics@synthetic.example" for d in DOMAINS}
CATEGORIES = ("alpha", "beta", "gamma", "delta", "epsilon")
LOCAL_PACKAGE = "synth_utils"
VENDORED_PACKAGE = "synth_audit"
#: the seed some intermediate models join directly (`ref()`), on `category`
JOINED_SEED = "product_tiers"
#: incremental strategies the incremental models cycle through (dbt-duckdb supports both)
INCREMENTAL_STRATEGIES = ("delete+insert", "append")


@dataclass(frozen=True)
class Seed:
    name: str
    #: the project also declares `source('reference', <name>)` over the table this seed loads, and models read it
    #: that way: dbt sees no edge from the seed to them, so a fresh `dbt build` may run them before the seed
    feeds_source: bool
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Model:
    name: str
    layer: int
    domain: str
    folder: str
    parents: tuple[str, ...]  # model, reference model or snapshot names; empty for staging (which reads `source`)
    source: str | None  # (for staging) the source table it reads
    materialized: str
    tested: bool
    tags: tuple[str, ...]
    #: a seed the model joins with `ref()` (the other reference data reaches models through `parents`)
    seed: str | None = None
    incremental_strategy: str | None = None
    contract: bool = False
    unit_tested: bool = False
    accepted_values: bool = False
    #: a model whose `id` must exist in this parent's (a `relationships` test)
    relationship: str | None = None
    non_negative: bool = False  # the local package's generic test on `amount`
    #: reads `source('reference', ...)` (a seed-fed source) or a snapshot instead of `source('synth', ...)`
    kind: str = "layered"  # layered | reference | history


@dataclass(frozen=True)
class Snapshot:
    name: str
    model: str
    strategy: str  # timestamp | check


@dataclass
class Project:
    """What `generate` wrote: enough for a caller to assert on the manifest it parses to."""

    path: Path
    models: list[Model]
    sources: list[str]
    layers: int
    rows: int
    seeds: list[Seed] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
    #: semantic model name -> the mart it describes; metric names; exposure name -> the marts it depends on
    semantic_models: dict[str, str] = field(default_factory=dict)
    metrics: list[str] = field(default_factory=list)
    exposures: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: data tests (generic and singular), unit tests
    tests: int = 0
    unit_tests: int = 0
    by_name: dict[str, Model] = field(default_factory=dict)

    @property
    def database(self) -> Path:
        return self.path / DATABASE_FILE

    @property
    def fed_seeds(self) -> list[str]:
        return [s.name for s in self.seeds if s.feeds_source]

    @property
    def package_models(self) -> list[str]:
        """Models the packages bring (they are models of the project's manifest too)."""
        return ["audit__domains"]


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


def seeds() -> list[Seed]:
    """Reference data: three seeds feed sources of the same name; `product_tiers` is `ref()`ed, `country_codes` is
    read by nothing (a seed kept for ad-hoc use)."""
    factors = [(c, f"{1 + i / 10:.2f}") for i, c in enumerate(CATEGORIES)]
    fed = [
        Seed(name, True, ("category", "factor"), tuple((c, f"{float(f) + k / 100:.2f}") for c, f in factors))
        for k, name in enumerate(("currency_rates", "region_weights", "channel_costs"))
    ]
    tiers = Seed(
        "product_tiers",
        False,
        ("category", "tier", "factor"),
        tuple((c, ("gold", "silver", "bronze")[i % 3], f"{1 - i / 20:.2f}") for i, c in enumerate(CATEGORIES)),
    )
    countries = Seed(
        "country_codes",
        False,
        ("country_code", "country_name", "region"),
        tuple(
            (f"{chr(65 + i // 26)}{chr(65 + i % 26)}", f"Country {i:03d}", ("EMEA", "APAC", "AMER")[i % 3])
            for i in range(120)
        ),
    )
    return [*fed, tiers, countries]


def plan(
    models: int,
    *,
    layers: int | None = None,
    seed: int = 0,
    sources: int | None = None,
    test_share: float = 0.4,
    incremental_share: float = 0.04,
    ephemeral_share: float = 0.02,
    reference_share: float = 0.08,
    unit_test_share: float = 0.05,
    contract_share: float = 0.1,
    snapshots: int | None = None,
) -> tuple[list[Model], list[str], list[Snapshot]]:
    """The layered models (in layer order), then the reference and history models; the source table names; the
    snapshots. Nothing is written."""
    layers = layers or default_layers(models)
    if layers < 2:
        raise ValueError("layers must be at least 2 (staging and marts)")
    rng = random.Random(seed)
    source_names = [f"src_{i:02d}" for i in range(sources or min(20, max(3, models // 100)))]
    reference = [s for s in seeds() if s.feeds_source]
    reference_models = [
        Model(f"stg_reference__{s.name}", 0, "operations", "staging", (), s.name, "view", True, (), kind="reference")
        for s in reference
    ]
    planned: list[Model] = []
    by_layer: list[list[Model]] = []
    number = 0
    incrementals = 0
    for layer, size in enumerate(layer_sizes(models, layers)):
        folder = folder_of(layer, layers)
        prefix = {"staging": "stg", "intermediate": "int", "marts": "mart"}[folder]
        earlier = [m for previous in by_layer for m in previous]
        current: list[Model] = []
        for _ in range(size):
            domain = DOMAINS[number % len(DOMAINS)]
            name = f"{prefix}_{domain}__m{number:05d}"
            # Every draw is made for every model, so later draws do not depend on earlier outcomes.
            tags = tuple(t for t, share in (("pii", 0.1), ("hourly", 0.05)) if rng.random() < share)
            tested = rng.random() < test_share
            draws = {k: rng.random() for k in ("kind", "join", "unit", "contract", "values", "rel", "nonneg")}
            reference_model = rng.choice(reference_models)
            source, chosen = None, []
            if layer == 0:  # staging: a view over one source table
                source = rng.choice(source_names)
            else:  # one parent from the layer right above, up to two more from any earlier layer
                fan_in = rng.choice((1, 1, 2, 2, 3))
                chosen = [rng.choice(by_layer[layer - 1])]
                for _ in range(fan_in - 1):
                    candidate = rng.choice(earlier)
                    if candidate not in chosen:
                        chosen.append(candidate)
            parents = tuple(m.name for m in chosen)
            materialized, strategy, joined_seed = "view" if layer == 0 else "table", None, None
            if folder == "intermediate" and draws["kind"] < incremental_share:
                materialized = "incremental"
                strategy = INCREMENTAL_STRATEGIES[incrementals % len(INCREMENTAL_STRATEGIES)]
                incrementals += 1
            elif folder == "intermediate" and draws["kind"] < incremental_share + ephemeral_share:
                materialized = "ephemeral"
            elif folder == "intermediate" and draws["join"] < reference_share:
                parents += (reference_model.name,)
            elif folder == "intermediate" and draws["join"] < reference_share * 1.5:
                joined_seed = JOINED_SEED
            # Unit tests and relationships tests cannot point at an ephemeral model (it has no relation).
            first_is_relation = bool(chosen) and chosen[0].materialized != "ephemeral"
            plain = materialized == "table" and len(parents) == 1 and joined_seed is None and first_is_relation
            testable = materialized != "ephemeral"
            current.append(
                Model(
                    name,
                    layer,
                    domain,
                    folder,
                    parents,
                    source,
                    materialized,
                    tested and testable,
                    tags,
                    seed=joined_seed,
                    incremental_strategy=strategy,
                    contract=folder == "marts" and draws["contract"] < contract_share,
                    unit_tested=plain and draws["unit"] < unit_test_share,
                    accepted_values=tested and testable and draws["values"] < (0.3 if layer == 0 else 0.1),
                    relationship=chosen[0].name if testable and first_is_relation and draws["rel"] < 0.05 else None,
                    non_negative=folder == "marts" and draws["nonneg"] < 0.2,
                )
            )
            number += 1
        by_layer.append(current)
        planned.extend(current)
    staging = [m for m in by_layer[0]]
    count = snapshots if snapshots is not None else min(8, max(2, models // 150))
    snaps = [Snapshot(f"snap_{m.name}", m.name, ("timestamp", "check")[i % 2]) for i, m in enumerate(staging[:count])]
    history = [
        Model(
            f"mart_{s.model.split('_', 1)[1].split('__')[0]}__history_{i:02d}",
            layers - 1,
            s.model.split("_", 1)[1].split("__")[0],
            "marts",
            (s.name,),
            None,
            "table",
            True,
            (),
            kind="history",
        )
        for i, s in enumerate(snaps)
    ]
    return [*planned, *reference_models, *history], source_names, snaps


def generate(
    path: Path | str,
    models: int,
    *,
    layers: int | None = None,
    seed: int = 0,
    sources: int | None = None,
    rows: int = 200,
    test_share: float = 0.4,
    incremental_share: float = 0.04,
    create_database: bool = True,
    landing: bool = False,
) -> Project:
    """Write the project into `path` (created; files of an earlier project of the same name are overwritten).
    `models` counts the layered models; the reference and history models and the package's model come on top.

    `landing`: the source tables are raw tables of the code location's ingestion instead of tables the generator
    creates: each source names its ingestion asset (`meta.dagster.asset_key: [raw, <table>]`, schema `raw`), the
    profile's warehouse is DUCKDB_PATH, and `contracts.yaml` beside dbt_project.yml declares their landing files
    (point LANDING_CONTRACTS_PATH at it; `write_landing_files` writes a day's files). No database is created."""
    path = Path(path)
    planned, source_names, snaps = plan(
        models,
        layers=layers,
        seed=seed,
        sources=sources,
        test_share=test_share,
        incremental_share=incremental_share,
    )
    layer_count = max(m.layer for m in planned) + 1
    seed_list = seeds()
    path.mkdir(parents=True, exist_ok=True)
    _write(path / "dbt_project.yml", _project_yml(planned))
    _write(path / "profiles.yml", _profiles(landing))
    _write_packages(path)
    _write(path / "macros" / "generate_schema_name.sql", _GENERATE_SCHEMA_NAME)
    _write(path / "macros" / "nullif_blank.sql", _NULLIF_BLANK)
    _write(path / "models" / "_sources.yml", _sources_yml(source_names, seed_list, landing))
    _write(path / "models" / "_groups.yml", _groups_yml())
    _write(path / "models" / "_docs.md", _DOCS)
    tests = len(source_names)  # not_null on each source's id
    for s in seed_list:
        _write(path / "seeds" / f"{s.name}.csv", _csv(s))
    _write(path / "seeds" / "_seeds.yml", _dump({"version": 2, "seeds": [_seed_yml(s) for s in seed_list]}))
    tests += 2 * len(seed_list)  # unique + not_null on each seed's key
    _write(path / "snapshots" / "_snapshots.yml", _dump({"snapshots": [_snapshot_yml(s) for s in snaps]}))
    tests += len(snaps)  # not_null on each snapshot's id
    grouped: dict[tuple[str, str], list[Model]] = {}
    for model in planned:
        folder = path / "models" / model.folder / model.domain
        _write(folder / f"{model.name}.sql", _model_sql(model, layer_count))
        grouped.setdefault((model.folder, model.domain), []).append(model)
    unit_tests = 0
    for (folder, domain), members in grouped.items():
        text, counts = _models_yml(members)
        _write(path / "models" / folder / domain / f"_{domain}__models.yml", text)
        tests += counts[0]
        unit_tests += counts[1]
    marts = [m for m in planned if m.folder == "marts" and m.kind == "layered"]
    semantic, metrics = _write_metrics(path, marts)
    tests += 1  # unique on the time spine's day
    exposures = _write_exposures(path, marts)
    tests += _write_singular_tests(path, marts)
    _write(path / "analyses" / "amount_by_domain.sql", _analysis(marts))
    project = Project(
        path,
        planned,
        source_names,
        layer_count,
        rows,
        seeds=seed_list,
        snapshots=snaps,
        semantic_models=semantic,
        metrics=metrics,
        exposures=exposures,
        tests=tests,
        unit_tests=unit_tests,
    )
    project.by_name = {m.name: m for m in planned}
    if landing:
        _write(path / CONTRACTS_FILE, _contracts_yml(source_names))
    elif create_database:
        create_sources(project.database, source_names, rows)
    return project


def create_sources(database: Path, source_names: list[str], rows: int) -> None:
    """(Re)create the source tables: `rows` rows each, `id` 1..rows unique, deterministic values. The seeds are not
    loaded here: `dbt seed` / `dbt build` load them."""
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


#: (landing) the contracts file written beside dbt_project.yml, and the landing system of its tables
CONTRACTS_FILE = "contracts.yaml"
LANDING_SYSTEM = "synth"
SOURCE_COLUMNS = {"id": "BIGINT", "amount": "DOUBLE", "category": "VARCHAR", "updated_at": "TIMESTAMP"}


def _contracts_yml(source_names: list[str]) -> str:
    tables = {
        name: {
            "file": name,
            "description": f"Synthetic raw table {name}: one file per landing day.",
            "primary_key": ["id"],
            "columns": dict(SOURCE_COLUMNS),
        }
        for name in source_names
    }
    system = {"description": "The synthetic project's source system.", "owner": OWNERS["operations"]}
    return _dump({"systems": {LANDING_SYSTEM: {**system, "tables": tables}}})


def write_landing_files(landing: Path, day: str, source_names: list[str], rows: int, first_id: int = 1) -> list[Path]:
    """(landing) One CSV per source table for landing day `day` (YYYY-MM-DD): ids `first_id`.., the values
    `create_sources` gives the same ids, `updated_at` on that day. Returns the files written."""
    written = []
    for number, name in enumerate(source_names):
        lines = [",".join(SOURCE_COLUMNS)]
        for i in range(first_id, first_id + rows):
            amount = round(((i * 37 + number * 11) % 1000) / 10.0, 2)
            category = CATEGORIES[(i + number) % len(CATEGORIES)]
            lines.append(f"{i},{amount},{category},{day} {i % 24:02d}:00:00")
        file = landing / LANDING_SYSTEM / day / f"{name}.csv"
        _write(file, "\n".join(lines) + "\n")
        written.append(file)
    return written


# --- files ---------------------------------------------------------------------------------------------------------


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _dump(document: object) -> str:
    return yaml.safe_dump(document, sort_keys=False, width=120, default_flow_style=False)


def _csv(s: Seed) -> str:
    return "\n".join([",".join(s.columns), *(",".join(row) for row in s.rows)]) + "\n"


def _profiles(landing: bool) -> str:
    if landing:  # the raw tables are the code location's: its warehouse
        comment, path = "the code location's warehouse (its raw tables are the sources)", _LANDING_DATABASE
    else:
        comment, path = f"./{DATABASE_FILE}", DATABASE_FILE
    return f"""\
# dbt runs with the working directory at the project (so does dagster-dbt): the warehouse is {comment}.
{PROJECT_NAME}:
  target: dev
  outputs:
    dev:
      type: duckdb
      path: "{path}"
      threads: 4
"""


_LANDING_DATABASE = "{{ env_var('DUCKDB_PATH', '" + DATABASE_FILE + "') }}"

_GENERATE_SCHEMA_NAME = """\
{#- A custom schema is used as it is (seeds in `reference`, snapshots in `snapshots`), as many projects do. -#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {{ custom_schema_name | trim if custom_schema_name else target.schema }}
{%- endmacro %}
"""

_NULLIF_BLANK = """\
{% macro nullif_blank(column) -%}
    nullif(trim({{ column }}), '')
{%- endmacro %}
"""

_DOCS = """\
{% docs synthetic_id %}
Row key, unique within the model: the id of the source row this row descends from.
{% enddocs %}

{% docs synthetic_amount %}
Sum of the parents' amounts, scaled by reference factors where the model joins them, rounded to cents.
{% enddocs %}
"""


def _project_yml(models: list[Model]) -> str:
    lines = [
        "# Generated by bench/synthetic.py: a layered project of synthetic models over generated source tables,",
        "# with seeds, snapshots, packages, unit tests, semantic models, metrics and exposures.",
        f"name: {PROJECT_NAME}",
        'version: "1.0.0"',
        f"profile: {PROJECT_NAME}",
        'model-paths: ["models"]',
        'seed-paths: ["seeds"]',
        'snapshot-paths: ["snapshots"]',
        'test-paths: ["tests"]',
        'macro-paths: ["macros"]',
        'analysis-paths: ["analyses"]',
        "clean-targets: [target, logs]",
        "flags:",
        "  send_anonymous_usage_stats: false",
        "vars:",
        "  min_amount: 0",
        "on-run-end:",
        f'  - "{{{{ {VENDORED_PACKAGE}.record_run(results) }}}}"',
        "seeds:",
        f"  {PROJECT_NAME}:",
        f"    +schema: {SEED_SCHEMA}",
        "    +meta:",
        f"      owner: {OWNERS['operations']}",
        "snapshots:",
        f"  {PROJECT_NAME}:",
        f"    +schema: {SNAPSHOT_SCHEMA}",
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
    lines += ["    metrics:", "      +materialized: table", "      +group: finance"]
    return "\n".join(lines) + "\n"


def _write_packages(path: Path) -> None:
    """A local package (as `dbt deps` installs one: a symlink in dbt_packages/) and a hub package vendored in
    dbt_packages/ (committed, as teams without network access to the hub do). Neither needs `dbt deps` to parse."""
    _write(
        path / "packages.yml",
        _dump(
            {
                "packages": [
                    {"local": f"packages/{LOCAL_PACKAGE}"},
                    {"package": f"synthetic-labs/{VENDORED_PACKAGE}", "version": "1.2.0"},
                ]
            }
        ),
    )
    local = path / "packages" / LOCAL_PACKAGE
    _write(local / "dbt_project.yml", f'name: {LOCAL_PACKAGE}\nversion: "0.3.0"\nconfig-version: 2\n')
    _write(
        local / "macros" / "money.sql",
        "{% macro money(expression) -%}\n    round({{ expression }}, 2)\n{%- endmacro %}\n",
    )
    _write(
        local / "macros" / "test_non_negative.sql",
        "{% test non_negative(model, column_name) %}\n"
        "select * from {{ model }} where {{ column_name }} < 0\n"
        "{% endtest %}\n",
    )
    installed = path / "dbt_packages" / LOCAL_PACKAGE
    if not installed.is_symlink():
        installed.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(Path("..") / "packages" / LOCAL_PACKAGE, installed, target_is_directory=True)
    vendored = path / "dbt_packages" / VENDORED_PACKAGE
    _write(
        vendored / "dbt_project.yml",
        f'name: {VENDORED_PACKAGE}\nversion: "1.2.0"\nconfig-version: 2\n'
        f"models:\n  {VENDORED_PACKAGE}:\n    +materialized: table\n",
    )
    _write(
        vendored / "macros" / "record_run.sql",
        "{#- on-run-end: one row per invocation in an audit table -#}\n"
        "{% macro record_run(results) %}\n"
        "  {% if execute %}\n"
        "    create table if not exists {{ target.schema }}.audit_runs"
        " (invocation_id varchar, nodes integer, finished_at timestamp);\n"
        "    insert into {{ target.schema }}.audit_runs values"
        " ('{{ invocation_id }}', {{ results | length }}, current_timestamp);\n"
        "  {% endif %}\n"
        "{% endmacro %}\n",
    )
    _write(
        vendored / "models" / "audit__domains.sql",
        "select * from (values " + ", ".join(f"('{d}', '{OWNERS[d]}')" for d in DOMAINS) + ") as t(domain, owner)\n",
    )


def _sources_yml(source_names: list[str], seed_list: list[Seed], landing: bool) -> str:
    def table(name: str) -> dict:
        spec: dict = {"name": name, "columns": [{"name": "id", "data_tests": ["not_null"]}]}
        if landing:
            spec["config"] = {"meta": {"dagster": {"asset_key": ["raw", name]}}}
        return spec

    synth = {
        "name": SOURCE_NAME,
        "schema": "raw" if landing else SOURCE_SCHEMA,
        "description": "Raw tables the code location loads from landing files."
        if landing
        else "Tables the generator creates in the warehouse (stand-ins for loaded raw data).",
        "config": {
            "loaded_at_field": "updated_at",
            "freshness": {"warn_after": {"count": 1, "period": "day"}},
        },
        "tables": [table(name) for name in source_names],
    }
    reference = {
        "name": REFERENCE_SOURCE,
        "schema": SEED_SCHEMA,
        "description": "Reference tables the project's own seeds load (declared as sources, as many projects do).",
        "tables": [{"name": s.name} for s in seed_list if s.feeds_source],
    }
    return _dump({"version": 2, "sources": [synth, reference]})


def _groups_yml() -> str:
    groups = [{"name": d, "owner": {"name": f"{d} analytics", "email": OWNERS[d]}} for d in DOMAINS]
    return _dump({"version": 2, "groups": groups})


def _seed_yml(s: Seed) -> dict:
    key = s.columns[0]
    return {
        "name": s.name,
        "description": f"Reference data: {s.name.replace('_', ' ')}.",
        "config": {"column_types": {c: "double" if c == "factor" else "varchar" for c in s.columns}},
        "columns": [{"name": key, "data_tests": ["unique", "not_null"]}],
    }


def _snapshot_yml(s: Snapshot) -> dict:
    config: dict = {"unique_key": "id", "strategy": s.strategy}
    if s.strategy == "timestamp":
        config["updated_at"] = "updated_at"
    else:
        config["check_cols"] = ["amount", "category"]
    return {
        "name": s.name,
        "relation": f"ref('{s.model}')",
        "description": f"History of {s.model} ({s.strategy} strategy).",
        "config": config,
        "columns": [{"name": "id", "data_tests": ["not_null"]}],
    }


def _model_sql(model: Model, layers: int) -> str:
    header = f"-- layer {model.layer} of {layers}, domain {model.domain}\n"
    if model.kind == "reference":
        return f"{header}select category, factor\nfrom {{{{ source('{REFERENCE_SOURCE}', '{model.source}') }}}}\n"
    if model.kind == "history":
        return (
            f"{header}select id, count(*) as versions, max(dbt_valid_from) as last_changed_at\n"
            f"from {{{{ ref('{model.parents[0]}') }}}}\ngroup by id\n"
        )
    if model.source is not None:
        return (
            f"{header}select id, amount, {{{{ nullif_blank('category') }}}} as category, updated_at\n"
            f"from {{{{ source('{SOURCE_NAME}', '{model.source}') }}}}\n"
        )
    config = ""
    if model.materialized == "incremental":
        unique = ", unique_key='id'" if model.incremental_strategy != "append" else ""
        config = (
            f"{{{{ config(materialized='incremental', incremental_strategy='{model.incremental_strategy}'{unique},"
            " on_schema_change='append_new_columns') }}\n\n"
        )
    elif model.materialized == "ephemeral":
        config = "{{ config(materialized='ephemeral') }}\n\n"
    layered = [p for p in model.parents if not p.startswith("stg_reference__")]
    reference = [p for p in model.parents if p.startswith("stg_reference__")]
    amount = " + ".join(["p1.amount"] + [f"coalesce(p{i}.amount, 0)" for i in range(2, len(layered) + 1)])
    joins = "".join(
        f"\nleft join {{{{ ref('{parent}') }}}} as p{i} on p{i}.id = p1.id"
        for i, parent in enumerate(layered[1:], start=2)
    )
    if reference:
        joins += f"\nleft join {{{{ ref('{reference[0]}') }}}} as r on r.category = p1.category"
        amount = f"({amount}) * coalesce(r.factor, 1)"
    if model.seed:
        joins += f"\nleft join {{{{ ref('{model.seed}') }}}} as s on s.category = p1.category"
        amount = f"({amount}) * coalesce(s.factor, 1)"
    where = ""
    if model.materialized == "incremental":
        where = (
            "\n{% if is_incremental() %}\nwhere p1.updated_at > (select coalesce(max(updated_at), "
            "timestamp '1970-01-01') from {{ this }})\n{% endif %}"
        )
    elif model.folder == "marts":
        where = "\nwhere p1.amount >= {{ var('min_amount') }}"
    return (
        f"{header}{config}select\n    p1.id,\n    {{{{ {LOCAL_PACKAGE}.money('{amount}') }}}} as amount,\n"
        f"    p1.category,\n    p1.updated_at\nfrom {{{{ ref('{layered[0]}') }}}} as p1{joins}{where}\n"
    )


def _models_yml(models: list[Model]) -> tuple[str, tuple[int, int]]:
    """The properties file of one folder, and the (data tests, unit tests) it declares."""
    entries, unit_tests, tests = [], [], 0
    for model in models:
        if model.kind == "reference":
            entries.append(
                {
                    "name": model.name,
                    "description": f"The {model.source} reference table, as loaded by its seed.",
                    "columns": [{"name": "category", "data_tests": ["unique", "not_null"]}, {"name": "factor"}],
                }
            )
            tests += 2
            continue
        if model.kind == "history":
            entries.append(
                {
                    "name": model.name,
                    "description": f"Versions per id in {model.parents[0]}.",
                    "columns": [{"name": "id", "data_tests": ["unique"]}, {"name": "versions"}],
                }
            )
            tests += 1
            continue
        reads = f"source {model.source}" if model.source else ", ".join(model.parents)
        entry: dict = {"name": model.name, "description": f"Layer {model.layer} {model.domain} model over {reads}."}
        config: dict = {}
        if model.tags:
            config["tags"] = list(model.tags)
        if model.contract:
            config["contract"] = {"enforced": True}
        if config:
            entry["config"] = config
        id_column: dict = {"name": "id", "description": '{{ doc("synthetic_id") }}'}
        id_tests: list = []
        if model.tested:
            id_tests += ["unique", "not_null"]
        if model.relationship:
            id_tests.append({"relationships": {"arguments": {"to": f"ref('{model.relationship}')", "field": "id"}}})
        if id_tests:
            id_column["data_tests"] = id_tests
        amount: dict = {"name": "amount", "description": '{{ doc("synthetic_amount") }}'}
        if model.non_negative:
            amount["data_tests"] = [f"{LOCAL_PACKAGE}.non_negative"]
        category: dict = {"name": "category"}
        if model.accepted_values:
            category["data_tests"] = [{"accepted_values": {"arguments": {"values": list(CATEGORIES)}}}]
        columns = [id_column, amount, category, {"name": "updated_at"}]
        if model.contract:
            types = {"id": "bigint", "amount": "double", "category": "varchar", "updated_at": "timestamp"}
            for column in columns:
                column["data_type"] = types[column["name"]]
        entry["columns"] = columns
        entries.append(entry)
        tests += len(id_tests) + model.non_negative + model.accepted_values
        if model.unit_tested:
            unit_tests.append(_unit_test(model))
    document: dict = {"version": 2, "models": entries}
    if unit_tests:
        document["unit_tests"] = unit_tests
    return _dump(document), (tests, len(unit_tests))


def _unit_test(model: Model) -> dict:
    """The model rounds its one parent's amounts to cents (and marts drop negative ones)."""
    given = [
        {"id": 1, "amount": 10.126, "category": "alpha", "updated_at": "2026-01-01 00:00:00"},
        {"id": 2, "amount": 3.5, "category": "beta", "updated_at": "2026-01-02 06:00:00"},
    ]
    expected = [dict(row, amount=round(row["amount"], 2)) for row in given]
    return {
        "name": f"test_{model.name}_rounds_amounts",
        "model": model.name,
        "description": "Amounts are rounded to cents.",
        "given": [{"input": f"ref('{model.parents[0]}')", "rows": given}],
        "expect": {"rows": expected},
    }


def _write_metrics(path: Path, marts: list[Model]) -> tuple[dict[str, str], list[str]]:
    """A time spine, one semantic model per domain (its first mart) and a metric each, plus a derived one."""
    folder = path / "models" / "metrics"
    _write(
        folder / "metricflow_time_spine.sql",
        "select cast(range as date) as date_day\nfrom range(date '2025-01-01', date '2027-01-01', interval 1 day)\n",
    )
    spine = {
        "name": "metricflow_time_spine",
        "description": "One row per day: the time spine MetricFlow joins metrics to.",
        "time_spine": {"standard_granularity_column": "date_day"},
        "columns": [{"name": "date_day", "granularity": "day", "data_tests": ["unique"]}],
    }
    semantic: dict[str, str] = {}
    documents, metrics = [], []
    for domain in DOMAINS:
        mart = next((m for m in marts if m.domain == domain), None)
        if mart is None:
            continue
        name = f"{domain}_amounts"
        semantic[name] = mart.name
        documents.append(
            {
                "name": name,
                "description": f"Amounts of {mart.name}.",
                "model": f"ref('{mart.name}')",
                "defaults": {"agg_time_dimension": "updated_at"},
                "entities": [{"name": f"{domain}_row", "type": "primary", "expr": "id"}],
                "dimensions": [
                    {"name": "category", "type": "categorical"},
                    {"name": "updated_at", "type": "time", "type_params": {"time_granularity": "day"}},
                ],
                "measures": [
                    {"name": f"{domain}_amount", "agg": "sum", "expr": "amount"},
                    {"name": f"{domain}_rows", "agg": "count", "expr": "id"},
                ],
            }
        )
        metrics.append(f"{domain}_total_amount")
    metric_yml = [
        {"name": f"{domain}_total_amount", "label": f"{domain} amount", "type": "simple",
         "type_params": {"measure": f"{domain}_amount"}}
        for domain in (m.removesuffix("_total_amount") for m in metrics)
    ]  # fmt: skip
    if len(metrics) >= 2:
        metric_yml.append(
            {
                "name": "combined_amount",
                "label": "combined amount",
                "type": "derived",
                "type_params": {"expr": f"{metrics[0]} + {metrics[1]}", "metrics": [metrics[0], metrics[1]]},
            }
        )
        metrics.append("combined_amount")
    _write(
        folder / "_metrics.yml",
        _dump({"version": 2, "models": [spine], "semantic_models": documents, "metrics": metric_yml}),
    )
    return semantic, metrics


def _write_exposures(path: Path, marts: list[Model]) -> dict[str, tuple[str, ...]]:
    exposures: dict[str, tuple[str, ...]] = {}
    documents = []
    for domain in DOMAINS:
        used = tuple(m.name for m in marts if m.domain == domain)[:3]
        if not used:
            continue
        name = f"{domain}_dashboard"
        exposures[name] = used
        documents.append(
            {
                "name": name,
                "type": "dashboard",
                "maturity": "high",
                "url": f"https://bi.synthetic.example/{domain}",
                "description": f"The {domain} team's dashboard.",
                "owner": {"name": f"{domain} analytics", "email": OWNERS[domain]},
                "depends_on": [f"ref('{m}')" for m in used],
            }
        )
    _write(path / "models" / "_exposures.yml", _dump({"version": 2, "exposures": documents}))
    return exposures


def _write_singular_tests(path: Path, marts: list[Model]) -> int:
    written = 0
    for domain in DOMAINS:
        mart = next((m for m in marts if m.domain == domain), None)
        if mart is None:
            continue
        _write(
            path / "tests" / f"assert_{domain}_amounts_are_cents.sql",
            f"-- amounts are rounded to cents\nselect * from {{{{ ref('{mart.name}') }}}}\n"
            "where amount <> round(amount, 2)\n",
        )
        written += 1
    return written


def _analysis(marts: list[Model]) -> str:
    unions = "\nunion all\n".join(
        f"select '{m.domain}' as domain, sum(amount) as amount from {{{{ ref('{m.name}') }}}}" for m in marts[:3]
    )
    return f"-- ad-hoc: amounts per domain (dbt compiles analyses, never runs them)\n{unions}\n"
