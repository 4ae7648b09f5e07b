-- This server's additions to the upstream schema: only new columns, tables and indexes.

-- The snapshot remembers which report it holds (so a late, older report never
-- overwrites it) and when the server last received anything from the client
-- (liveness is judged by the server's clock, never the client's).
alter table system_info add column if not exists reported_at  timestamptz;
alter table system_info add column if not exists last_seen_at timestamptz;

-- Counted heartbeats are decided by bucket ownership: the first stored report of a
-- client in a bucket claims it, in whatever order reports arrive, and concurrent
-- writers cannot both claim it.
create table if not exists heartbeat_bucket (
    client_id    bytea       not null,
    bucket_start timestamptz not null,
    primary key (client_id, bucket_start)
);

-- Counted heartbeats not earlier than the client's registration: health and uptime
-- expect buckets only from created_at, so earlier reports must not fill them.
alter table client_daily_stats add column if not exists health_heartbeats integer not null default 0;
update client_daily_stats set health_heartbeats = total_heartbeats where health_heartbeats = 0;

create index if not exists idx_gpu_assets_user_created on gpu_assets (user_id, created_at, client_id);
-- Retention deletes by report time across all clients.
create index if not exists idx_heartbeat_timestamp on heartbeat (timestamp);
create index if not exists idx_client_models_gpu on client_models (min_gpu_memory_gb);
