-- Per-GPU history: what device_history reads, and the partition upkeep of its tables
-- (gpufs/history.py). The samples themselves are written by ingest-reports (heartbeat.sql).

-- name: device-history(user_id, client_id, device_index, time_from, time_to, step)
-- One point per GPU and non-empty bucket of `step` seconds (buckets start at multiples of the
-- step since the epoch) over the raw samples in [time_from, time_to): averages and maxima,
-- rounded as the API shows them, with the name and uuid of the GPU's newest sample in the range.
-- A row per GPU, its points as arrays in time order (a row per point cost more to fetch than to
-- compute). One row with a null device_index when the client has no sample in the range; no row
-- when it is not the user's. The range on reported_at, the partition key, prunes every partition outside
-- it. The names are looked up once per GPU by key: taking them in the aggregation made it sort
-- every sample.
with points as (
    select device_index,
           date_bin(make_interval(secs => :step), reported_at, timestamptz '1970-01-01 00:00:00+00') as time,
           count(*) as samples,
           round(avg(temp)::numeric, 2)::float8 as temp, max(temp)::numeric::float8 as temp_max,
           round(avg(usage)::numeric, 2)::float8 as usage, max(usage)::numeric::float8 as usage_max,
           round(avg(mem_usage)::numeric, 2)::float8 as mem_usage,
           round(avg(power_usage)::numeric, 2)::float8 as power_usage,
           max(power_usage)::numeric::float8 as power_max,
           max(reported_at) as newest
      from gpufs_gpu_samples
     where client_id = :client_id
       and reported_at >= :time_from
       and reported_at < :time_to
       and (:device_index::integer is null or device_index = :device_index)
     group by 1, 2
), devices as (
    select n.device_index, s.name, s.uuid
      from (select device_index, max(newest) as newest from points group by 1) n
     cross join lateral (select name, uuid
                           from gpufs_gpu_samples
                          where client_id = :client_id
                            and device_index = n.device_index
                            and reported_at = n.newest
                            and reported_at >= :time_from
                            and reported_at < :time_to
                          limit 1) s  -- the limit keeps it a lookup per GPU, not a second scan of the range
)
select d.device_index, d.name, d.uuid,
       array_agg(p.time order by p.time) as time, array_agg(p.samples order by p.time) as samples,
       array_agg(p.temp order by p.time) as temp, array_agg(p.temp_max order by p.time) as temp_max,
       array_agg(p.usage order by p.time) as usage, array_agg(p.usage_max order by p.time) as usage_max,
       array_agg(p.mem_usage order by p.time) as mem_usage,
       array_agg(p.power_usage order by p.time) as power_usage, array_agg(p.power_max order by p.time) as power_max
  from gpu_assets a
  left join (points p join devices d on d.device_index = p.device_index) on true
 where a.user_id = :user_id
   and a.client_id = :client_id
 group by d.device_index, d.name, d.uuid
 order by d.device_index;

-- name: device-history-hourly(user_id, client_id, device_index, time_from, time_to, step)
-- device-history from the hourly rollups, for ranges beyond the raw samples' retention: the
-- hours starting in [time_from, time_to), `step` a multiple of 3600 so each hour falls in one
-- bucket. The same answer as the raw samples would give: the rollups hold every stored sample.
with points as (
    select device_index,
           date_bin(make_interval(secs => :step), hour, timestamptz '1970-01-01 00:00:00+00') as time,
           sum(samples)::integer as samples,
           round((sum(temp_sum) / sum(samples))::numeric, 2)::float8 as temp,
           max(temp_max)::numeric::float8 as temp_max,
           round((sum(usage_sum) / sum(samples))::numeric, 2)::float8 as usage,
           max(usage_max)::numeric::float8 as usage_max,
           round((sum(mem_usage_sum) / sum(samples))::numeric, 2)::float8 as mem_usage,
           round((sum(power_sum) / sum(samples))::numeric, 2)::float8 as power_usage,
           max(power_max)::numeric::float8 as power_max,
           max(last_reported_at) as newest
      from gpufs_gpu_hourly
     where client_id = :client_id
       and hour >= :time_from
       and hour < :time_to
       and (:device_index::integer is null or device_index = :device_index)
     group by 1, 2
), devices as (
    select n.device_index, h.name, h.uuid
      from (select device_index, max(newest) as newest from points group by 1) n
     cross join lateral (select name, uuid
                           from gpufs_gpu_hourly
                          where client_id = :client_id
                            and device_index = n.device_index
                            and hour = date_trunc('hour', n.newest, 'UTC')
                            and hour >= :time_from
                            and hour < :time_to
                          limit 1) h
)
select d.device_index, d.name, d.uuid,
       array_agg(p.time order by p.time) as time, array_agg(p.samples order by p.time) as samples,
       array_agg(p.temp order by p.time) as temp, array_agg(p.temp_max order by p.time) as temp_max,
       array_agg(p.usage order by p.time) as usage, array_agg(p.usage_max order by p.time) as usage_max,
       array_agg(p.mem_usage order by p.time) as mem_usage,
       array_agg(p.power_usage order by p.time) as power_usage, array_agg(p.power_max order by p.time) as power_max
  from gpu_assets a
  left join (points p join devices d on d.device_index = p.device_index) on true
 where a.user_id = :user_id
   and a.client_id = :client_id
 group by d.device_index, d.name, d.uuid
 order by d.device_index;

-- name: gpu-history-ensure(kind, time_from, time_to)$
-- Make the missing partitions of `kind` ('raw' or 'hourly') covering [time_from, time_to], and
-- split the default partition's rows into their own; the names of those made.
select coalesce(array_agg(p order by p), '{}') as made
  from gpufs_gpu_history_ensure(:kind, :time_from, :time_to) as p;

-- name: gpu-history-drop(kind, before)$
-- Drop the partitions of `kind` wholly before `before`; the names of those dropped.
select coalesce(array_agg(p order by p), '{}') as dropped
  from gpufs_gpu_history_drop(:kind, :before) as p;
