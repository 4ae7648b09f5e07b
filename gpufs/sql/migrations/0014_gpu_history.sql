-- Per-GPU history (contract section 8): the richer readings of a GPU's latest snapshot, every
-- stored report's GPU samples, and their hourly rollups. The partitions are made and dropped by
-- gpufs_gpu_history_ensure/_drop (sql/functions.sql, run by gpufs/history.py).

-- The latest snapshot per GPU keeps the optional readings; null is "unknown", never 0.
alter table device_info add column if not exists uuid            varchar(64);
alter table device_info add column if not exists fan_speed       smallint;
alter table device_info add column if not exists sm_clock_mhz    integer;
alter table device_info add column if not exists mem_clock_mhz   integer;
alter table device_info add column if not exists mem_total_mb    integer;
alter table device_info add column if not exists mem_used_mb     integer;
alter table device_info add column if not exists power_limit     real;
alter table device_info add column if not exists ecc_uncorrected bigint;
alter table device_info add column if not exists xid             integer;
alter table device_info add column if not exists processes       jsonb;

-- One row per GPU of every stored report, at the report's timestamp. A partition per UTC day,
-- so retention drops whole days; the key serves one client's range, inside each partition.
create table if not exists gpufs_gpu_samples (
    client_id       bytea       not null,
    device_index    smallint    not null,
    reported_at     timestamptz not null,
    name            varchar(255),
    uuid            varchar(64),
    temp            real        not null,
    usage           real        not null,
    mem_usage       real        not null,
    power_usage     real        not null,
    fan_speed       smallint,
    sm_clock_mhz    integer,
    mem_clock_mhz   integer,
    mem_total_mb    integer,
    mem_used_mb     integer,
    power_limit     real,
    ecc_uncorrected bigint,
    xid             integer,
    processes       jsonb,
    primary key (client_id, device_index, reported_at)
) partition by range (reported_at);

-- Per GPU and UTC hour, over every stored sample: counts, sums for averages, maxima. Kept up to
-- date at ingest; a partition per UTC month.
create table if not exists gpufs_gpu_hourly (
    client_id        bytea       not null,
    device_index     smallint    not null,
    hour             timestamptz not null,
    name             varchar(255),
    uuid             varchar(64),
    last_reported_at timestamptz not null,  -- whose name and uuid the row holds
    samples          integer     not null,
    temp_sum         float8      not null,
    temp_max         real        not null,
    usage_sum        float8      not null,
    usage_max        real        not null,
    mem_usage_sum    float8      not null,
    power_sum        float8      not null,
    power_max        real        not null,
    primary key (client_id, device_index, hour)
) partition by range (hour);

-- A report whose day or month has no partition yet still stores, here; the upkeep moves such
-- rows into their own partition.
create table if not exists gpufs_gpu_samples_default partition of gpufs_gpu_samples default;
create table if not exists gpufs_gpu_hourly_default partition of gpufs_gpu_hourly default;
