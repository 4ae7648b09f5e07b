-- Per-GPU history: what device_history reads, and the partition upkeep of its tables
-- (gpufs/history.py). The samples themselves are written by ingest-reports (heartbeat.sql).

-- name: device-history(user_id, client_id, device_index, time_from, time_to, step)
-- One point per GPU and non-empty bucket of `step` seconds (buckets start at multiples of the
-- step since the epoch) over the raw samples in [time_from, time_to), with the name and uuid of
-- the GPU's newest sample in the range. A row per GPU, its points as the JSON text the answer
-- carries as it is (schemas.Points): dumping thousands of points in Python cost more than the
-- query. A point's fields are schemas.HistoryPoint's, in its order: `time` as envelope.isoz
-- writes it, averages rounded to 2 decimals, maxima the stored real as it reads (72.3, not
-- 72.30000305). One row with a null device_index when the client has no sample in the range;
-- no row when it is not the user's. The range on reported_at, the partition key, prunes every
-- partition outside it. The names are looked up once per GPU by key: taking them in the
-- aggregation made it sort every sample. (Sums, not avg(): the same additions, without avg's
-- sum of squares.)
with points as (
    select b.device_index, b.time, b.newest, row_to_json(point)::text as point
      from (select device_index,
                   date_bin(make_interval(secs => :step), reported_at, timestamptz '1970-01-01 00:00:00+00') as time,
                   count(*) as samples,
                   sum(temp::float8) as temp_sum, max(temp) as temp_max,
                   sum(usage::float8) as usage_sum, max(usage) as usage_max,
                   sum(mem_usage::float8) as mem_usage_sum,
                   sum(power_usage::float8) as power_sum, max(power_usage) as power_max,
                   max(reported_at) as newest
              from gpufs_gpu_samples
             where client_id = :client_id
               and reported_at >= :time_from
               and reported_at < :time_to
               and (:device_index::integer is null or device_index = :device_index)
             group by 1, 2) b
     cross join lateral (
            select to_char(b.time at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as time, b.samples,
                   gpufs_round2(b.temp_sum / b.samples) as temp, b.temp_max,
                   gpufs_round2(b.usage_sum / b.samples) as usage, b.usage_max,
                   gpufs_round2(b.mem_usage_sum / b.samples) as mem_usage,
                   gpufs_round2(b.power_sum / b.samples) as power_usage, b.power_max) point
), series as (
    select device_index, max(newest) as newest, '[' || string_agg(point, ',' order by time) || ']' as points
      from points
     group by 1
)
select s.device_index, d.name, d.uuid, s.points
  from gpu_assets a
  left join (series s
             cross join lateral (select name, uuid
                                   from gpufs_gpu_samples
                                  where client_id = :client_id
                                    and device_index = s.device_index
                                    and reported_at = s.newest
                                    and reported_at >= :time_from
                                    and reported_at < :time_to
                                  limit 1) d) on true  -- the limit keeps it a lookup per GPU
 where a.user_id = :user_id
   and a.client_id = :client_id
 order by s.device_index;

-- name: device-history-hourly(user_id, client_id, device_index, time_from, time_to, step)
-- device-history from the hourly rollups, for ranges beyond the raw samples' retention: the
-- hours starting in [time_from, time_to), `step` a multiple of 3600 so each hour falls in one
-- bucket. The same answer as the raw samples would give: the rollups hold every stored sample.
with points as (
    select b.device_index, b.time, b.newest, row_to_json(point)::text as point
      from (select device_index,
                   date_bin(make_interval(secs => :step), hour, timestamptz '1970-01-01 00:00:00+00') as time,
                   sum(samples)::integer as samples,
                   sum(temp_sum) as temp_sum, max(temp_max) as temp_max,
                   sum(usage_sum) as usage_sum, max(usage_max) as usage_max,
                   sum(mem_usage_sum) as mem_usage_sum,
                   sum(power_sum) as power_sum, max(power_max) as power_max,
                   max(last_reported_at) as newest
              from gpufs_gpu_hourly
             where client_id = :client_id
               and hour >= :time_from
               and hour < :time_to
               and (:device_index::integer is null or device_index = :device_index)
             group by 1, 2) b
     cross join lateral (
            select to_char(b.time at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as time, b.samples,
                   gpufs_round2(b.temp_sum / b.samples) as temp, b.temp_max,
                   gpufs_round2(b.usage_sum / b.samples) as usage, b.usage_max,
                   gpufs_round2(b.mem_usage_sum / b.samples) as mem_usage,
                   gpufs_round2(b.power_sum / b.samples) as power_usage, b.power_max) point
), series as (
    select device_index, max(newest) as newest, '[' || string_agg(point, ',' order by time) || ']' as points
      from points
     group by 1
)
select s.device_index, h.name, h.uuid, s.points
  from gpu_assets a
  left join (series s
             cross join lateral (select name, uuid
                                   from gpufs_gpu_hourly
                                  where client_id = :client_id
                                    and device_index = s.device_index
                                    and hour = date_trunc('hour', s.newest, 'UTC')
                                    and hour >= :time_from
                                    and hour < :time_to
                                  limit 1) h) on true
 where a.user_id = :user_id
   and a.client_id = :client_id
 order by s.device_index;

-- name: gpu-history-ensure(kind, time_from, time_to)$
-- Make the missing partitions of `kind` ('raw' or 'hourly') covering [time_from, time_to], and
-- split the default partition's rows into their own; the names of those made.
select coalesce(array_agg(p order by p), '{}') as made
  from gpufs_gpu_history_ensure(:kind, :time_from, :time_to) as p;

-- name: gpu-history-drop(kind, before)$
-- Drop the partitions of `kind` wholly before `before`; the names of those dropped.
select coalesce(array_agg(p order by p), '{}') as dropped
  from gpufs_gpu_history_drop(:kind, :before) as p;
