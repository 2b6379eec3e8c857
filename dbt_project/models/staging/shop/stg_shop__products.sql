-- One row per product: the latest delivered version (current price, cost and availability).
with source as (

    select * from {{ source('shop', 'products') }}

),

latest as (

    select *
    from source
    qualify row_number() over (
        partition by product_id
        order by updated_at desc, _loaded_at desc, _landing_date desc, _source_file desc
    ) = 1

)

select
    product_id,
    upper(trim(sku)) as sku,
    trim(product_name) as product_name,
    lower(trim(category)) as category,
    unit_price,
    unit_cost,
    is_active,
    updated_at,
    _source_file,
    _loaded_at
from latest
