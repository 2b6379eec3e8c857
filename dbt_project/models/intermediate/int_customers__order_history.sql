-- Each customer's purchase history in one row. Cancelled orders never went through, so they do not count as
-- orders; returned ones do, but their refund takes them out of lifetime_value.
with orders as (

    select * from {{ ref('stg_shop__orders') }}

),

order_totals as (

    select * from {{ ref('int_orders__items_summarised') }}

),

order_payments as (

    select * from {{ ref('int_orders__payments_summarised') }}

),

orders_joined as (

    select
        orders.customer_id,
        orders.order_id,
        orders.order_status,
        orders.ordered_at,
        coalesce(order_totals.order_total, 0) as order_total,
        coalesce(order_payments.net_paid_amount, 0) as net_paid_amount,
        greatest(orders.updated_at, coalesce(order_payments.last_payment_at, orders.updated_at)) as last_changed_at
    from orders
    left join order_totals
        on orders.order_id = order_totals.order_id
    left join order_payments
        on orders.order_id = order_payments.order_id

)

select
    customer_id,
    count(*) filter (where order_status != 'cancelled') as order_count,
    count(*) filter (where order_status = 'cancelled') as cancelled_order_count,
    count(*) filter (where order_status = 'returned') as returned_order_count,
    cast(coalesce(sum(order_total) filter (where order_status != 'cancelled'), 0) as decimal(18, 2))
        as gross_order_value,
    cast(sum(net_paid_amount) as decimal(18, 2)) as lifetime_value,
    min(ordered_at) filter (where order_status != 'cancelled') as first_order_at,
    max(ordered_at) filter (where order_status != 'cancelled') as last_order_at,
    max(last_changed_at) as last_changed_at
from orders_joined
group by customer_id
