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

-- Partition upkeep. Names and bounds are computed here from the kind and a time, so no caller
-- text ever reaches the DDL; identifiers go through format's %I, bounds through %L.
-- TimeZone UTC: days and months are UTC ones, whatever the session's zone.

-- Every missing partition of `p_kind` ('raw': a day of gpufs_gpu_samples; 'hourly': a month of
-- gpufs_gpu_hourly) from the period of `p_from` to that of `p_to`, and one for each period the
-- default partition holds rows of, those rows moved into it. Returns the partitions made.
create or replace function gpufs_gpu_history_ensure(p_kind text, p_from timestamptz, p_to timestamptz)
returns setof text language plpgsql set timezone to 'UTC' as $$
declare
    parent  text;
    col     text;
    unit    text;
    stride  interval;
    fmt     text;
    missing timestamptz[];
    lo      timestamptz;
    part    text;
begin
    case p_kind
        when 'raw' then
            parent := 'gpufs_gpu_samples'; col := 'reported_at'; unit := 'day'; stride := '1 day'; fmt := 'YYYYMMDD';
        when 'hourly' then
            parent := 'gpufs_gpu_hourly'; col := 'hour'; unit := 'month'; stride := '1 month'; fmt := 'YYYYMM';
        else
            raise exception 'unknown gpu history kind: %', p_kind;
    end case;
    -- One upkeep at a time (the task's leader, migrate on another host, prune), till commit:
    -- two making one partition at once would have one fail.
    perform pg_advisory_xact_lock(7453586465997026164);
    execute format('select array_agg(distinct date_trunc(%L, %I)) from %I', unit, col, parent || '_default')
       into missing;
    if missing is not null then
        -- Rows arriving in the default while they move out would make the attach fail.
        execute format('lock table %I in access exclusive mode', parent || '_default');
    end if;
    for lo in select p from unnest(missing) as p
              union
              select generate_series(date_trunc(unit, p_from), date_trunc(unit, p_to), stride)
              order by 1 loop
        part := parent || '_p' || to_char(lo, fmt);
        continue when to_regclass(quote_ident(part)) is not null;
        -- Made apart and attached, which locks the parent only against other schema changes:
        -- reports and reads go on meanwhile.
        execute format('create table %I (like %I including defaults including constraints)', part, parent);
        if lo = any(missing) then
            execute format('with moved as (delete from %I where %I >= $1 and %I < $2 returning *) '
                           'insert into %I select * from moved', parent || '_default', col, col, part)
              using lo, lo + stride;
        end if;
        execute format('alter table %I attach partition %I for values from (%L) to (%L)',
                       parent, part, lo, lo + stride);
        return next part;
    end loop;
end
$$;

-- Drop every partition of `p_kind` whose whole period lies before `p_before`: retention by
-- whole partitions, never row by row. Returns the partitions dropped. A drop locks the whole
-- table, and reports and reads queue behind a lock being waited for: it waits 2 s at most, and
-- failing that, the next run tries again.
create or replace function gpufs_gpu_history_drop(p_kind text, p_before timestamptz)
returns setof text language plpgsql set timezone to 'UTC' set lock_timeout to '2s' as $$
declare
    parent text;
    stride interval;
    fmt    text;
    part   text;
begin
    case p_kind
        when 'raw' then parent := 'gpufs_gpu_samples'; stride := '1 day'; fmt := 'YYYYMMDD';
        when 'hourly' then parent := 'gpufs_gpu_hourly'; stride := '1 month'; fmt := 'YYYYMMDD';
        else raise exception 'unknown gpu history kind: %', p_kind;
    end case;
    perform pg_advisory_xact_lock(7453586465997026164);  -- as in gpufs_gpu_history_ensure
    for part in select c.relname
                  from pg_inherits i
                  join pg_class c on c.oid = i.inhrelid
                 where i.inhparent = parent::regclass
                   and c.relname ~ ('^' || parent || '_p[0-9]+$')
                 order by c.relname loop
        -- The name holds the period's start (YYYYMMDD or YYYYMM, padded to a first day here).
        continue when to_timestamp(rpad(substr(part, length(parent) + 3), 8, '01'), fmt) + stride > p_before;
        execute format('drop table %I', part);
        return next part;
    end loop;
end
$$;
