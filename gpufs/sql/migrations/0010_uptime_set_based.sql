-- client_stat called gpufs_uptime_yesterday per client, which looked yesterday's bucket width
-- up again each time. client_stat now takes the width once and applies this share per client;
-- the per-client function has no other caller.

-- A day's uptime as a fraction 0..1 of its expected buckets, or null when none were expected
-- (the client did not exist yet).
create or replace function gpufs_uptime_share(p_counted numeric, p_expected numeric)
returns numeric language sql immutable as $$
    select case when p_expected > 0 then least(1, coalesce(p_counted, 0) / p_expected) end
$$;

drop function if exists gpufs_uptime_yesterday(bytea, timestamptz, timestamptz, integer);
