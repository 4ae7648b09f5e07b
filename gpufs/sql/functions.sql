-- Every SQL function of the schema, as it is now: applied by migrate after the numbered
-- migrations on every run (create or replace), so a change is made here, in place. The
-- numbered migrations keep tables, columns, indexes and triggers.

-- The first UTC day of the health window (gpufs_health_days: 0-6 days back). Joins of
-- client_daily_stats to the window also bound the date by it, so the index reads the window's
-- rows only: without it, a client's health read every day the client has on record.
create or replace function gpufs_health_first_day(p_now timestamptz)
returns date language sql immutable as $$
    select (p_now at time zone 'UTC')::date - 6
$$;

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
      left join client_daily_stats s
             on s.client_id = p_client and s.date = w.day and s.date >= gpufs_health_first_day(p_now)
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

-- `p_value` rounded to 2 decimals exactly as round(p_value::numeric, 2)::float8 (half away from
-- zero, on its 15-digit decimal), in float arithmetic: the conversions to numeric were a quarter
-- of device_history's query. The two can differ only near a tie (or for huge values), where it
-- still goes through numeric; elsewhere float8's errors are far below the 1e-6 margin.
create or replace function gpufs_round2(p_value float8)
returns float8 language sql immutable as $$
    select case when abs(p_value) < 1e6 and abs(p_value * 100 - floor(p_value * 100) - 0.5) > 1e-6
                then floor(p_value * 100 + 0.5) / 100
                else round(p_value::numeric, 2)::float8
           end
$$;

-- One device_history point as JSON text (sql/history.sql): the fields of schemas.HistoryPoint in
-- its order, `time` as envelope.isoz writes it, averages rounded to 2 decimals, maxima the stored
-- real as it reads (72.3, not 72.30000305). Written by concatenation rather than row_to_json,
-- which looks up every column's output function on every row: 3-4 ms more per answer of ~2,500
-- points. Safe to concatenate: every field is a number or that fixed-format time, so nothing needs
-- escaping, and the numbers are finite (readings are bounded at ingest).
create or replace function gpufs_history_point(p_time timestamptz, p_samples bigint, p_temp_sum float8,
                                               p_temp_max real, p_usage_sum float8, p_usage_max real,
                                               p_mem_usage_sum float8, p_power_sum float8, p_power_max real)
returns text language sql stable as $$
    select '{"time":"' || to_char(p_time at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
        || '","samples":' || p_samples::text
        || ',"temp":' || gpufs_round2(p_temp_sum / p_samples)::text || ',"temp_max":' || p_temp_max::text
        || ',"usage":' || gpufs_round2(p_usage_sum / p_samples)::text || ',"usage_max":' || p_usage_max::text
        || ',"mem_usage":' || gpufs_round2(p_mem_usage_sum / p_samples)::text
        || ',"power_usage":' || gpufs_round2(p_power_sum / p_samples)::text
        || ',"power_max":' || p_power_max::text || '}'
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

-- Heartbeat ingestion's write (heartbeat.sql's ingest-reports calls it). A function rather than a
-- statement the driver sends: PostgreSQL plans a PL/pgSQL function's statements once per connection
-- and keeps the plan, where the statement sent as text was planned anew for every report.
-- Write accepted reports (an array of JSON documents, see gpufs/ingest.py; an array
-- rather than one JSON array because the planner then knows how many rows come, and
-- picks hash joins for a large batch) in one statement and return
-- one row per report: ord, stored (false: duplicate of a stored client_id + timestamp)
-- and counted (it claimed its bucket). Reports without a timestamp take the server time.
-- A report is counted when it is the first stored report in its bucket (bucket width of
-- its UTC day from heartbeat_config_daily, else `interval`); inside the batch the first
-- in input order wins. Reports older than the retention window are stored but never
-- counted, since their bucket claims may already have been pruned. A client with a stored
-- report was seen now (liveness, last_online), whatever time its reports carry. Each stored
-- report's GPUs are kept as samples (within `raw_days`) and added to their rollups (within
-- `hourly_days`): every stored report, counted or not, so a duplicate, never stored, adds nothing.
create or replace function gpufs_ingest_reports(p_reports jsonb[], p_interval integer, p_retention_days integer,
                                                p_raw_days integer, p_hourly_days integer)
