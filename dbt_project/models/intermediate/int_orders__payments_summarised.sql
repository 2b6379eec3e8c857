-- What happened to the money for each order: charged, declined, refunded and the net result.
with payments as (

    select * from {{ ref('stg_billing__payments') }}

)

select
    order_id,
    count(*) as payment_attempt_count,
    count(*) filter (where payment_status = 'failed') as failed_payment_count,
    cast(coalesce(sum(amount) filter (where payment_status = 'succeeded'), 0) as decimal(18, 2)) as succeeded_amount,
    cast(coalesce(sum(amount) filter (where payment_status = 'refunded'), 0) as decimal(18, 2)) as refunded_amount,
    cast(sum(signed_amount) as decimal(18, 2)) as net_paid_amount,
    min(processed_at) filter (where payment_status = 'succeeded') as first_paid_at,
    max(processed_at) filter (where payment_status = 'refunded') as refunded_at,
    -- the method of the charge that went through; a declined card followed by PayPal counts as PayPal
    arg_max(payment_method, processed_at) filter (where payment_status = 'succeeded') as payment_method,
    max(processed_at) as last_payment_at
from payments
group by order_id
