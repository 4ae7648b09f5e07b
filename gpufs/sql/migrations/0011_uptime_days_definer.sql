-- The uptime_days triggers run for every writer of client_daily_stats, the upstream server's
-- database role included, which was never granted client_uptime_days: its writes would fail.
-- The trigger functions run with their owner's rights instead, on the schema this migration
-- runs in.
alter function gpufs_uptime_days_added() security definer set search_path from current;
alter function gpufs_uptime_days_removed() security definer set search_path from current;
alter function gpufs_uptime_days_emptied() security definer set search_path from current;
