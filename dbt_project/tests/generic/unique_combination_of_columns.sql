{#- A grain check for tables keyed by several columns (dbt's own `unique` takes one; we ship no packages). -#}
{% test unique_combination_of_columns(model, combination_of_columns) %}

    {%- set columns = combination_of_columns | join(', ') %}

    select {{ columns }}, count(*) as occurrences
    from {{ model }}
    group by {{ columns }}
    having count(*) > 1

{% endtest %}
