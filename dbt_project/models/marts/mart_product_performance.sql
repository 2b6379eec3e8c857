-- How each product sells: volume, revenue, margin and returns, ranked within its category. Products never
-- ordered are included with zeros so the merchandising team sees what does not move.
with products as (

    select * from {{ ref('dim_products') }}

),

order_items as (

    select * from {{ ref('fct_order_items') }}

),

sales as (

    select
        product_id,
        count(distinct order_id) filter (where order_status != 'cancelled') as order_count,
        sum(quantity) filter (where order_status != 'cancelled') as units_sold,
        sum(quantity) filter (where order_status = 'returned') as units_returned,
        sum(gross_amount) filter (where order_status != 'cancelled') as gross_sales,
        sum(discount_amount) filter (where order_status != 'cancelled') as discounts,
        sum(net_amount) filter (where order_status not in ('cancelled', 'returned')) as net_sales,
        sum(gross_margin) filter (where order_status not in ('cancelled', 'returned')) as gross_margin
    from order_items
    group by product_id

),

joined as (

    select
        products.product_id,
        products.sku,
        products.product_name,
        products.category,
        products.is_active,
        products.unit_price,
        coalesce(sales.order_count, 0) as order_count,
        coalesce(sales.units_sold, 0) as units_sold,
        coalesce(sales.units_returned, 0) as units_returned,
        cast(coalesce(sales.gross_sales, 0) as decimal(18, 2)) as gross_sales,
        cast(coalesce(sales.discounts, 0) as decimal(18, 2)) as discounts,
        cast(coalesce(sales.net_sales, 0) as decimal(18, 2)) as net_sales,
        cast(coalesce(sales.gross_margin, 0) as decimal(18, 2)) as gross_margin
    from products
    left join sales
        on products.product_id = sales.product_id

)

select
    *,
    cast(case when units_sold > 0 then round(units_returned / units_sold, 4) end as decimal(6, 4)) as return_rate,
    rank() over (partition by category order by net_sales desc) as category_sales_rank
from joined
