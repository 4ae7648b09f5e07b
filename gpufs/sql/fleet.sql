-- Fleet simulator support: what `gpufs simulate` runs besides insert-client and ingestion.

-- name: backdate-clients(client_ids, created_at)!
-- Simulated clients exist from the start of their simulated history, so health and uptime
-- expect buckets from then (created_at is naive UTC, as upstream keeps it).
update gpu_assets
   set created_at = :created_at::timestamptz at time zone 'UTC'
 where client_id = any(:client_ids::bytea[]);

-- name: receive-at-report-time(client_ids)!
-- A simulation feeds history in minutes; had it been live, each report would have been
-- received when it was written, so the last receive time is the newest report's time.
update system_info
   set last_seen_at = reported_at
 where client_id = any(:client_ids::bytea[]);
