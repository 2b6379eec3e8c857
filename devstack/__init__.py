"""Local stand-ins for the external systems the pipeline talks to.

Each stand-in is a real HTTP server (a Starlette app served by uvicorn), so `make dev` and the integration tests
exercise the same client code, retries and serialisation as production; only the base URL and token differ.

- `devstack.crm`: a HubSpot-CRM-v3-shaped contacts API backed by SQLite (a package: storage, routes, faults, ...).
- `devstack.webhook_receiver`: records incoming webhook POSTs (Slack incoming-webhook stand-in).
- `devstack.serve`: `ServerThread` runs any of them in-process on an ephemeral loopback port (tests),
  and the shared command-line plumbing (`python -m devstack.crm ...`).
- `devstack.dev`: `make dev`, the servers above and `dagster dev`, stopped together by one Ctrl-C.
- `devstack.dagster_dev`: the same stack, fully temporary, for the browser test and the benchmarks.
- `devstack/dagster.yaml`: the local Dagster instance they run (`INSTANCE_YAML`).
"""

from pathlib import Path

#: The local Dagster instance's config: `make dev` copies it into DAGSTER_HOME, tests into their temporary homes.
INSTANCE_YAML = Path(__file__).with_name("dagster.yaml")
