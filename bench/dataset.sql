-- The benchmark's dataset, written set-based straight into the tables ingestion fills
-- (never through HTTP), shaped like what ingestion would have stored: one heartbeat per
-- client per bucket, its bucket claim, the latest snapshot and the daily rollups.
-- `users` parameters are LIKE patterns over user_id; every run's user ids start with
-- a run token, so one pattern names one group of users.

-- name: truncate-all()!
-- Only ever run against the benchmark's own database (gpufs_bench).
truncate gpu_assets, system_info, device_info, heartbeat, heartbeat_bucket, client_daily_stats,
         device_daily_stats, heartbeat_config_daily, client_models, tokens, gpufs_gpu_samples,
         gpufs_gpu_hourly restart identity;

-- name: register-clients(user_id, count, created_at)!
-- `count` clients of one user; ids derived from the user id, so a rerun makes the same ones.
insert into gpu_assets (user_id, client_id, client_name, client_status, valid_status, os_type,
                        created_at, updated_at)
select :user_id, decode(md5(:user_id || ':' || n), 'hex'), 'GPU Server ' || n,
       case when mod(n, 20) = 0 then 'maintenance' else 'online' end, 'valid', 'Linux',
       :created_at::timestamptz at time zone 'UTC', :created_at::timestamptz at time zone 'UTC'
  from generate_series(1, :count) as n;

-- name: register-background(prefix, count, per_user, created_at)!
-- `count` clients spread over users named prefix || k, `per_user` each.
insert into gpu_assets (user_id, client_id, client_name, client_status, valid_status, os_type,
                        created_at, updated_at)
select :prefix || ((n - 1) / :per_user), decode(md5(:prefix || ':' || n), 'hex'), 'GPU Server ' || n,
       'online', 'valid', 'Linux',
       :created_at::timestamptz at time zone 'UTC', :created_at::timestamptz at time zone 'UTC'
  from generate_series(1, :count) as n;

-- name: add-snapshots(now)!
-- Every client's latest report: received just now, so it is live.
insert into system_info (client_id, cpu_usage, mem_usage, disk_usage, device_memsize, device_count,
                         total_tflops, reported_at, last_seen_at, created_at, updated_at)
select client_id, 20 + mod(get_byte(client_id, 0), 70), 30 + mod(get_byte(client_id, 1), 50),
       20 + mod(get_byte(client_id, 2), 60), 8 * 81559, 8, 535, :now, :now, :now, :now
  from gpu_assets;

