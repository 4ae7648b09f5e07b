-- Heartbeat ingestion: what POST /api/client/heartbeat(s) and the fleet simulator run.
-- A batch is one transaction of two statements: report-clients, then ingest-reports. Every
-- statement takes the whole batch, so its cost does not grow with one statement per report.

-- name: report-clients(client_ids)
-- The registered clients among `client_ids`, with owner and validity, to accept or reject reports.
-- First it serializes writers of the same clients until commit, taking the locks in one global
-- order so two batches naming the same clients cannot deadlock: the next statement, ingest-reports,
-- then starts from what the previous writer committed. The lock is a one-time filter, taken before
-- any row is read; in this statement rather than one of its own, a round trip fewer per report.
with locks as (
    select pg_advisory_xact_lock(7354, k.key)
      from (select distinct ('x' || left(encode(c, 'hex'), 8))::bit(32)::integer as key
              from unnest(:client_ids::bytea[]) as c
             order by 1) as k
)
select client_id, user_id, coalesce(valid_status, 'valid') as valid_status
  from gpu_assets
 where (select count(*) from locks) >= 0
   and client_id = any(:client_ids::bytea[]);

-- name: ingest-reports(reports, interval, retention_days, raw_days, hourly_days)
-- Write accepted reports (an array of JSON documents, see gpufs/ingest.py) in one statement and
-- return one row per report: ord, stored, counted. The statement is gpufs_ingest_reports
-- (functions.sql), whose plan PostgreSQL keeps per connection.
select ord, stored, counted
  from gpufs_ingest_reports(:reports::jsonb[], :interval, :retention_days, :raw_days, :hourly_days);

-- name: prune-heartbeats(cutoff, batch)!
-- Delete at most `batch` raw heartbeats older than `cutoff`; the caller repeats until none is left.
delete from heartbeat
 where (client_id, timestamp) in (select client_id, timestamp
                                    from heartbeat
                                   where timestamp < :cutoff
                                   limit :batch);

-- name: prune-buckets(cutoff, batch)!
-- Delete at most `batch` bucket claims older than `cutoff` (their heartbeats are gone too).
delete from heartbeat_bucket
 where (client_id, bucket_start) in (select client_id, bucket_start
                                       from heartbeat_bucket
                                      where bucket_start < :cutoff
                                      limit :batch);
