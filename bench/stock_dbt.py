"""Stock dagster-dbt over the dbt project at DBT_PROJECT_DIR: what a user would write instead of this code location.

The baseline of bench P1 (Definitions load) and P2 (a run of every dbt asset): a plain `@dbt_assets` over the
project's parsed manifest with dagster-dbt's default translator, and a `DbtCliResource` with the dbt beside this
interpreter. The op streams `dbt build`.

STOCK_DBT_SEED_FIRST=1 is what stock dagster-dbt takes to run a project whose seeds load tables it also reads as
sources (bench/synthetic.py's shape). A plain `dbt build` of it may run a reader before its seed on a fresh warehouse;
the usual cure is to run `dbt seed` first (untracked, `.wait()`: the build seeds again, as bare
`dbt seed && dbt build` does). But with dagster-dbt 0.29's defaults that build then fails in Dagster: the source's
dependency carries the table's name (`enable_source_metadata`), Dagster resolves it to the seed of that table (its
beta dependency resolution by table name), so the seed is upstream of the reader in the asset graph, while `dbt
build` knows no such edge and may report the reader first: "Asset ... was yielded before its dependency ...
Multiassets yielding multiple asset outputs must yield them in topological order". So the flag also turns
`enable_source_metadata` off (the source stays an external asset of its own), the least change that runs.

The in-process executor, as this code location uses (pipeline/automation/execution.py): the run's cost is the
integration's, not a step process's start-up.

Load it as a code location: `dagster asset materialize -m bench.stock_dbt --select ...`, or `defs()`.
"""

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtCliResource, dbt_assets

#: the op's name: the benchmarks find the stock dbt assets by it
OP_NAME = "stock_dbt"


@dg.definitions
def defs() -> dg.Definitions:
    project_dir = Path(os.environ["DBT_PROJECT_DIR"])
    profiles_dir = os.environ.get("DBT_PROFILES_DIR") or str(project_dir)
    seed_first = os.environ.get("STOCK_DBT_SEED_FIRST") == "1"

    translator = DagsterDbtTranslator(DagsterDbtTranslatorSettings(enable_source_metadata=not seed_first))

    @dbt_assets(manifest=project_dir / "target" / "manifest.json", name=OP_NAME, dagster_dbt_translator=translator)
    def stock_dbt(context: dg.AssetExecutionContext, dbt: DbtCliResource) -> Iterator[Any]:
        if seed_first:
            dbt.cli(["seed"]).wait()
        yield from dbt.cli(["build"], context=context).stream()

    dbt = DbtCliResource(
        project_dir=str(project_dir),
        profiles_dir=profiles_dir,
        dbt_executable=str(Path(sys.executable).with_name("dbt")),
    )
    return dg.Definitions(assets=[stock_dbt], resources={"dbt": dbt}, executor=dg.in_process_executor)
