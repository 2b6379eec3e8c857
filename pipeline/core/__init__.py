"""The shared lower layer: settings and declared files, SQL quoting, object stores (landing files, dbt artifacts),
the retrying HTTP transport and the Dagster resources. Every stage may import it; it imports no stage."""