-- name: add-devices(now)!
-- Eight GPUs per client in the latest report; a few run hot (client_stat's warnings).
insert into device_info (client_id, device_index, device_name, device_memusage, device_gpuusage,
                         device_powerusage, device_temp, created_at, updated_at)
select a.client_id, g, 'NVIDIA H100 80GB HBM3', 20 + mod(get_byte(a.client_id, g), 70),
       mod(get_byte(a.client_id, g + 1), 100), 70 + mod(get_byte(a.client_id, g + 2), 600),
       40 + mod(get_byte(a.client_id, g + 3), 50), :now, :now
  from gpu_assets a
 cross join generate_series(0, 7) as g;

-- name: add-heartbeats(users, time_from, time_to, interval)!
-- One raw heartbeat per bucket from `time_from` to `time_to` (both bucket starts) per client,
-- in the order a live fleet writes them: time by time, every client at each.
with clients as materialized (
    select client_id, get_byte(client_id, 0) as b0, get_byte(client_id, 1) as b1,
           40 + mod(get_byte(client_id, 2), 30) as disk
      from gpu_assets
     where user_id like :users
), steps as materialized (
    select to_timestamp(k * :interval) as t, k, 1000 * mod(k, 977) as up, 4000 * mod(k, 1013) as down
      from generate_series((extract(epoch from :time_from::timestamptz) / :interval)::bigint,
                           (extract(epoch from :time_to::timestamptz) / :interval)::bigint) as k
)
insert into heartbeat (client_id, cpu_usage, mem_usage, disk_usage, network_up, network_down,
                       timestamp, created_at)
select c.client_id, 5 + mod(s.k + c.b0, 90), 20 + mod(s.k + c.b1, 70), c.disk, s.up, s.down, s.t, s.t
  from steps s
 cross join clients c;

-- name: add-buckets(users, time_from, time_to, interval)!
-- The bucket claim of every heartbeat add-heartbeats writes for the same range.
with clients as materialized (
    select client_id
      from gpu_assets
     where user_id like :users
)
insert into heartbeat_bucket (client_id, bucket_start)
select c.client_id, to_timestamp(k * :interval)
  from generate_series((extract(epoch from :time_from::timestamptz) / :interval)::bigint,
                       (extract(epoch from :time_to::timestamptz) / :interval)::bigint) as k
 cross join clients c;

-- name: add-rollups(users, time_from, time_to, interval)!
-- Daily client rollups of the heartbeats add-heartbeats writes for the same range, computed
-- rather than aggregated: a bucket-aligned range holds a known number of them each day.
insert into client_daily_stats (date, client_id, total_heartbeats, health_heartbeats, avg_cpu_usage,
                                avg_memory_usage, avg_disk_usage, total_network_in_bytes,
                                total_network_out_bytes, last_heartbeat, last_heartbeat_bucket,
                                created_at, updated_at)
select day, a.client_id, beats, beats, 50, 55, 40 + mod(get_byte(a.client_id, 2), 30),
       beats * 2000000, beats * 500000, last, (extract(epoch from last) / :interval)::bigint, now(), now()
  from gpu_assets a
 cross join generate_series((:time_from::timestamptz at time zone 'UTC')::date,
                            (:time_to::timestamptz at time zone 'UTC')::date, interval '1 day') as d
 cross join lateral (select d::date as day,
                            greatest(:time_from::timestamptz, d::timestamp at time zone 'UTC') as first,
                            least(:time_to::timestamptz,
                                  (d + interval '1 day')::timestamp at time zone 'UTC'
                                  - make_interval(secs => :interval)) as last) as x
 cross join lateral (select (extract(epoch from last - first) / :interval)::integer + 1 as beats) as y
 where a.user_id like :users;

-- name: add-device-rollups(users, day_from, day_to)!
-- Per-GPU daily rollups beside every client rollup of the range.
insert into device_daily_stats (date, client_id, device_index, device_name, total_heartbeats,
                                avg_utilization, avg_temperature, avg_power_usage, avg_memory_usage,
                                last_heartbeat, last_heartbeat_bucket, created_at, updated_at)
select d.date, d.client_id, g, 'NVIDIA H100 80GB HBM3', d.total_heartbeats, 60 + g, 55 + g, 400 + g,
       50 + g, d.last_heartbeat, d.last_heartbeat_bucket, now(), now()
  from gpu_assets a
  join client_daily_stats d on d.client_id = a.client_id
 cross join generate_series(0, 7) as g
 where a.user_id like :users
   and d.date between :day_from and :day_to;

-- name: backdate-clients(users, created_at)!
-- Clients whose history reaches further back were registered before it.
update gpu_assets
   set created_at = :created_at::timestamptz at time zone 'UTC'
 where user_id like :users;

-- name: add-models(count)!
-- A model catalogue of `count` versions over ten model names.
insert into client_models (name, version, version_code, engine_type, is_active, min_memory_mb,
                           min_gpu_memory_gb, download_url, checksum, expected_size)
select 'model-' || mod(n, 10), 'v' || n, n, 1, mod(n, 7) <> 0, 16384, mod(n, 5) * 16,
       'https://models.example.com/model-' || n || '.gguf', repeat('ab', 32), 1000000000 + n
  from generate_series(1, :count) as n;

-- name: register-fleet(prefix, users, count, created_at)!
-- The live fleet's machines 1..count, machine n owned by user prefix || (n mod users); ids derived
-- as register-clients derives them, so a larger fleet keeps the machines of a smaller one.
insert into gpu_assets (user_id, client_id, client_name, client_status, valid_status, os_type,
                        created_at, updated_at)
select :prefix || mod(n, :users), decode(md5(:prefix || ':' || n), 'hex'), 'GPU Server ' || n,
       'online', 'valid', 'Linux',
       :created_at::timestamptz at time zone 'UTC', :created_at::timestamptz at time zone 'UTC'
  from generate_series(1, :count) as n
    on conflict (client_id) do nothing;

-- name: count-reports-since(users, since)$
-- Raw heartbeats of these users' clients with a report time at or after `since`.
select count(*)
  from gpu_assets a
  join heartbeat h on h.client_id = a.client_id
 where a.user_id like :users
   and h.timestamp >= :since;

-- name: count-heartbeats(users)$
-- Raw heartbeats stored for the clients of these users.
select count(*)
  from gpu_assets a
  join heartbeat h on h.client_id = a.client_id
 where a.user_id like :users;

-- name: index-definitions(tables)
-- How to drop and recreate every index of these tables: constraints (primary key, unique)
-- through their constraint, plain indexes by themselves.
select c.conrelid::regclass::text as table_name, c.conname as name,
       'alter table ' || c.conrelid::regclass::text || ' drop constraint ' || quote_ident(c.conname) as drop_sql,
       'alter table ' || c.conrelid::regclass::text || ' add constraint ' || quote_ident(c.conname) || ' '
           || pg_get_constraintdef(c.oid) as create_sql
  from pg_constraint c
 where c.conrelid = any(:tables::regclass[])
   and c.contype in ('p', 'u')
 union all
select i.indrelid::regclass::text, x.relname, 'drop index ' || i.indexrelid::regclass::text,
       pg_get_indexdef(i.indexrelid)
  from pg_index i
  join pg_class x on x.oid = i.indexrelid
 where i.indrelid = any(:tables::regclass[])
   and not exists (select 1 from pg_constraint c where c.conindid = i.indexrelid);

-- name: add-gpu-partitions(time_from, time_to)
-- The partitions of the GPU samples and rollups over [time_from, time_to], as the server's upkeep
-- makes them; a statement of its own: rows go to the partitions attached before their insert starts.
select gpufs_gpu_history_ensure('raw', :time_from::timestamptz, :time_to::timestamptz + interval '1 day')
union all
select gpufs_gpu_history_ensure('hourly', :time_from::timestamptz, :time_to::timestamptz + interval '1 day');

-- name: add-gpu-samples(client_id, time_from, time_to, interval)!
-- One sample per GPU (8) of one client every `interval` s from `time_from` to `time_to` (both
-- multiples of it), for device_history (figure 4).
insert into gpufs_gpu_samples (client_id, device_index, reported_at, name, uuid, temp, usage, mem_usage,
                               power_usage)
select :client_id, g, to_timestamp(k * :interval), 'NVIDIA H100 80GB HBM3', 'GPU-bench-' || g,
       40 + mod(k, 41), mod(k * 7 + g, 101), mod(k * 3 + g, 101), 100 + mod(k * 11, 500)
  from generate_series((extract(epoch from :time_from::timestamptz) / :interval)::bigint,
                       (extract(epoch from :time_to::timestamptz) / :interval)::bigint) as k
 cross join generate_series(0, 7) as g
 order by k, g
    on conflict do nothing;

-- name: add-gpu-rollups(client_id, time_from, time_to)!
-- The half-hour rollups of those samples, as ingestion keeps them (functions.sql).
insert into gpufs_gpu_hourly as h (client_id, device_index, hour, name, uuid, last_reported_at, samples, temp_sum,
                                   temp_max, usage_sum, usage_max, mem_usage_sum, power_sum, power_max)
select client_id, device_index, date_bin('30 minutes', reported_at, timestamptz '1970-01-01 00:00:00+00'),
       max(name), max(uuid), max(reported_at), count(*), sum(temp::float8), max(temp), sum(usage::float8),
       max(usage), sum(mem_usage::float8), sum(power_usage::float8), max(power_usage)
  from gpufs_gpu_samples
 where client_id = :client_id
   and reported_at >= :time_from
   and reported_at <= :time_to
 group by 1, 2, 3
    on conflict (client_id, device_index, hour) do update
   set samples = h.samples + excluded.samples, temp_sum = h.temp_sum + excluded.temp_sum,
       temp_max = greatest(h.temp_max, excluded.temp_max), usage_sum = h.usage_sum + excluded.usage_sum,
       usage_max = greatest(h.usage_max, excluded.usage_max), mem_usage_sum = h.mem_usage_sum + excluded.mem_usage_sum,
       power_sum = h.power_sum + excluded.power_sum, power_max = greatest(h.power_max, excluded.power_max),
       last_reported_at = greatest(h.last_reported_at, excluded.last_reported_at);

-- name: add-scraped-fleet(user_id, now)!
-- The latest report of every client of `user_id`, received at `now`, with eight GPUs each giving
-- every reading /metrics/fleet shows (UUID, clocks, fan, memory, XID): figure M's scrape.
with snapshots as (
    insert into system_info (client_id, cpu_usage, mem_usage, disk_usage, device_memsize, device_count,
                             total_tflops, reported_at, last_seen_at, created_at, updated_at)
    select client_id, 20 + mod(get_byte(client_id, 0), 70), 30 + mod(get_byte(client_id, 1), 50),
           20 + mod(get_byte(client_id, 2), 60), 8 * 81559, 8, 535, :now, :now, :now, :now
      from gpu_assets
     where user_id = :user_id
)
insert into device_info (client_id, device_index, device_name, device_memusage, device_gpuusage,
                         device_powerusage, device_temp, uuid, fan_speed, sm_clock_mhz, mem_clock_mhz,
                         mem_total_mb, mem_used_mb, xid, created_at, updated_at)
select a.client_id, g, 'NVIDIA H100 80GB HBM3', 20 + mod(get_byte(a.client_id, g), 70),
       mod(get_byte(a.client_id, g + 1), 100), 70 + mod(get_byte(a.client_id, g + 2), 600),
       40 + mod(get_byte(a.client_id, g + 3), 50), 'GPU-' || md5(a.client_id::text || g)::uuid,
       30 + mod(get_byte(a.client_id, g + 4), 60), 1200 + mod(get_byte(a.client_id, g), 780), 2619, 81559,
       1024 * mod(get_byte(a.client_id, g + 5), 79), 0, :now, :now
  from gpu_assets a
 cross join generate_series(0, 7) as g
 where a.user_id = :user_id;
