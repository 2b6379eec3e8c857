{#-
    One row per customer: profile, region and purchase history. This is the model the CRM sync reads, so every
    column here is something a marketer can act on.

    Segments, first match wins. Recency is measured against the latest order in the data (not now()), so the same
    data always gives the same segments:
      prospect  no order that went through
      lapsed    last order more than `segment_lapsed_after_days` before the latest order in the data
      vip       lifetime value at least `segment_vip_min_lifetime_value`
      loyal     at least `segment_loyal_min_orders` orders
      active    more than one order
      new       exactly one order
-#}
with customers as (

    select * from {{ ref('stg_shop__customers') }}

),

order_history as (

    select * from {{ ref('int_customers__order_history') }}

),

country_regions as (

    select * from {{ ref('country_regions') }}

),

as_of as (

    select max(ordered_at) as latest_order_at from {{ ref('stg_shop__orders') }}

),

joined as (

    select
        customers.customer_id,
        customers.email,
        customers.first_name,
        customers.last_name,
        customers.country_code,
        country_regions.country_name,
        coalesce(country_regions.region, 'Unknown') as region,
        customers.signup_channel,
        customers.marketing_opt_in,
        coalesce(order_history.order_count, 0) as order_count,
        coalesce(order_history.returned_order_count, 0) as returned_order_count,
        cast(coalesce(order_history.lifetime_value, 0) as decimal(18, 2)) as lifetime_value,
        order_history.first_order_at,
        order_history.last_order_at,
        date_diff('day', order_history.last_order_at, as_of.latest_order_at) as days_since_last_order,
        customers.created_at,
        greatest(customers.updated_at, coalesce(order_history.last_changed_at, customers.updated_at)) as updated_at
    from customers
    cross join as_of
    left join order_history
        on customers.customer_id = order_history.customer_id
    left join country_regions
        on customers.country_code = country_regions.country_code

)

select
    customer_id,
    email,
    first_name,
    last_name,
    country_code,
    country_name,
    region,
    signup_channel,
    marketing_opt_in,
    case
        when order_count = 0 then 'prospect'
        when days_since_last_order > {{ var('segment_lapsed_after_days') }} then 'lapsed'
        when lifetime_value >= {{ var('segment_vip_min_lifetime_value') }} then 'vip'
        when order_count >= {{ var('segment_loyal_min_orders') }} then 'loyal'
        when order_count > 1 then 'active'
        else 'new'
    end as customer_segment,
    lifetime_value,
    order_count,
    returned_order_count,
    cast(case when order_count > 0 then round(lifetime_value / order_count, 2) end as decimal(18, 2))
        as average_order_value,
    first_order_at,
    last_order_at,
    days_since_last_order,
    created_at,
    updated_at
from joined
