"""``python -m devstack.crm [--db FILE] [--token T] [fault options]``: serve the CRM stand-in (`devstack.crm.cli`)."""

from devstack.crm.cli import main

main()
