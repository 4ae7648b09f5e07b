-- Every SQL function of the schema, as it is now: applied by migrate after the numbered
-- migrations on every run (create or replace), so a change is made here, in place. The
-- numbered migrations keep tables, columns, indexes and triggers.

-- The 7 UTC days health looks at, newest first, with each day's bucket width: the day's
-- configured width (heartbeat_config_daily, edited by hand), or the default where none or
-- a zero or negative width is configured. One SELECT, so the planner inlines it into the query
-- that calls it (a scalar function with a sub-select was planned anew on every execution).
create or replace function gpufs_health_days(p_now timestamptz, p_default integer)
returns table (day date, width integer) language sql stable as $$
    select d.day, case when c.heartbeat_interval_secs > 0 then c.heartbeat_interval_secs else p_default end
      from (select (p_now at time zone 'UTC')::date - n as day from generate_series(0, 6) as n) as d
      left join heartbeat_config_daily c on c.date = d.day
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

-- One client's health at `p_now`. The server's queries write it out for many clients at once
-- (user.sql); this stays for other readers of the database.
create or replace function gpufs_health(p_client bytea, p_created timestamptz, p_now timestamptz, p_default integer)
returns integer language sql stable as $$
    select gpufs_health_percent(coalesce(sum(s.health_heartbeats), 0),
                                sum(gpufs_expected_in(w.day, p_created, p_now, w.width)))
      from gpufs_health_days(p_now, p_default) as w
      left join client_daily_stats s on s.client_id = p_client and s.date = w.day
$$;

-- A day's uptime as a fraction 0..1 of its expected buckets, or null when none were expected
-- (the client did not exist yet).
create or replace function gpufs_uptime_share(p_counted numeric, p_expected numeric)
returns numeric language sql immutable as $$
    select case when p_expected > 0 then least(1, coalesce(p_counted, 0) / p_expected) end
$$;

-- Running mean of a rollup: fold `p_add_n` new values with mean `p_add_mean` into a
-- stored mean over `p_n` values. Written once so every rollup column folds alike, and
-- additive, so concurrent writers that each fold their own reports compose.
create or replace function gpufs_running_mean(p_mean float8, p_n bigint, p_add_mean float8, p_add_n bigint)
returns float8 language sql immutable as $$
    select case when coalesce(p_add_n, 0) = 0 or p_add_mean is null then p_mean
                when coalesce(p_n, 0) = 0 or p_mean is null then p_add_mean
                else (p_mean * p_n + p_add_mean * p_add_n) / (p_n + p_add_n)
           end
$$;

-- A byte total plus more bytes, saturating at the bigint maximum: a client reporting
-- absurd counters must not make its whole batch fail with an overflow.
create or replace function gpufs_add_bytes(p_total bigint, p_add numeric)
returns bigint language sql immutable as $$
    select least(coalesce(p_total, 0)::numeric + coalesce(p_add, 0), 9223372036854775807)::bigint
$$;

-- client_uptime_days kept by statement triggers on client_daily_stats (migration 0008), so any
-- writer of that table keeps it right. They run with their owner's rights: the upstream
-- server's role, which writes client_daily_stats too, was never granted client_uptime_days.
-- An upsert's new day rows reach `added`; the rows it updates do not. Clients in id order, as
-- ingestion locks them, so two writers never wait on each other's rows crosswise.
create or replace function gpufs_uptime_days_added() returns trigger language plpgsql
security definer set search_path from current as $$
begin
    insert into client_uptime_days as u (client_id, days)
    select client_id, count(*) from added group by client_id order by client_id
    on conflict (client_id) do update set days = u.days + excluded.days;
    return null;
end $$;

create or replace function gpufs_uptime_days_removed() returns trigger language plpgsql
security definer set search_path from current as $$
begin
    update client_uptime_days u set days = u.days - gone.n
      from (select client_id, count(*) as n from removed group by client_id) gone
     where u.client_id = gone.client_id;
    delete from client_uptime_days u
     where u.days <= 0 and u.client_id in (select client_id from removed);
    return null;
end $$;

create or replace function gpufs_uptime_days_emptied() returns trigger language plpgsql
security definer set search_path from current as $$
begin
    delete from client_uptime_days;
    return null;
end $$;

-- No callers left: their rules live in the functions above.
drop function if exists gpufs_expected(date, timestamptz, timestamptz, integer);
drop function if exists gpufs_interval(date, integer);
drop function if exists gpufs_uptime_yesterday(bytea, timestamptz, timestamptz, integer);
