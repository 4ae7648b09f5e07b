-- gpufs_health_days called gpufs_interval for each of its days. A scalar SQL function whose
-- body is a sub-select is never inlined, so PostgreSQL planned that body again on every
-- execution of every read that shows health, prepared or not: a quarter of
-- client_device_detail's time. The same rule as a join (date is heartbeat_config_daily's
-- key, so each day stays one row): a set-returning SQL function of one SELECT is inlined
-- into the query that calls it. Ingestion writes the rule the same way.
create or replace function gpufs_health_days(p_now timestamptz, p_default integer)
returns table (day date, width integer) language sql stable as $$
    select d.day, case when c.heartbeat_interval_secs > 0 then c.heartbeat_interval_secs else p_default end
      from (select (p_now at time zone 'UTC')::date - n as day from generate_series(0, 6) as n) as d
      left join heartbeat_config_daily c on c.date = d.day
$$;
