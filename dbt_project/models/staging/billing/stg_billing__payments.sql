-- One row per payment provider transaction. A transaction never changes once settled, so a re-delivered one
-- is a duplicate: the later load wins.
with source as (

    select * from {{ source('billing', 'payments') }}

),

latest as (

    select *
    from source
    qualify row_number() over (
        partition by payment_id
        order by _loaded_at desc, _landing_date desc, _source_file desc
    ) = 1

)

select
    payment_id,
    order_id,
    lower(trim(payment_method)) as payment_method,
    lower(trim(payment_status)) as payment_status,
    amount,
    cast(
        case lower(trim(payment_status))
            when 'succeeded' then amount
            when 'refunded' then -amount
            else 0
        end as decimal(18, 2)
    ) as signed_amount,
    processed_at,
    _source_file,
    _landing_date,
    _loaded_at
from latest
