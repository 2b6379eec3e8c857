"""Analytics pipeline code location: landing files -> DuckDB raw tables -> dbt -> activation syncs."""
