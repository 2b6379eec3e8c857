"""dbt: the project and its manifest, the translator, and the dbt assets."""
