"""A ready-made mart for the activation tests: `dim_customers` with the columns the contacts sync maps, written
straight into a DuckDB file (no dbt run needed)."""

from pathlib import Path

import duckdb


def make_dim_customers(db: Path, customers: int) -> None:
    """`dim_customers` with customer ids 1..`customers` (emails c<id>@x.io) in the DuckDB file `db`."""
    with duckdb.connect(str(db)) as conn:
        conn.execute(
            """CREATE TABLE dim_customers AS SELECT i AS customer_id, 'c' || i || '@x.io' AS email, 'A' AS first_name,
               'B' AS last_name, 'US' AS country_code, 'North America' AS region, true AS marketing_opt_in,
               'new' AS customer_segment, i * 1.5 AS lifetime_value, 1 AS order_count,
               TIMESTAMP '2026-11-01' AS last_order_at FROM range(1, ? + 1) t(i)""",
            [customers],
        )
