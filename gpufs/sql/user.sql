-- Client registry: what insert_client, edit_client_info, client_list,
-- client_status_list and client_device_detail run.

-- name: insert-client(user_id, client_id, client_name, client_status, os_type)^
-- Upsert by client_id; an existing client of another user matches no row (the caller's 409).
insert into gpu_assets (user_id, client_id, client_name, client_status, valid_status, os_type)
values (:user_id, :client_id, :client_name, :client_status, 'valid', :os_type)
    on conflict (client_id) do update
   set client_name   = excluded.client_name,
       client_status = excluded.client_status,
       os_type       = coalesce(excluded.os_type, gpu_assets.os_type),
       updated_at    = now() at time zone 'UTC'
 where gpu_assets.user_id = excluded.user_id
returning client_id;

-- name: edit-client(user_id, client_id, os_type, client_name, client_status, valid_status)^
-- Partial update: a null parameter keeps the stored value.
update gpu_assets
   set os_type       = coalesce(:os_type, os_type),
       client_name   = coalesce(:client_name, client_name),
       client_status = coalesce(:client_status, client_status),
       valid_status  = coalesce(:valid_status, valid_status),
       updated_at    = now() at time zone 'UTC'
 where user_id = :user_id
   and client_id = :client_id
returning client_id;

-- name: client-list(user_id, client_id, status, name, valid_status, live, now, window_seconds, interval)
-- The user's clients with their latest snapshot, health and uptime days, oldest first.
-- `live` makes client_status (and the status filter) the live status instead of the registered one.
with clients as (
    select a.client_id, a.client_name, a.client_status, coalesce(a.valid_status, 'valid') as valid_status,
           a.os_type, a.created_at at time zone 'UTC' as created_at,
           s.total_tflops, s.cpu_usage, s.mem_usage, s.disk_usage, s.last_seen_at,
           case when a.client_status in ('maintenance', 'error') then a.client_status
                when s.last_seen_at > :now::timestamptz - make_interval(secs => :window_seconds) then 'online'
                else 'offline'
           end as live_status
      from gpu_assets a
      left join system_info s on s.client_id = a.client_id
     where a.user_id = :user_id
       and (:client_id::bytea is null or a.client_id = :client_id)
       and coalesce(a.valid_status, 'valid') = coalesce(:valid_status, 'valid')
       and (:name::text is null or strpos(lower(a.client_name), lower(:name)) > 0)
), days as materialized (
    select day, width from gpufs_health_days(:now, :interval)
), shown as (
    select c.*, case when :live then c.live_status else c.client_status end as shown_status
      from clients c
)
select c.client_id, c.client_name, c.shown_status as client_status, c.valid_status, c.os_type,
       coalesce(g.device_name, '') as device_name,
       coalesce(c.total_tflops, 0) as tflops,
       coalesce(c.cpu_usage, 0) as cpu_usage,
       coalesce(c.mem_usage, 0) as memory_usage,
       coalesce(c.disk_usage, 0) as storage_usage,
       h.health,
       c.last_seen_at as last_online,
       c.created_at,
       coalesce((select u.days from client_uptime_days u where u.client_id = c.client_id), 0) as uptime_days
  from shown c
  -- gpufs_health, with the bucket width of each day looked up once for all the clients
  cross join lateral (select gpufs_health_percent(coalesce(sum(s.health_heartbeats), 0),
                                                  sum(gpufs_expected_in(w.day, c.created_at, :now, w.width)))
                               as health
                        from days w
                        left join client_daily_stats s
                               on s.client_id = c.client_id
                              and s.date = w.day
                              and s.date >= gpufs_health_first_day(:now)) h
  left join lateral (select device_name
                       from device_info d
                      where d.client_id = c.client_id
                      order by d.device_index
                      limit 1) g on true
 where (:status::text is null or c.shown_status = :status)
 order by c.created_at, c.client_id;

-- name: client-detail(user_id, client_id, now, interval)
-- One client's latest snapshot with health and uptime days, once per GPU of its latest report
-- (by index; one row with no GPU when it reported none); no row when it is not the user's. One
-- statement rather than the snapshot and then its GPUs: a round trip fewer, on every view of
-- a client. The health is gpufs_health written out: a call to that function planned its body
-- on every execution, which took longer than the rest of the query.
select h.health,
       coalesce(s.cpu_usage, 0) as cpu_usage,
       coalesce(s.mem_usage, 0) as memory_usage,
       coalesce(s.disk_usage, 0) as storage_usage,
       coalesce(s.device_memsize, 0) as device_memsize,
       coalesce((select u.days from client_uptime_days u where u.client_id = a.client_id), 0) as uptime_days,
       g.device_index, g.name, g.temp, g.usage, g.mem_usage, g.power_usage, g.uuid, g.fan_speed, g.sm_clock_mhz,
       g.mem_clock_mhz, g.mem_total_mb, g.mem_used_mb, g.power_limit, g.ecc_uncorrected, g.xid, g.processes
  from gpu_assets a
  left join system_info s on s.client_id = a.client_id
 cross join lateral (select gpufs_health_percent(coalesce(sum(d.health_heartbeats), 0),
                                                 sum(gpufs_expected_in(w.day, a.created_at at time zone 'UTC',
                                                                       :now, w.width))) as health
                       from gpufs_health_days(:now, :interval) w
                       left join client_daily_stats d
                              on d.client_id = a.client_id
                             and d.date = w.day
                             and d.date >= gpufs_health_first_day(:now)) h
  left join lateral (select i.device_index, coalesce(i.device_name, '') as name,
                            coalesce(i.device_temp, 0) as temp,
                            coalesce(i.device_gpuusage, 0) as usage,
                            coalesce(i.device_memusage, 0) as mem_usage,
                            coalesce(i.device_powerusage, 0) as power_usage,
                            -- The optional readings stay null when unknown; a real as the report wrote it.
                            i.uuid, i.fan_speed, i.sm_clock_mhz, i.mem_clock_mhz, i.mem_total_mb, i.mem_used_mb,
                            i.power_limit::numeric::float8 as power_limit, i.ecc_uncorrected, i.xid, i.processes
                       from device_info i
                      where i.client_id = a.client_id) g on true
 where a.user_id = :user_id
   and a.client_id = :client_id
 order by g.device_index;
