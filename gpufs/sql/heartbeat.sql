-- Heartbeat ingestion: what POST /api/client/heartbeat(s) and the fleet simulator run.
-- A batch is one transaction of two statements: report-clients, then ingest-reports. Every
-- statement takes the whole batch, so its cost does not grow with one statement per report.

-- name: report-clients(client_ids)
-- The registered clients among `client_ids`, with owner and validity, to accept or reject reports.
-- First it serializes writers of the same clients until commit, taking the locks in one global
-- order so two batches naming the same clients cannot deadlock: the next statement, ingest-reports,
-- then starts from what the previous writer committed. The lock is a one-time filter, taken before
-- any row is read; in this statement rather than one of its own, a round trip fewer per report.
with locks as (
    select pg_advisory_xact_lock(7354, k.key)
      from (select distinct ('x' || left(encode(c, 'hex'), 8))::bit(32)::integer as key
              from unnest(:client_ids::bytea[]) as c
             order by 1) as k
)
select client_id, user_id, coalesce(valid_status, 'valid') as valid_status
  from gpu_assets
 where (select count(*) from locks) >= 0
   and client_id = any(:client_ids::bytea[]);

-- name: ingest-reports(reports, interval, retention_days, raw_days, hourly_days)
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
-- report's GPUs are kept as samples (within `raw_days`) and added to their hourly rollups (within
-- `hourly_days`): every stored report, counted or not, so a duplicate, never stored, adds nothing.
with input as (
    select r.ord, decode(r.client_id, 'hex') as client_id, coalesce(r.ts, now()) as ts,
           r.cpu, r.mem, r.disk, r.rx, r.tx, r.memsize, r.tflops, coalesce(r.devices, '[]') as devices,
           row_number() over (partition by r.client_id, coalesce(r.ts, now()) order by r.ord) = 1 as first_of_ts
      from unnest(:reports::jsonb[]) as u(doc)
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
           case when c.heartbeat_interval_secs > 0 then c.heartbeat_interval_secs else :interval end as width
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
     where ts >= now() - make_interval(days => :retention_days)
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
     where s.ts >= now() - make_interval(days => :hourly_days)
), raw_samples as (
    insert into gpufs_gpu_samples (client_id, device_index, reported_at, name, uuid, temp, usage, mem_usage,
                                   power_usage, fan_speed, sm_clock_mhz, mem_clock_mhz, mem_total_mb, mem_used_mb,
                                   power_limit, ecc_uncorrected, xid, processes)
    select client_id, device_index, ts, name, uuid, temp, usage, mem_usage, power_usage, round(fan_speed),
           sm_clock_mhz, mem_clock_mhz, mem_total_mb, mem_used_mb, power_limit, ecc_uncorrected, xid, processes
      from gpu_samples
     where ts >= now() - make_interval(days => :raw_days)
     order by client_id, device_index, ts
        on conflict do nothing
    returning 1
), gpu_hours as (
    -- Sums (of the values as the samples keep them, real) and maxima fold in whatever order reports
    -- arrive; name and uuid follow the newest sample.
    insert into gpufs_gpu_hourly as h (client_id, device_index, hour, name, uuid, last_reported_at, samples,
                                       temp_sum, temp_max, usage_sum, usage_max, mem_usage_sum, power_sum, power_max)
    select client_id, device_index, date_trunc('hour', ts, 'UTC'),
           (array_agg(name order by ts desc))[1], (array_agg(uuid order by ts desc))[1], max(ts), count(*),
           sum(temp::real::float8), max(temp), sum(usage::real::float8), max(usage), sum(mem_usage::real::float8),
           sum(power_usage::real::float8), max(power_usage)
      from gpu_samples
     group by client_id, device_index, date_trunc('hour', ts, 'UTC')
     order by client_id, device_index, date_trunc('hour', ts, 'UTC')
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

-- name: prune-heartbeats(cutoff, batch)!
-- Delete at most `batch` raw heartbeats older than `cutoff`; the caller repeats until none is left.
delete from heartbeat
 where (client_id, timestamp) in (select client_id, timestamp
                                    from heartbeat
                                   where timestamp < :cutoff
                                   limit :batch);

-- name: prune-buckets(cutoff, batch)!
-- Delete at most `batch` bucket claims older than `cutoff` (their heartbeats are gone too).
delete from heartbeat_bucket
 where (client_id, bucket_start) in (select client_id, bucket_start
                                       from heartbeat_bucket
                                      where bucket_start < :cutoff
                                      limit :batch);
