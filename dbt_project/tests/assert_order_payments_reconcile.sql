-- Money must match what was sold. For every order, successful charges minus refunds equal the order total while
-- the order stands (paid, shipped, delivered) and zero when it never went through or was undone (placed,
-- cancelled, returned). Returns the orders that do not reconcile.
with orders as (

    select
        order_id,
        order_status,
        order_total,
        net_paid_amount,
        case
            when order_status in ('paid', 'shipped', 'delivered') then order_total
            else 0
        end as expected_net_paid_amount
    from {{ ref('fct_orders') }}

)

select *
from orders
where net_paid_amount != expected_net_paid_amount
