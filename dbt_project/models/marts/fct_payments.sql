-- One row per payment provider transaction, with the customer it belongs to, for finance reporting.
with payments as (

    select * from {{ ref('stg_billing__payments') }}

),

orders as (

    select order_id, customer_id from {{ ref('stg_shop__orders') }}

)

select
    payments.payment_id,
    payments.order_id,
    orders.customer_id,
    payments.payment_method,
    payments.payment_status,
    payments.amount,
    payments.signed_amount,
    payments.processed_at,
    cast(payments.processed_at as date) as processed_date
from payments
left join orders
    on payments.order_id = orders.order_id
