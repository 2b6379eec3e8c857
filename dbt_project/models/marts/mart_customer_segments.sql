-- Size and value of each customer segment, for the weekly segment summary. Every segment appears, even when
-- empty, so a segment that drains shows as zero rather than disappearing.
with segments as (

    select * from (
        values
            ('prospect', 1), ('new', 2), ('active', 3), ('loyal', 4), ('vip', 5), ('lapsed', 6)
    ) as segments(customer_segment, sort_order)

),

customers as (

    select * from {{ ref('dim_customers') }}

)

select
    segments.customer_segment,
    segments.sort_order,
    count(customers.customer_id) as customer_count,
    cast(coalesce(round(count(customers.customer_id) / nullif(sum(count(customers.customer_id)) over (), 0), 4), 0)
        as decimal(6, 4)) as customer_share,
    count(customers.customer_id) filter (where customers.marketing_opt_in) as opted_in_count,
    cast(coalesce(sum(customers.order_count), 0) as bigint) as order_count,
    cast(coalesce(sum(customers.lifetime_value), 0) as decimal(18, 2)) as lifetime_value,
    cast(avg(customers.lifetime_value) as decimal(18, 2)) as average_lifetime_value
from segments
left join customers
    on segments.customer_segment = customers.customer_segment
group by segments.customer_segment, segments.sort_order
