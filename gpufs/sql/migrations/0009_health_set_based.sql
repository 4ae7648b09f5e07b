-- client_list called gpufs_health once per client, and each call looked up the bucket width
-- of each of its 7 days again (7,000 lookups for a list of 1,000 clients). The rule is split
-- into pieces that a query over many clients can use once per query or inline per row; the
-- per-client functions are rebuilt from the same pieces, so the rule is still written once.

-- The 7 UTC days health looks at, newest first, with each day's bucket width.
create or replace function gpufs_health_days(p_now timestamptz, p_default integer)
returns table (day date, width integer) language sql stable as $$
    select d.day, gpufs_interval(d.day, p_default)
      from (select (p_now at time zone 'UTC')::date - n as day from generate_series(0, 6) as n) as d
$$;

-- Expected buckets of a client on one UTC day of bucket width `p_width`: only from its
-- registration and only up to `p_now`. A plain expression, so the planner inlines it.
create or replace function gpufs_expected_in(p_day date, p_created timestamptz, p_now timestamptz, p_width integer)
returns numeric language sql immutable as $$
    select greatest(0, extract(epoch from
               least((p_day + 1)::timestamp at time zone 'UTC', p_now)
             - greatest(p_day::timestamp at time zone 'UTC', p_created))) / p_width
$$;

-- Counted share of expected buckets as an integer percent, halves up; 0 before any bucket is expected.
create or replace function gpufs_health_percent(p_counted numeric, p_expected numeric)
returns integer language sql immutable as $$
    select case when p_expected > 0 then round(100 * least(1, p_counted / p_expected))::integer else 0 end
$$;

create or replace function gpufs_expected(p_day date, p_created timestamptz, p_now timestamptz, p_default integer)
returns numeric language sql stable as $$
    select gpufs_expected_in(p_day, p_created, p_now, gpufs_interval(p_day, p_default))
$$;

create or replace function gpufs_health(p_client bytea, p_created timestamptz, p_now timestamptz, p_default integer)
returns integer language sql stable as $$
    select gpufs_health_percent(coalesce(sum(s.health_heartbeats), 0),
                                sum(gpufs_expected_in(w.day, p_created, p_now, w.width)))
      from gpufs_health_days(p_now, p_default) as w
      left join client_daily_stats s
             on s.client_id = p_client
            and s.date = w.day
            and s.date >= (p_now at time zone 'UTC')::date - 6
$$;
