-- heartbeat_config_daily is edited by hand and has no check: a day configured with a
-- zero or negative bucket width made every list, detail and stat query fail with a
-- division by zero. Such a day now takes the default width, as ingestion already does.
create or replace function gpufs_interval(p_day date, p_default integer)
returns integer language sql stable as $$
    select coalesce((select heartbeat_interval_secs
                       from heartbeat_config_daily
                      where date = p_day
                        and heartbeat_interval_secs > 0), p_default)
$$;
