"""The dbt Cloud stand-in's command line, ``python -m devstack.dbt_cloud``: the dbt project its runs execute, the
profiles and data folders, the token, the seeded account/project/environment ids and jobs (``--jobs FILE``), the
faults to switch on (`FaultConfig`), and the shared server options of `devstack.serve` (host, port, log level).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from devstack.dbt_cloud.api import create_app
from devstack.dbt_cloud.faults import FaultConfig
from devstack.dbt_cloud.store import Seed
from devstack.serve import parse_args, run_forever, server_arg_parser

logger = logging.getLogger(__name__)


def load_jobs(path: Path) -> list[dict[str, Any]]:
    """A ``--jobs`` file: a JSON or YAML list of ``{name, execute_steps, cron, schedule_enabled}``."""
    jobs = yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON is YAML too
    if not isinstance(jobs, list):
        raise ValueError(f"{path}: expected a list of jobs ({{name, execute_steps, cron, schedule_enabled}})")
    return jobs


def main(argv: Sequence[str] | None = None) -> None:
    parser = server_arg_parser("dbt Cloud Admin API v2 stand-in running dbt Core (devstack).", default_port=8767)
    parser.prog = "python -m devstack.dbt_cloud"  # not "__main__.py", what argparse makes of a package's entry point
    parser.add_argument("--project-dir", type=Path, required=True, help="the dbt project the runs execute")
    parser.add_argument("--profiles-dir", type=Path, default=None, help="dbt profiles (default: the project dir)")
    parser.add_argument(
        "--data", type=Path, default=Path(".data/dbt_cloud"), help="each run's files go to DATA/runs/<id>/"
    )
    parser.add_argument("--token", default=None, help="API token to require (default: $DBT_CLOUD_TOKEN; empty: none)")
    parser.add_argument("--account-id", type=int, default=1)
    parser.add_argument("--project-id", type=int, default=1)
    parser.add_argument("--environment-id", type=int, default=1)
    parser.add_argument(
        "--jobs", type=Path, default=None, help="JSON/YAML list of jobs to create: {name, execute_steps, cron, ...}"
    )
    faults = parser.add_argument_group("fault injection (default: off; counters count down as they fire)")
    faults.add_argument("--run-error", type=int, default=0, metavar="N", help="the next N runs fail before dbt")
    faults.add_argument("--slow-seconds", type=float, default=0.0, help="every run waits this long in dbt deps")
    faults.add_argument("--cancel-runs", type=int, default=0, metavar="N", help="the next N runs end cancelled")
    faults.add_argument("--poll-500", type=int, default=0, metavar="N", help="the next N GET runs/{id} answer 500")
    faults.add_argument("--rate-limit", type=int, default=0, metavar="N", help="the next N API requests answer 429")
    faults.add_argument("--unauthorized", action="store_true", help="every API request answers 401")
    args = parse_args(parser, argv)
    token = (args.token if args.token is not None else os.environ.get("DBT_CLOUD_TOKEN")) or None
    try:
        fault_config = FaultConfig(
            run_error=args.run_error,
            slow_seconds=args.slow_seconds,
            cancel_runs=args.cancel_runs,
            poll_500=args.poll_500,
            rate_limit=args.rate_limit,
            unauthorized=args.unauthorized,
        )
        jobs = load_jobs(args.jobs) if args.jobs else []
        app = create_app(
            args.project_dir,
            args.profiles_dir or args.project_dir,
            args.data,
            token,
            seed=Seed(account_id=args.account_id, project_id=args.project_id, environment_id=args.environment_id),
            jobs=jobs,
            faults=fault_config,
        )
    except (OSError, ValueError, yaml.YAMLError) as exc:
        parser.error(str(exc))
    logger.info(
        "dbt Cloud stand-in: project=%s, data=%s, auth=%s, %d job(s), faults=%s",
        args.project_dir,
        args.data,
        "token" if token else "off",
        len(jobs),
        fault_config,
    )
    # No line per request: dagster-dbt polls every few seconds. The stand-in logs what happens (jobs, runs, faults).
    run_forever(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
