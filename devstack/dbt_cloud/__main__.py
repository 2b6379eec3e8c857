"""``python -m devstack.dbt_cloud --project-dir DIR [--data DIR] [--token T] [--jobs FILE] [fault options]``: serve
the dbt Cloud stand-in (`devstack.dbt_cloud.cli`)."""

from devstack.dbt_cloud.cli import main

main()
