-- Orders and sales per day and sales channel, for the marketing team's channel mix report.
select
    order_date,
    sales_channel,
    count(*) as orders_placed,
    count(*) filter (where order_status = 'cancelled') as orders_cancelled,
    count(distinct customer_id) as customers_ordering,
    cast(coalesce(sum(order_total) filter (where order_status not in ('cancelled', 'returned')), 0) as decimal(18, 2))
        as net_sales,
    cast(
        avg(order_total) filter (where order_status not in ('cancelled', 'returned')) as decimal(18, 2)
    ) as average_order_value,
    cast(round(count(*) filter (where order_status = 'cancelled') / count(*), 4) as decimal(6, 4))
        as cancellation_rate
from {{ ref('fct_orders') }}
group by order_date, sales_channel
