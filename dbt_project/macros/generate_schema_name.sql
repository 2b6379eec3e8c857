{#-
    A custom schema is used as written: the snapshot configured with `schema: snapshots` lands in `snapshots`,
    not dbt's default `<target schema>_snapshots`. Models set no custom schema, so they stay in the target
    schema (`main`) and relation names are exactly the model names.
-#}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- if custom_schema_name is none -%}
        {{ target.schema }}
    {%- else -%}
        {{ custom_schema_name | trim }}
    {%- endif -%}
{%- endmacro %}
