-- One row per order line, for product and basket analysis.
select
    order_item_id,
    order_id,
    customer_id,
    product_id,
    order_status,
    sales_channel,
    ordered_at,
    order_date,
    category,
    quantity,
    unit_price,
    discount_amount,
    gross_amount,
    net_amount,
    cost_amount,
    gross_margin
from {{ ref('int_order_items__enriched') }}
