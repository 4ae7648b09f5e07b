-- The GPU rollups (gpufs_gpu_hourly) are kept per half hour from here on: a row's `hour` is the
-- start of its half hour. Two halves still make each hour exactly, so ranges beyond the raw
-- retention are answered in whole hours as before; and device_history's steps that are whole
-- multiples of 1800 s (the 7-day chart's default) read their whole buckets from the rollups
-- instead of grouping every raw sample (docs/decisions.md, "Whole buckets from the rollups").
--
-- Rows written before this migration hold whole hours and cannot be split: they are used only
-- in whole hours. `since` is where the half hours begin: the hour after the newest row written
-- so far (a client clock ahead may have written one in the future), or the epoch when there was
-- none, as in a new database.
create table if not exists gpufs_gpu_half_hours (
    since timestamptz not null
);

insert into gpufs_gpu_half_hours (since)
select case when exists (select 1 from gpufs_gpu_hourly)
            then greatest(date_trunc('hour', now(), 'UTC'), (select max(hour) from gpufs_gpu_hourly))
                 + interval '1 hour'
            else timestamptz '1970-01-01 00:00:00+00' end
 where not exists (select 1 from gpufs_gpu_half_hours);
