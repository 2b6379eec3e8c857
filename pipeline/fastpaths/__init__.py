"""Fast paths that rely on Dagster, dagster-dbt or dbt-duckdb internals (see README, "Fast paths")."""
