-- Order totals from the lines: what the customer was charged for the order as a whole.
select
    order_id,
    count(*) as item_count,
    sum(quantity) as total_quantity,
    cast(sum(gross_amount) as decimal(18, 2)) as gross_amount,
    cast(sum(discount_amount) as decimal(18, 2)) as discount_amount,
    cast(sum(net_amount) as decimal(18, 2)) as order_total,
    cast(sum(cost_amount) as decimal(18, 2)) as cost_amount
from {{ ref('int_order_items__enriched') }}
group by order_id
