-- Fleet monitoring: what client_stat, client_monitor and client_health run.

-- name: client-stat(user_id, now, window_seconds, interval, temp_warning)^
-- Counts over the user's valid clients; see contract 3.6 for what each one means.
with clients as (
    select a.client_id, a.client_status, a.created_at at time zone 'UTC' as created_at,
           s.total_tflops,
           s.last_seen_at > :now::timestamptz - make_interval(secs => :window_seconds) as seen
      from gpu_assets a
      left join system_info s on s.client_id = a.client_id
     where a.user_id = :user_id
       and coalesce(a.valid_status, 'valid') = 'valid'
), yesterday as materialized (  -- its bucket width looked up once for all the clients
    select day, width from gpufs_health_days(:now, :interval) where day = (:now::timestamptz at time zone 'UTC')::date - 1
)
select count(*) as systems_total_number,
       count(*) filter (where client_status not in ('maintenance', 'error') and seen) as systems_online_number,
       count(*) filter (where client_status = 'maintenance') as systems_maintenance_number,
       count(*) filter (where client_status = 'error'
                           or (client_status in ('active', 'online') and seen is not true)
                           or exists (select 1 from device_info d
                                       where d.client_id = c.client_id and d.device_temp >= :temp_warning)
                       ) as systems_warnings_number,
       coalesce(sum(total_tflops), 0) as total_tflops,
       coalesce(round(100 * avg(gpufs_uptime_share(s.health_heartbeats,
                                                   gpufs_expected_in(y.day, c.created_at, :now, y.width)))),
                0)::integer as uptime_rate
  from clients c
 cross join yesterday y
  left join client_daily_stats s on s.client_id = c.client_id and s.date = y.day;

-- name: client-monitor(user_id, client_id, date_from, date_to)
-- One row per client and day of the daily rollup (newest day first); a client with no
-- rollup in the range appears once with null figures.
select a.client_id, a.client_name,
       a.created_at at time zone 'UTC' as created_at,
       a.updated_at at time zone 'UTC' as updated_at,
       d.date, d.avg_cpu_usage, d.avg_memory_usage, d.avg_disk_usage,
       d.total_network_in_bytes, d.total_network_out_bytes, d.total_heartbeats, d.last_heartbeat,
       case when d.id is null then null
            when d.total_heartbeats > 0 then d.total_network_in_bytes::float8 / d.total_heartbeats
            else 0 end as avg_network_in_bytes,
       case when d.id is null then null
            when d.total_heartbeats > 0 then d.total_network_out_bytes::float8 / d.total_heartbeats
            else 0 end as avg_network_out_bytes
  from gpu_assets a
  left join client_daily_stats d
         on d.client_id = a.client_id
        and (:date_from::date is null or d.date >= :date_from)
        and (:date_to::date is null or d.date <= :date_to)
 where a.user_id = :user_id
   and coalesce(a.valid_status, 'valid') = 'valid'
   and (:client_id::bytea is null or a.client_id = :client_id)
 order by d.date desc nulls last, a.client_id;

-- name: client-health(user_id, client_id, time_from, time_to, before, limit)
-- Raw heartbeats of the user's valid clients, newest first; `limit` null means all.
-- A page takes at most `limit` rows from each client (its newest, from the client/timestamp
-- index) before sorting them: a plain join sorted every heartbeat on record to return a page.
select h.client_id, a.client_name, h.timestamp,
       h.cpu_usage, h.mem_usage, h.disk_usage, h.network_up, h.network_down
  from gpu_assets a
 cross join lateral (
       select h.client_id, h.timestamp, h.cpu_usage, h.mem_usage, h.disk_usage, h.network_up, h.network_down
         from heartbeat h
        where h.client_id = a.client_id
          and (:time_from::timestamptz is null or h.timestamp >= :time_from)
          and (:time_to::timestamptz is null or h.timestamp < :time_to)
          and (:before::timestamptz is null or h.timestamp < :before)
        order by h.timestamp desc
        limit :limit) h
 where a.user_id = :user_id
   and coalesce(a.valid_status, 'valid') = 'valid'
   and (:client_id::bytea is null or a.client_id = :client_id)
 order by h.timestamp desc, h.client_id
 limit :limit;

-- name: repeatable-read()!
-- The streamed client_health reads every slice in one snapshot, as one statement would.
set transaction isolation level repeatable read;

-- name: client-health-span(user_id, client_id, time_from, time_to, before)^
-- The newest and oldest timestamps client-health would return without `limit`, from each
-- client's end of its client/timestamp index: where the stream's slices start and stop.
select max(h.newest) as newest, min(h.oldest) as oldest
  from gpu_assets a
 cross join lateral (
       select max(h.timestamp) as newest, min(h.timestamp) as oldest
         from heartbeat h
        where h.client_id = a.client_id
          and (:time_from::timestamptz is null or h.timestamp >= :time_from)
          and (:time_to::timestamptz is null or h.timestamp < :time_to)
          and (:before::timestamptz is null or h.timestamp < :before)) h
 where a.user_id = :user_id
   and coalesce(a.valid_status, 'valid') = 'valid'
   and (:client_id::bytea is null or a.client_id = :client_id);
