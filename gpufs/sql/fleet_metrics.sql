-- The fleet as Prometheus samples: what GET /metrics/fleet runs, once per render (gpufs/fleet_metrics.py).

-- name: fleet-metrics(user_id, now, window_seconds, interval)
-- One row per client: valid clients only, of one user or (user_id null) of all, ordered by
-- user and client. Live: a report received within the window, whatever the registered status.
-- `gpus`: the GPUs of a live client's latest report, a JSON object each (null for a client not
-- live or reporting none). A silent client's latest figures are old news, never a current
-- reading: its host figures are null too. Each row also carries its user's count of firing
-- alerts per condition, over the valid clients shown. One row per client rather than per GPU:
-- a scrape of 1,000 machines builds 1,000 rows in Python, not 8,000 (docs/decisions.md).
with clients as (
    select a.client_id, a.user_id, coalesce(a.client_name, '') as client_name,
           coalesce(a.client_status, '') as client_status, coalesce(a.valid_status, 'valid') as valid_status,
           coalesce(a.os_type, '') as os_type, a.created_at at time zone 'UTC' as created_at,
           s.cpu_usage, s.mem_usage, s.disk_usage, s.last_seen_at,
           coalesce(s.last_seen_at > :now::timestamptz - make_interval(secs => :window_seconds), false) as live
      from gpu_assets a
      left join system_info s on s.client_id = a.client_id
     where (:user_id::text is null or a.user_id = :user_id)
       and coalesce(a.valid_status, 'valid') = 'valid'
), days as materialized (
    select day, width from gpufs_health_days(:now, :interval)
), health as (
    -- gpufs_health over every client at once: the window's rollups in one join
    select c.client_id,
           gpufs_health_percent(coalesce(sum(s.health_heartbeats), 0),
                                sum(gpufs_expected_in(w.day, c.created_at, :now, w.width))) as health
      from clients c
     cross join days w
      left join client_daily_stats s
             on s.client_id = c.client_id
            and s.date = w.day
            and s.date >= gpufs_health_first_day(:now)
     group by c.client_id
), firing as (
    select c.user_id,
           count(*) filter (where al.condition = 'offline') as firing_offline,
           count(*) filter (where al.condition = 'gpu_hot') as firing_gpu_hot,
           count(*) filter (where al.condition = 'error_status') as firing_error_status,
           count(*) filter (where al.condition = 'disk_full') as firing_disk_full
      from clients c
      join gpufs_alerts al on al.client_id = c.client_id and al.state = 'firing'
     group by c.user_id
)
select c.client_id, c.user_id, c.client_name, c.client_status, c.valid_status, c.os_type, c.live,
       case when c.client_status in ('maintenance', 'error') then c.client_status
            when c.live then 'online'
            else 'offline'
       end as live_status,
       h.health,
       case when c.live then c.cpu_usage end as cpu_usage,
       case when c.live then c.mem_usage end as mem_usage,
       case when c.live then c.disk_usage end as disk_usage,
       extract(epoch from c.last_seen_at)::float8 as last_seen,
       g.gpus,
       coalesce(f.firing_offline, 0) as firing_offline, coalesce(f.firing_gpu_hot, 0) as firing_gpu_hot,
       coalesce(f.firing_error_status, 0) as firing_error_status,
       coalesce(f.firing_disk_full, 0) as firing_disk_full
  from clients c
  join health h on h.client_id = c.client_id
  left join firing f on f.user_id = c.user_id
  left join lateral (
      select json_agg(json_build_object(
                 'device_index', d.device_index, 'uuid', coalesce(d.uuid, ''),
                 'device_name', coalesce(d.device_name, ''), 'device_temp', d.device_temp,
                 'device_gpuusage', d.device_gpuusage, 'device_powerusage', d.device_powerusage,
                 'mem_used_mb', d.mem_used_mb,
                 -- greatest() would turn null into 0
                 'mem_free_mb', case when d.mem_total_mb is not null and d.mem_used_mb is not null
                                     then greatest(d.mem_total_mb - d.mem_used_mb, 0) end,
                 'sm_clock_mhz', d.sm_clock_mhz, 'mem_clock_mhz', d.mem_clock_mhz,
                 'fan_speed', d.fan_speed, 'xid', d.xid)
                 order by d.device_index) as gpus
        from device_info d
       where c.live
         and d.client_id = c.client_id
  ) as g on true
 order by c.user_id, c.client_id;
