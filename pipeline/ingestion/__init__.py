"""Landing store -> raw tables: contracts, loaders and the ingestion assets."""
