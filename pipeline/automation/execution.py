"""The executor every job of this code location uses."""

import dagster as dg

#: Steps run one after another in the run's own process. Every step that touches DuckDB waits for the one
#: `warehouse` slot anyway, so a process per step (the multiprocess executor, even forked from a preloaded server)
#: bought no parallelism here, only ~4 s per step to start a process and load the code location again: on an
#: arrival that is the raw load's step and then dbt's and each sync's (bench P7). Pools, retries and retry policies
#: work the same in process.
EXECUTOR = dg.in_process_executor
