-- gpufs_health read every rollup row of the client and joined them with the 7 days, so
-- its cost grew with the days on record. Bounding the rows to the window lets the
-- (client_id, date) index fetch just those seven.
create or replace function gpufs_health(p_client bytea, p_created timestamptz, p_now timestamptz, p_default integer)
returns integer language sql stable as $$
    with days as (
        select (p_now at time zone 'UTC')::date - n as day from generate_series(0, 6) as n
    ), figures as (
        select sum(gpufs_expected(days.day, p_created, p_now, p_default)) as expected,
               coalesce(sum(s.health_heartbeats), 0) as counted
          from days
          left join client_daily_stats s
                 on s.client_id = p_client
                and s.date = days.day
                and s.date >= (p_now at time zone 'UTC')::date - 6
    )
    select case when expected > 0 then round(100 * least(1, counted / expected))::integer else 0 end
      from figures
$$;
