"""A dbt Cloud-shaped Administrative API v2 whose runs really execute dbt Core, for `make dev` and the tests.

dagster-dbt's dbt Cloud integration (``DbtCloudWorkspace``, its client, run handler and sensor) talks to this
server as it would to dbt Cloud; only the access URL and token differ. It speaks what that client calls, in dbt
Cloud's shapes (``{"status": {...}, "data": ...}``): the account, project and environment; jobs (list with paging,
create, get, delete, trigger); runs (list with the filters the sensor and the ad hoc job pool use, get with
``include_related``, cancel) and their artifacts. See `devstack.dbt_cloud.api` for the routes.

Deliberate simplifications, so tests do not rely on them by accident:

- One account, one project, one environment (ids from the command line, 1 by default); state lives in memory, so
  a restart forgets jobs and runs (run folders stay on disk under ``<data>/runs/``).
- A run's preamble steps ("Clone git repository", "Create profile from connection", "Invoke dbt deps") are
  recorded but do nothing: the project folder is used as it is. Steps must be ``dbt ...`` commands.
- Trigger overrides other than ``steps_override`` (git branch, schema, threads, target) are not applied; no
  schedules fire (a job's ``schedule`` is data for an importer to read).
- Artifacts are listed and served once the run has ended, from its own target folder.

The modules, by concern:

- `devstack.dbt_cloud.errors`: dbt Cloud's response envelope and error shape;
- `devstack.dbt_cloud.store`: the in-memory workspace (`Workspace`, `Job`, `Run`), JSON shapes, run states;
- `devstack.dbt_cloud.runner`: the run workers (`RunWorkers`): one run per job at a time, dbt subprocesses;
- `devstack.dbt_cloud.faults`: switchable faults (`FaultConfig`): failing, slow and cancelled runs, 500s on
  polls, 429s, 401s;
- `devstack.dbt_cloud.api`: `create_app`, the routes, token auth;
- `devstack.dbt_cloud.cli`: `main`, the command line (``python -m devstack.dbt_cloud``).
"""

from devstack.dbt_cloud.api import create_app
from devstack.dbt_cloud.cli import main
from devstack.dbt_cloud.faults import FaultConfig
from devstack.dbt_cloud.store import Seed, Workspace

__all__ = ["FaultConfig", "Seed", "Workspace", "create_app", "main"]