returns table (ord integer, stored boolean, counted boolean) language plpgsql volatile as $$
#variable_conflict use_column
begin
    return query
    with input as (
        select r.ord, decode(r.client_id, 'hex') as client_id, coalesce(r.ts, now()) as ts,
               r.cpu, r.mem, r.disk, r.rx, r.tx, r.memsize, r.tflops, coalesce(r.devices, '[]') as devices,
               row_number() over (partition by r.client_id, coalesce(r.ts, now()) order by r.ord) = 1 as first_of_ts
          from unnest(p_reports) as u(doc)
         cross join lateral jsonb_to_record(u.doc)
               as r(ord integer, client_id text, ts timestamptz, cpu numeric, mem numeric, disk numeric,
                    rx bigint, tx bigint, memsize bigint, tflops numeric, devices jsonb)
    ), inserted as (
        insert into heartbeat (client_id, cpu_usage, mem_usage, disk_usage, network_up, network_down,
                               timestamp, created_at)
        select client_id, round(cpu), round(mem), round(disk), tx, rx, ts, now()
          from input
         where first_of_ts
         order by client_id, ts
            on conflict (client_id, timestamp) do nothing
        returning client_id, timestamp
    ), stored as (
        select i.*, (i.ts at time zone 'UTC')::date as day,
               case when c.heartbeat_interval_secs > 0 then c.heartbeat_interval_secs else p_interval end as width
          from input i
          join inserted h on h.client_id = i.client_id and h.timestamp = i.ts
          left join heartbeat_config_daily c on c.date = (i.ts at time zone 'UTC')::date
         where i.first_of_ts
    ), bucketed as (
        select s.*, floor(extract(epoch from s.ts) / s.width)::bigint as bucket_no,
               to_timestamp(floor(extract(epoch from s.ts) / s.width) * s.width) as bucket_start
          from stored s
    ), claimants as (
        select distinct on (client_id, bucket_start) ord, client_id, bucket_start
          from bucketed
         where ts >= now() - make_interval(days => p_retention_days)
         order by client_id, bucket_start, ord
    ), claimed as (
        insert into heartbeat_bucket (client_id, bucket_start)
        select client_id, bucket_start
          from claimants
         order by client_id, bucket_start
            on conflict do nothing
        returning client_id, bucket_start
    ), claims as (
        -- Membership tests in the select list are hashed subplans, never a nested loop over CTE scans.
        select ord, (client_id, bucket_start) in (select client_id, bucket_start from claimed) as won
          from claimants
    ), scored as (
        select b.*, b.ord in (select ord from claims where won) as counted,
               b.ts >= coalesce(a.created_at at time zone 'UTC', '-infinity') as since_created
          from bucketed b
          join gpu_assets a on a.client_id = b.client_id
    ), client_days as (
        insert into client_daily_stats as d (date, client_id, total_heartbeats, health_heartbeats,
                                             avg_cpu_usage, avg_memory_usage, avg_disk_usage,
                                             total_network_in_bytes, total_network_out_bytes,
                                             last_heartbeat, last_heartbeat_bucket, created_at, updated_at)
        select day, client_id,
               count(*) filter (where counted),
               count(*) filter (where counted and since_created),
               avg(cpu) filter (where counted), avg(mem) filter (where counted), avg(disk) filter (where counted),
               gpufs_add_bytes(0, sum(rx)), gpufs_add_bytes(0, sum(tx)),
               max(ts), max(bucket_no), now(), now()
          from scored
         group by client_id, day
         order by client_id, day
            on conflict (client_id, date) do update
           set avg_cpu_usage           = gpufs_running_mean(d.avg_cpu_usage, d.total_heartbeats,
                                                            excluded.avg_cpu_usage, excluded.total_heartbeats),
               avg_memory_usage        = gpufs_running_mean(d.avg_memory_usage, d.total_heartbeats,
                                                            excluded.avg_memory_usage, excluded.total_heartbeats),
               avg_disk_usage          = gpufs_running_mean(d.avg_disk_usage, d.total_heartbeats,
                                                            excluded.avg_disk_usage, excluded.total_heartbeats),
               total_heartbeats        = d.total_heartbeats + excluded.total_heartbeats,
               health_heartbeats       = d.health_heartbeats + excluded.health_heartbeats,
               total_network_in_bytes  = gpufs_add_bytes(d.total_network_in_bytes, excluded.total_network_in_bytes),
               total_network_out_bytes = gpufs_add_bytes(d.total_network_out_bytes, excluded.total_network_out_bytes),
               last_heartbeat          = greatest(d.last_heartbeat, excluded.last_heartbeat),
               last_heartbeat_bucket   = greatest(d.last_heartbeat_bucket, excluded.last_heartbeat_bucket),
               updated_at              = now()
        returning 1
    ), gpu_reports as (
        select s.client_id, s.day, s.ts, s.bucket_no, g.device_index, g.name, g.temp, g.usage, g.mem_usage, g.power_usage
          from scored s
         cross join lateral jsonb_to_recordset(s.devices)
               as g(device_index integer, name text, temp numeric, usage numeric, mem_usage numeric, power_usage numeric)
         where s.counted
    ), gpu_days as (
        insert into device_daily_stats as d (date, client_id, device_index, device_name, total_heartbeats,
                                             avg_utilization, avg_temperature, avg_power_usage, avg_memory_usage,
                                             last_heartbeat, last_heartbeat_bucket, created_at, updated_at)
        select day, client_id, device_index, (array_agg(name order by ts desc))[1], count(*),
               avg(usage), avg(temp), avg(power_usage), avg(mem_usage), max(ts), max(bucket_no), now(), now()
          from gpu_reports
         group by client_id, device_index, day
         order by client_id, device_index, day
            on conflict (client_id, device_index, date) do update
           set device_name           = case when excluded.last_heartbeat >= d.last_heartbeat then excluded.device_name
                                            else d.device_name end,
               avg_utilization       = gpufs_running_mean(d.avg_utilization, d.total_heartbeats,
                                                          excluded.avg_utilization, excluded.total_heartbeats),
               avg_temperature       = gpufs_running_mean(d.avg_temperature, d.total_heartbeats,
                                                          excluded.avg_temperature, excluded.total_heartbeats),
               avg_power_usage       = gpufs_running_mean(d.avg_power_usage, d.total_heartbeats,
                                                          excluded.avg_power_usage, excluded.total_heartbeats),
               avg_memory_usage      = gpufs_running_mean(d.avg_memory_usage, d.total_heartbeats,
                                                          excluded.avg_memory_usage, excluded.total_heartbeats),
               total_heartbeats      = d.total_heartbeats + excluded.total_heartbeats,
               last_heartbeat        = greatest(d.last_heartbeat, excluded.last_heartbeat),
               last_heartbeat_bucket = greatest(d.last_heartbeat_bucket, excluded.last_heartbeat_bucket),
               updated_at            = now()
        returning 1
    ), gpu_samples as (
        select s.client_id, s.ts, g.*
          from stored s
         cross join lateral jsonb_to_recordset(s.devices)
               as g(device_index integer, name text, uuid text, temp numeric, usage numeric, mem_usage numeric,
                    power_usage numeric, fan_speed numeric, sm_clock_mhz integer, mem_clock_mhz integer,
                    mem_total_mb integer, mem_used_mb integer, power_limit numeric, ecc_uncorrected bigint,
                    xid integer, processes jsonb)
         where s.ts >= now() - make_interval(days => p_hourly_days)
    ), raw_samples as (
        insert into gpufs_gpu_samples (client_id, device_index, reported_at, name, uuid, temp, usage, mem_usage,
                                       power_usage, fan_speed, sm_clock_mhz, mem_clock_mhz, mem_total_mb, mem_used_mb,
                                       power_limit, ecc_uncorrected, xid, processes)
        select client_id, device_index, ts, name, uuid, temp, usage, mem_usage, power_usage, round(fan_speed),
               sm_clock_mhz, mem_clock_mhz, mem_total_mb, mem_used_mb, power_limit, ecc_uncorrected, xid, processes
          from gpu_samples
         where ts >= now() - make_interval(days => p_raw_days)
         order by client_id, device_index, ts
            on conflict do nothing
        returning 1
    ), gpu_hours as (
        -- A row per GPU and half hour (migration 0016). Sums (of the values as the samples keep them,
        -- real) and maxima fold in whatever order reports arrive; name and uuid follow the newest sample.
        insert into gpufs_gpu_hourly as h (client_id, device_index, hour, name, uuid, last_reported_at, samples,
                                           temp_sum, temp_max, usage_sum, usage_max, mem_usage_sum, power_sum, power_max)
        select client_id, device_index, date_bin('30 minutes', ts, timestamptz '1970-01-01 00:00:00+00'),
               (array_agg(name order by ts desc))[1], (array_agg(uuid order by ts desc))[1], max(ts), count(*),
               sum(temp::real::float8), max(temp), sum(usage::real::float8), max(usage), sum(mem_usage::real::float8),
               sum(power_usage::real::float8), max(power_usage)
          from gpu_samples
         group by client_id, device_index, date_bin('30 minutes', ts, timestamptz '1970-01-01 00:00:00+00')
         order by client_id, device_index, date_bin('30 minutes', ts, timestamptz '1970-01-01 00:00:00+00')
            on conflict (client_id, device_index, hour) do update
           set name             = case when excluded.last_reported_at >= h.last_reported_at then excluded.name
                                       else h.name end,
               uuid             = case when excluded.last_reported_at >= h.last_reported_at then excluded.uuid
                                       else h.uuid end,
               last_reported_at = greatest(h.last_reported_at, excluded.last_reported_at),
               samples          = h.samples + excluded.samples,
               temp_sum         = h.temp_sum + excluded.temp_sum,
               temp_max         = greatest(h.temp_max, excluded.temp_max),
               usage_sum        = h.usage_sum + excluded.usage_sum,
               usage_max        = greatest(h.usage_max, excluded.usage_max),
               mem_usage_sum    = h.mem_usage_sum + excluded.mem_usage_sum,
               power_sum        = h.power_sum + excluded.power_sum,
               power_max        = greatest(h.power_max, excluded.power_max)
        returning 1
    ), latest as (
        select distinct on (client_id) client_id, ts, cpu, mem, disk, memsize, tflops, devices
          from stored
         order by client_id, ts desc
    ), snapshot as (
        -- Replaced only by a newer report: a late, older one never overwrites it.
        insert into system_info as s (client_id, cpu_usage, mem_usage, disk_usage, device_memsize, device_count,
                                      total_tflops, reported_at, last_seen_at, created_at, updated_at)
        select client_id, round(cpu), round(mem), round(disk), memsize, jsonb_array_length(devices),
               coalesce(round(tflops), 0), ts, now(), now(), now()
          from latest
         order by client_id
            on conflict (client_id) do update
           set cpu_usage      = excluded.cpu_usage,
               mem_usage      = excluded.mem_usage,
               disk_usage     = excluded.disk_usage,
               device_memsize = excluded.device_memsize,
               device_count   = excluded.device_count,
               total_tflops   = excluded.total_tflops,
               reported_at    = excluded.reported_at,
               last_seen_at   = greatest(s.last_seen_at, now()),
               updated_at     = now()
         where s.reported_at is null or s.reported_at < excluded.reported_at
        returning client_id
    ), seen as (
        -- A client whose snapshot stayed (its reports are older) was still seen now. Only rows the
        -- snapshot did not write: one statement cannot update a row twice.
        update system_info
           set last_seen_at = greatest(last_seen_at, now())
         where client_id in (select client_id from latest)
           and client_id not in (select client_id from snapshot)
        returning 1
    ), replaced as (
        select client_id, devices
          from latest
         where client_id in (select client_id from snapshot)
    ), gpus_gone as (
        -- The snapshot's GPUs are the new report's: one that disappeared from it goes.
        delete from device_info d
         using replaced r
         where d.client_id = r.client_id
           and not exists (select 1
                             from jsonb_array_elements(r.devices) as e
                            where (e ->> 'device_index')::integer = d.device_index)
        returning 1
    ), gpus as (
        insert into device_info as d (client_id, device_index, device_name, device_memusage, device_gpuusage,
                                      device_powerusage, device_temp, uuid, fan_speed, sm_clock_mhz, mem_clock_mhz,
                                      mem_total_mb, mem_used_mb, power_limit, ecc_uncorrected, xid, processes,
                                      created_at, updated_at)
        select r.client_id, g.device_index, g.name, round(g.mem_usage), round(g.usage), round(g.power_usage),
               round(g.temp), g.uuid, round(g.fan_speed), g.sm_clock_mhz, g.mem_clock_mhz, g.mem_total_mb,
               g.mem_used_mb, g.power_limit, g.ecc_uncorrected, g.xid, g.processes, now(), now()
          from replaced r
         cross join lateral jsonb_to_recordset(r.devices)
               as g(device_index integer, name text, temp numeric, usage numeric, mem_usage numeric, power_usage numeric,
                    uuid text, fan_speed numeric, sm_clock_mhz integer, mem_clock_mhz integer, mem_total_mb integer,
                    mem_used_mb integer, power_limit numeric, ecc_uncorrected bigint, xid integer, processes jsonb)
         order by r.client_id, g.device_index
            on conflict (client_id, device_index) do update
           set device_name       = excluded.device_name,
               device_memusage   = excluded.device_memusage,
               device_gpuusage   = excluded.device_gpuusage,
               device_powerusage = excluded.device_powerusage,
               device_temp       = excluded.device_temp,
               uuid              = excluded.uuid,
               fan_speed         = excluded.fan_speed,
               sm_clock_mhz      = excluded.sm_clock_mhz,
               mem_clock_mhz     = excluded.mem_clock_mhz,
               mem_total_mb      = excluded.mem_total_mb,
               mem_used_mb       = excluded.mem_used_mb,
               power_limit       = excluded.power_limit,
               ecc_uncorrected   = excluded.ecc_uncorrected,
               xid               = excluded.xid,
               processes         = excluded.processes,
               updated_at        = now()
        returning 1
    )
    select i.ord, s.ord is not null as stored, coalesce(s.counted, false) as counted
      from input i
      left join scored s on s.ord = i.ord
     order by i.ord;
end
$$;
