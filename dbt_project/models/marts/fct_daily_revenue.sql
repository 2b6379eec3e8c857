-- One row per calendar day from the first order to the latest order or payment, days without activity included
-- (as zeros), so charts show gaps honestly. Sales are counted on the day an order was placed; cash on the day
-- the payment provider processed it.
with orders as (

    select * from {{ ref('fct_orders') }}

),

payments as (

    select * from {{ ref('fct_payments') }}

),

bounds as (

    select
        (select min(order_date) from orders) as first_day,
        greatest(
            (select max(order_date) from orders),
            coalesce((select max(processed_date) from payments), (select max(order_date) from orders))
        ) as last_day

),

calendar as (

    select cast(day as date) as revenue_date
    from bounds, range(bounds.first_day, bounds.last_day + interval 1 day, interval 1 day) as days(day)

),

sales as (

    select
        order_date as revenue_date,
        count(*) as orders_placed,
        count(*) filter (where order_status = 'cancelled') as orders_cancelled,
        count(*) filter (where order_status = 'returned') as orders_returned,
        count(distinct customer_id) filter (where order_status != 'cancelled') as customers_ordering,
        sum(total_quantity) filter (where order_status != 'cancelled') as units_sold,
        sum(gross_amount) filter (where order_status != 'cancelled') as gross_sales,
        sum(discount_amount) filter (where order_status != 'cancelled') as discounts,
        sum(order_total) filter (where order_status not in ('cancelled', 'returned')) as net_sales,
        sum(cost_amount) filter (where order_status not in ('cancelled', 'returned')) as cost_of_goods_sold
    from orders
    group by order_date

),

cash as (

    select
        processed_date as revenue_date,
        sum(amount) filter (where payment_status = 'succeeded') as payments_received,
        sum(amount) filter (where payment_status = 'refunded') as refunds_issued,
        count(*) filter (where payment_status = 'failed') as failed_payments
    from payments
    group by processed_date

)

select
    calendar.revenue_date,
    coalesce(sales.orders_placed, 0) as orders_placed,
    coalesce(sales.orders_cancelled, 0) as orders_cancelled,
    coalesce(sales.orders_returned, 0) as orders_returned,
    coalesce(sales.customers_ordering, 0) as customers_ordering,
    coalesce(sales.units_sold, 0) as units_sold,
    cast(coalesce(sales.gross_sales, 0) as decimal(18, 2)) as gross_sales,
    cast(coalesce(sales.discounts, 0) as decimal(18, 2)) as discounts,
    cast(coalesce(sales.net_sales, 0) as decimal(18, 2)) as net_sales,
    cast(coalesce(sales.cost_of_goods_sold, 0) as decimal(18, 2)) as cost_of_goods_sold,
    cast(coalesce(sales.net_sales, 0) - coalesce(sales.cost_of_goods_sold, 0) as decimal(18, 2)) as gross_margin,
    cast(coalesce(cash.payments_received, 0) as decimal(18, 2)) as payments_received,
    cast(coalesce(cash.refunds_issued, 0) as decimal(18, 2)) as refunds_issued,
    cast(coalesce(cash.payments_received, 0) - coalesce(cash.refunds_issued, 0) as decimal(18, 2))
        as net_cash_collected,
    coalesce(cash.failed_payments, 0) as failed_payments
from calendar
left join sales
    on calendar.revenue_date = sales.revenue_date
left join cash
    on calendar.revenue_date = cash.revenue_date
