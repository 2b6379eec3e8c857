"""The executor every job of this code location uses."""

import dagster as dg

#: Steps still run in their own processes, but forked from a server that has already imported the code
#: location: importing dagster, dagster-dbt and dbt costs ~10 s on a small machine, once per step otherwise.
#: Parallelism inside a run is small anyway: every step that touches DuckDB waits for the one `warehouse` slot.
EXECUTOR = dg.multiprocess_executor.configured(
    {"max_concurrent": 4, "start_method": {"forkserver": {"preload_modules": ["pipeline.definitions"]}}}
)
