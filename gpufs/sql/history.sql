-- Per-GPU history: what device_history reads, and the partition upkeep of its tables
-- (gpufs/history.py). The samples themselves are written by ingest-reports (heartbeat.sql).

-- name: device-history(user_id, client_id, device_index, time_from, time_to, step, whole_from, whole_to)
-- One point per GPU and non-empty bucket of `step` seconds (buckets start at multiples of the
-- step since the epoch) over the samples in [time_from, time_to), with the name and uuid of the
-- GPU's newest sample in the range. The whole buckets in [whole_from, whole_to) are read from the
-- half-hour rollups, a row per half hour rather than a sample a minute (gpufs/history.py passes
-- them when the step is whole half hours, from where the rollups are half hours: migration 0016);
-- the rest of the range from the raw samples. Both give the same figures: the rollups are the sums
-- and maxima of the same stored samples. A row per GPU, its points in time order as the JSON text
-- the answer carries as it is (gpufs_history_point, schemas.Points): dumping thousands of points
-- in Python cost more than the query. One row with a null device_index when the client has no
-- sample in the range; no row when it is not the user's. The ranges on reported_at and hour, the
-- partition keys, prune every partition outside them. The names are looked up once per GPU, by
-- key, newest partition first: taking them in the aggregation made it sort every sample. Sums
-- rather than avg(): the same additions, without avg's sum of squares.
with raw as (
    select *
      from gpufs_gpu_samples
     where client_id = :client_id
       and reported_at >= :time_from
       and reported_at < :whole_from
     union all
    select *
      from gpufs_gpu_samples
     where client_id = :client_id
       and reported_at >= :whole_to
       and reported_at < :time_to
), buckets as (
    select device_index,
           date_bin(make_interval(secs => :step), reported_at, timestamptz '1970-01-01 00:00:00+00') as time,
           count(*) as samples,
           sum(temp::float8) as temp_sum, max(temp) as temp_max,
           sum(usage::float8) as usage_sum, max(usage) as usage_max,
           sum(mem_usage::float8) as mem_usage_sum,
           sum(power_usage::float8) as power_sum, max(power_usage) as power_max
      from raw
     where (:device_index::integer is null or device_index = :device_index)
     group by 1, 2
     union all
    select device_index,
           date_bin(make_interval(secs => :step), hour, timestamptz '1970-01-01 00:00:00+00') as time,
           sum(samples) as samples,
           sum(temp_sum) as temp_sum, max(temp_max) as temp_max,
           sum(usage_sum) as usage_sum, max(usage_max) as usage_max,
           sum(mem_usage_sum) as mem_usage_sum,
           sum(power_sum) as power_sum, max(power_max) as power_max
      from gpufs_gpu_hourly
     where client_id = :client_id
       and hour >= :whole_from
       and hour < :whole_to
       and (:device_index::integer is null or device_index = :device_index)
     group by 1, 2
), series as (
    select device_index,
           '[' || string_agg(gpufs_history_point(time, samples, temp_sum, temp_max, usage_sum, usage_max,
                                                 mem_usage_sum, power_sum, power_max), ',' order by time) || ']' as points
      from buckets
     group by 1
)
select s.device_index, d.name, d.uuid, s.points
  from gpu_assets a
  left join (series s
             cross join lateral (select name, uuid
                                   from gpufs_gpu_samples
                                  where client_id = :client_id
                                    and device_index = s.device_index
                                    and reported_at >= :time_from
                                    and reported_at < :time_to
                                  order by reported_at desc
                                  limit 1) d) on true
 where a.user_id = :user_id
   and a.client_id = :client_id
 order by s.device_index;

-- name: gpu-half-hours-since()$
-- Where the rollups hold half hours (migration 0016); null when they never do.
select since from gpufs_gpu_half_hours;

-- name: device-history-hourly(user_id, client_id, device_index, time_from, time_to, step)
-- device-history from the hourly rollups, for ranges beyond the raw samples' retention: the
-- hours starting in [time_from, time_to), `step` a multiple of 3600 so each hour falls in one
-- bucket. The same answer as the raw samples would give: the rollups hold every stored sample.
with buckets as (
    select device_index,
           date_bin(make_interval(secs => :step), hour, timestamptz '1970-01-01 00:00:00+00') as time,
           sum(samples) as samples,
           sum(temp_sum) as temp_sum, max(temp_max) as temp_max,
           sum(usage_sum) as usage_sum, max(usage_max) as usage_max,
           sum(mem_usage_sum) as mem_usage_sum,
           sum(power_sum) as power_sum, max(power_max) as power_max
      from gpufs_gpu_hourly
     where client_id = :client_id
       and hour >= :time_from
       and hour < :time_to
       and (:device_index::integer is null or device_index = :device_index)
     group by 1, 2
), series as (
    select device_index,
           '[' || string_agg(gpufs_history_point(time, samples, temp_sum, temp_max, usage_sum, usage_max,
                                                 mem_usage_sum, power_sum, power_max), ',' order by time) || ']' as points
      from buckets
     group by 1
)
select s.device_index, h.name, h.uuid, s.points
  from gpu_assets a
  left join (series s
             cross join lateral (select name, uuid
                                   from gpufs_gpu_hourly
                                  where client_id = :client_id
                                    and device_index = s.device_index
                                    and hour >= :time_from
                                    and hour < :time_to
                                  order by hour desc
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
