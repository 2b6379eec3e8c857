-- The current catalogue with unit economics.
select
    product_id,
    sku,
    product_name,
    category,
    unit_price,
    unit_cost,
    cast(unit_price - unit_cost as decimal(18, 2)) as unit_margin,
    cast(round(case when unit_price > 0 then (unit_price - unit_cost) / unit_price end, 4) as decimal(6, 4))
        as margin_rate,
    is_active,
    updated_at
from {{ ref('stg_shop__products') }}
