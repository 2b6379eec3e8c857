-- Order lines with the product and order context most questions about lines need: category, current cost,
-- order status and date. Cost is the product's current landed cost - the storefront does not send cost history.
with order_items as (

    select * from {{ ref('stg_shop__order_items') }}

),

products as (

    select * from {{ ref('stg_shop__products') }}

),

orders as (

    select * from {{ ref('stg_shop__orders') }}

)

select
    order_items.order_item_id,
    order_items.order_id,
    orders.customer_id,
    orders.order_status,
    orders.sales_channel,
    orders.ordered_at,
    orders.order_date,
    order_items.product_id,
    products.sku,
    products.product_name,
    products.category,
    order_items.quantity,
    order_items.unit_price,
    order_items.discount_amount,
    order_items.gross_amount,
    order_items.net_amount,
    cast(order_items.quantity * products.unit_cost as decimal(18, 2)) as cost_amount,
    cast(order_items.net_amount - order_items.quantity * products.unit_cost as decimal(18, 2)) as gross_margin
from order_items
inner join orders
    on order_items.order_id = orders.order_id
left join products
    on order_items.product_id = products.product_id
