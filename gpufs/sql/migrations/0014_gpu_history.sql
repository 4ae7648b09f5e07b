-- Per-GPU history (contract section 8): the richer readings of a GPU's latest snapshot, every
-- stored report's GPU samples, and their hourly rollups. Tables and columns only; the
-- partition upkeep is gpufs_gpu_history_upkeep (see gpufs/history.py).

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

-- Partition upkeep. Names and bounds are computed here from the kind and a time, so no caller
-- text ever reaches the DDL; identifiers go through format's %I, bounds through %L.
-- TimeZone UTC: days and months are UTC ones, whatever the session's zone.

-- Every missing partition of `p_kind` ('raw': a day of gpufs_gpu_samples; 'hourly': a month of
-- gpufs_gpu_hourly) from the period of `p_from` to that of `p_to`, and one for each period the
-- default partition holds rows of, those rows moved into it. Returns the partitions made.
create or replace function gpufs_gpu_history_ensure(p_kind text, p_from timestamptz, p_to timestamptz)
returns setof text language plpgsql set timezone to 'UTC' as $$
declare
    parent  text;
    col     text;
    unit    text;
    stride  interval;
    fmt     text;
    missing timestamptz[];
    lo      timestamptz;
    part    text;
begin
    case p_kind
        when 'raw' then
            parent := 'gpufs_gpu_samples'; col := 'reported_at'; unit := 'day'; stride := '1 day'; fmt := 'YYYYMMDD';
        when 'hourly' then
            parent := 'gpufs_gpu_hourly'; col := 'hour'; unit := 'month'; stride := '1 month'; fmt := 'YYYYMM';
        else
            raise exception 'unknown gpu history kind: %', p_kind;
    end case;
    -- One upkeep at a time (the task's leader, migrate on another host, prune), till commit:
    -- two making one partition at once would have one fail.
    perform pg_advisory_xact_lock(7453586465997026164);
    execute format('select array_agg(distinct date_trunc(%L, %I)) from %I', unit, col, parent || '_default')
       into missing;
    if missing is not null then
        -- Rows arriving in the default while they move out would make the attach fail.
        execute format('lock table %I in access exclusive mode', parent || '_default');
    end if;
    for lo in select p from unnest(missing) as p
              union
              select generate_series(date_trunc(unit, p_from), date_trunc(unit, p_to), stride)
              order by 1 loop
        part := parent || '_p' || to_char(lo, fmt);
        continue when to_regclass(quote_ident(part)) is not null;
        -- Made apart and attached, which locks the parent only against other schema changes:
        -- reports and reads go on meanwhile.
        execute format('create table %I (like %I including defaults including constraints)', part, parent);
        if lo = any(missing) then
            execute format('with moved as (delete from %I where %I >= $1 and %I < $2 returning *) '
                           'insert into %I select * from moved', parent || '_default', col, col, part)
              using lo, lo + stride;
        end if;
        execute format('alter table %I attach partition %I for values from (%L) to (%L)',
                       parent, part, lo, lo + stride);
        return next part;
    end loop;
end
$$;

-- Drop every partition of `p_kind` whose whole period lies before `p_before`: retention by
-- whole partitions, never row by row. Returns the partitions dropped.
create or replace function gpufs_gpu_history_drop(p_kind text, p_before timestamptz)
returns setof text language plpgsql set timezone to 'UTC' as $$
declare
    parent text;
    stride interval;
    fmt    text;
    part   text;
begin
    case p_kind
        when 'raw' then parent := 'gpufs_gpu_samples'; stride := '1 day'; fmt := 'YYYYMMDD';
        when 'hourly' then parent := 'gpufs_gpu_hourly'; stride := '1 month'; fmt := 'YYYYMMDD';
        else raise exception 'unknown gpu history kind: %', p_kind;
    end case;
    perform pg_advisory_xact_lock(7453586465997026164);  -- as in gpufs_gpu_history_ensure
    for part in select c.relname
                  from pg_inherits i
                  join pg_class c on c.oid = i.inhrelid
                 where i.inhparent = parent::regclass
                   and c.relname ~ ('^' || parent || '_p[0-9]+$')
                 order by c.relname loop
        -- The name holds the period's start (YYYYMMDD or YYYYMM, padded to a first day here).
        continue when to_timestamp(rpad(substr(part, length(parent) + 3), 8, '01'), fmt) + stride > p_before;
        execute format('drop table %I', part);
        return next part;
    end loop;
end
$$;
