-- Health and uptime arithmetic, shared by the list, detail and stat queries so the
-- rule (contract section 4) is written once. Times are handled in UTC explicitly,
-- whatever the session's TimeZone.

-- A day's bucket width: heartbeat_config_daily for that date, else the server default.
create or replace function gpufs_interval(p_day date, p_default integer)
returns integer language sql stable as $$
    select coalesce((select heartbeat_interval_secs from heartbeat_config_daily where date = p_day), p_default)
$$;

-- Expected buckets of a client on one UTC day: only from its registration and only up to `p_now`.
create or replace function gpufs_expected(p_day date, p_created timestamptz, p_now timestamptz, p_default integer)
returns numeric language sql stable as $$
    select greatest(0, extract(epoch from
               least((p_day + 1)::timestamp at time zone 'UTC', p_now)
             - greatest(p_day::timestamp at time zone 'UTC', p_created)))
           / gpufs_interval(p_day, p_default)
$$;

-- Health: counted share of expected buckets over the last 7 UTC days, today pro-rated,
-- missing days counting 0; an integer percent, halves up; 0 before any bucket is expected.
create or replace function gpufs_health(p_client bytea, p_created timestamptz, p_now timestamptz, p_default integer)
returns integer language sql stable as $$
    with days as (
        select (p_now at time zone 'UTC')::date - n as day from generate_series(0, 6) as n
    ), figures as (
        select sum(gpufs_expected(days.day, p_created, p_now, p_default)) as expected,
               coalesce(sum(s.health_heartbeats), 0) as counted
          from days
          left join client_daily_stats s on s.client_id = p_client and s.date = days.day
    )
    select case when expected > 0 then round(100 * least(1, counted / expected))::integer else 0 end
      from figures
$$;

-- Yesterday's uptime of one client as a fraction 0..1, or null if it did not exist yesterday.
create or replace function gpufs_uptime_yesterday(p_client bytea, p_created timestamptz, p_now timestamptz,
                                                  p_default integer)
returns numeric language sql stable as $$
    select case when expected > 0 then least(1, coalesce(counted, 0) / expected) end
      from (select gpufs_expected((p_now at time zone 'UTC')::date - 1, p_created, p_now, p_default) as expected,
                   (select health_heartbeats from client_daily_stats
                     where client_id = p_client and date = (p_now at time zone 'UTC')::date - 1) as counted) as y
$$;
