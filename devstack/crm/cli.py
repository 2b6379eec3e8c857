"""The CRM stand-in's command line, ``python -m devstack.crm``: where the SQLite file is, the bearer token, the
faults to switch on (`FaultConfig`), and the shared server options of `devstack.serve` (host, port, log level).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from devstack.crm.api import create_app
from devstack.crm.faults import FaultConfig
from devstack.serve import parse_args, run_forever, server_arg_parser

logger = logging.getLogger(__name__)


def main(argv: Sequence[str] | None = None) -> None:
    parser = server_arg_parser("HubSpot-shaped CRM contacts API backed by SQLite (devstack).", default_port=8765)
    parser.prog = "python -m devstack.crm"  # not "__main__.py", what argparse makes of a package's entry point
    parser.add_argument("--db", type=Path, default=Path(".data/crm.sqlite"), help="SQLite file (default: %(default)s)")
    parser.add_argument("--token", default=None, help="bearer token to require (default: $CRM_TOKEN; empty: no auth)")
    faults = parser.add_argument_group("fault injection (batch upsert only; default: off)")
    faults.add_argument("--rate-limit-every", type=int, default=0, metavar="N", help="429 every Nth request")
    faults.add_argument("--retry-after-seconds", type=float, default=1.0, help="Retry-After of those 429s")
    faults.add_argument("--error-rate", type=float, default=0.0, metavar="P", help="probability of a 503")
    faults.add_argument("--slow-seconds", type=float, default=0.0, help="delay before handling each request")
    faults.add_argument("--drop-rate", type=float, default=0.0, metavar="P", help="probability of a dropped connection")
    faults.add_argument(
        "--fail-after-apply-rate", type=float, default=0.0, metavar="P", help="probability of a 500 after applying"
    )
    faults.add_argument("--seed", type=int, default=None, help="seed for the fault dice (default: random)")
    args = parse_args(parser, argv)
    token = (args.token if args.token is not None else os.environ.get("CRM_TOKEN")) or None
    try:
        fault_config = FaultConfig(
            rate_limit_every=args.rate_limit_every,
            retry_after_seconds=args.retry_after_seconds,
            error_rate=args.error_rate,
            slow_seconds=args.slow_seconds,
            drop_rate=args.drop_rate,
            fail_after_apply_rate=args.fail_after_apply_rate,
            seed=args.seed,
        )
    except ValueError as exc:
        parser.error(str(exc))
    app = create_app(args.db, token, fault_config)
    logger.info("CRM stand-in: db=%s, auth=%s, faults=%s", args.db, "bearer token" if token else "off", fault_config)
    run_forever(app, host=args.host, port=args.port, log_level=args.log_level)
