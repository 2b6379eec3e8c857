-- One row per order with its current status: the storefront re-delivers an order on every status change.
with source as (

    select * from {{ source('shop', 'orders') }}

),

latest as (

    select *
    from source
    qualify row_number() over (
        partition by order_id
        order by updated_at desc, _loaded_at desc, _landing_date desc, _source_file desc
    ) = 1

)

select
    order_id,
    customer_id,
    lower(trim(order_status)) as order_status,
    lower(trim(sales_channel)) as sales_channel,
    upper(trim(shipping_country)) as shipping_country,
    ordered_at,
    cast(ordered_at as date) as order_date,
    updated_at,
    _source_file,
    _landing_date,
    _loaded_at
from latest
