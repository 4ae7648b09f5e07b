-- What heartbeat ingestion and retention need beyond 0002/0003.

-- Retention deletes claimed buckets by time across all clients; the primary key
-- (client_id, bucket_start) cannot serve that.
create index if not exists idx_heartbeat_bucket_start on heartbeat_bucket (bucket_start);

-- Running mean of a rollup: fold `p_add_n` new values with mean `p_add_mean` into a
-- stored mean over `p_n` values. Written once so every rollup column folds alike, and
-- additive, so concurrent writers that each fold their own reports compose.
create or replace function gpufs_running_mean(p_mean float8, p_n bigint, p_add_mean float8, p_add_n bigint)
returns float8 language sql immutable as $$
    select case when coalesce(p_add_n, 0) = 0 or p_add_mean is null then p_mean
                when coalesce(p_n, 0) = 0 or p_mean is null then p_add_mean
                else (p_mean * p_n + p_add_mean * p_add_n) / (p_n + p_add_n)
           end
$$;

-- A byte total plus more bytes, saturating at the bigint maximum: a client reporting
-- absurd counters must not make its whole batch fail with an overflow.
create or replace function gpufs_add_bytes(p_total bigint, p_add numeric)
returns bigint language sql immutable as $$
    select least(coalesce(p_total, 0)::numeric + coalesce(p_add, 0), 9223372036854775807)::bigint
$$;
