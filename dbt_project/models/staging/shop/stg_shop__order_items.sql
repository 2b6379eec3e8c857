-- One row per order line, with its amounts worked out once so every model downstream agrees on them.
-- Lines arrive once with their order; should one be re-delivered, the later load wins.
with source as (

    select * from {{ source('shop', 'order_items') }}

),

latest as (

    select *
    from source
    qualify row_number() over (
        partition by order_item_id
        order by _loaded_at desc, _landing_date desc, _source_file desc
    ) = 1

)

select
    order_item_id,
    order_id,
    product_id,
    quantity,
    unit_price,
    discount_amount,
    cast(quantity * unit_price as decimal(18, 2)) as gross_amount,
    cast(quantity * unit_price - discount_amount as decimal(18, 2)) as net_amount,
    _source_file,
    _loaded_at
from latest
