{#-
    Incremental on purpose: orders keep changing for weeks (paid -> shipped -> delivered -> returned), so each run
    re-selects every order whose status or payments changed within `fct_orders_lookback_days` of the newest change
    already in the table, and delete+insert replaces those orders whole. A late change inside the lookback is
    merged; the result equals a full refresh.
-#}
{{
    config(
        materialized='incremental',
        unique_key='order_id',
        incremental_strategy='delete+insert',
        on_schema_change='append_new_columns',
    )
}}

with orders as (

    select * from {{ ref('stg_shop__orders') }}

),

order_totals as (

    select * from {{ ref('int_orders__items_summarised') }}

),

order_payments as (

    select * from {{ ref('int_orders__payments_summarised') }}

),

{% if is_incremental() %}
changed_since as (

    select
        coalesce(max(last_changed_at), timestamp '1970-01-01')
        - to_days({{ var('fct_orders_lookback_days') }}) as cutoff
    from {{ this }}

),

changed_orders as (

    select order_id from orders
    where updated_at >= (select cutoff from changed_since)
    union
    select order_id from order_payments
    where last_payment_at >= (select cutoff from changed_since)

),
{% endif %}

final as (

    select
        orders.order_id,
        orders.customer_id,
        orders.order_status,
        orders.sales_channel,
        orders.shipping_country,
        orders.ordered_at,
        orders.order_date,
        coalesce(order_totals.item_count, 0) as item_count,
        coalesce(order_totals.total_quantity, 0) as total_quantity,
        coalesce(order_totals.gross_amount, 0) as gross_amount,
        coalesce(order_totals.discount_amount, 0) as discount_amount,
        coalesce(order_totals.order_total, 0) as order_total,
        coalesce(order_totals.cost_amount, 0) as cost_amount,
        order_payments.payment_method,
        coalesce(order_payments.payment_attempt_count, 0) as payment_attempt_count,
        coalesce(order_payments.failed_payment_count, 0) as failed_payment_count,
        coalesce(order_payments.succeeded_amount, 0) as succeeded_amount,
        coalesce(order_payments.refunded_amount, 0) as refunded_amount,
        coalesce(order_payments.net_paid_amount, 0) as net_paid_amount,
        order_payments.first_paid_at as paid_at,
        order_payments.refunded_at,
        orders.updated_at,
        greatest(orders.updated_at, coalesce(order_payments.last_payment_at, orders.updated_at)) as last_changed_at
    from orders
    left join order_totals
        on orders.order_id = order_totals.order_id
    left join order_payments
        on orders.order_id = order_payments.order_id
    {% if is_incremental() %}
    where orders.order_id in (select order_id from changed_orders)
    {% endif %}

)

select * from final
