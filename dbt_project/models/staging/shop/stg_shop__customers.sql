-- One row per customer: the latest delivered version of the profile. raw.customers keeps every version; the
-- newest updated_at wins, and a same-timestamp re-delivery is settled by the later load.
with source as (

    select * from {{ source('shop', 'customers') }}

),

latest as (

    select *
    from source
    qualify row_number() over (
        partition by customer_id
        order by updated_at desc, _loaded_at desc, _landing_date desc, _source_file desc
    ) = 1

)

select
    customer_id,
    lower(trim(email)) as email,
    trim(first_name) as first_name,
    trim(last_name) as last_name,
    upper(trim(country_code)) as country_code,
    lower(trim(signup_channel)) as signup_channel,
    coalesce(marketing_opt_in, false) as marketing_opt_in,
    created_at,
    updated_at,
    _source_file,
    _loaded_at
from latest
