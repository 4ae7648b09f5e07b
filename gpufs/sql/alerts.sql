-- Alerts (contract section 10): evaluation, the outbox's queue, and what the alert endpoints run.

-- name: alerts-evaluate(condition, now, since, offline_minutes, temp_c, for_minutes, disk_percent)^
-- One condition over every user's valid clients, at evaluation time `now`: open an alert where
-- it holds and none is firing, refresh the figures of the firing ones, resolve those whose
-- condition no longer holds, and queue a notification for each opened or resolved alert to
-- the targets its user has set, all in this one statement. `holding` has one branch per
-- condition; the others are skipped by their constant guard. `opens`: a gpu_hot GPU whose
-- latest sample is hot keeps a firing alert open, but only a window of hot samples opens one.
-- Likewise offline: silence keeps one open, but only silence since `since` (when this evaluator
-- began, null for none) opens one, so clients silent only because the server was down get
-- offline_minutes to report again before they are called offline.
-- The other parameters are the defaults of users without settings of their own.
with clients as (
    select a.user_id, a.client_id, coalesce(a.client_name, encode(a.client_id, 'hex')) as client_name, a.client_status,
           a.created_at at time zone 'UTC' as created_at,
           coalesce(st.offline_minutes, :offline_minutes) as offline_minutes,
           coalesce(st.temp_c, :temp_c) as temp_c,
           coalesce(st.for_minutes, :for_minutes) as for_minutes,
           coalesce(st.disk_percent, :disk_percent) as disk_percent
      from gpu_assets a
      left join gpufs_alert_settings st on st.user_id = a.user_id
     where coalesce(a.valid_status, 'valid') = 'valid'
), holding as (
    select c.user_id, c.client_id, null::smallint as device_index,
           :now - greatest(seen.at, coalesce(:since, seen.at)) >= make_interval(mins => c.offline_minutes) as opens,
           (extract(epoch from :now - seen.at) / 60)::float8 as value, c.offline_minutes::float8 as threshold,
           c.client_name || ': no heartbeat for ' || floor(extract(epoch from :now - seen.at) / 60) || ' minutes'
               as message
      from clients c
      left join system_info si on si.client_id = c.client_id
     cross join lateral (select coalesce(si.last_seen_at, c.created_at) as at) seen
     where :condition = 'offline'
       and c.client_status in ('active', 'online')
       and :now - seen.at >= make_interval(mins => c.offline_minutes)
    union all
    select c.user_id, c.client_id, null, true, null, null,
           c.client_name || ': registered status is error'
      from clients c
     where :condition = 'error_status'
       and c.client_status = 'error'
    union all
    select c.user_id, c.client_id, null, true, si.disk_usage, c.disk_percent,
           c.client_name || ': disk ' || si.disk_usage || '%% full'  -- %% is one percent sign to psycopg2
      from clients c
      join system_info si on si.client_id = c.client_id
     where :condition = 'disk_full'
       and si.disk_usage >= c.disk_percent
    union all
    select c.user_id, c.client_id, d.device_index, w.samples >= 2 and w.coolest >= c.temp_c, t.temp, c.temp_c,
           c.client_name || ': GPU ' || d.device_index || ' at ' || t.temp || ' °C'
      from clients c
      join device_info d on d.client_id = c.client_id  -- the GPUs of the latest report of the client
      join system_info si on si.client_id = c.client_id
       -- Only a GPU that can hold is looked at: the snapshot is the newest report, so a GPU whose
       -- latest sample up to `now` is hot shows a hot snapshot (rounded: hence the - 1), unless the
       -- snapshot is of a report stamped after `now`. Cool GPUs, nearly all, cost no window scan.
       and (d.device_temp >= c.temp_c - 1 or si.reported_at > :now)
     cross join lateral (select count(*) as samples, min(s.temp) as coolest,
                                (array_agg(s.temp order by s.reported_at desc))[1] as latest
                           from gpufs_gpu_samples s
                          where s.client_id = c.client_id
                            and s.device_index = d.device_index
                            and s.reported_at > :now - make_interval(mins => c.for_minutes)
                            and s.reported_at <= :now) w
      -- The latest sample up to `now` is the last in the window when it has one. Else only a GPU whose
      -- alert is firing needs it (to keep or resolve it): one index probe, for those alone.
      left join lateral (select s.temp
                           from gpufs_gpu_samples s
                          where w.samples = 0
                            and exists (select 1
                                          from gpufs_alerts f
                                         where f.state = 'firing'
                                           and f.condition = 'gpu_hot'
                                           and f.client_id = c.client_id
                                           and f.device_index = d.device_index)
                            and s.client_id = c.client_id
                            and s.device_index = d.device_index
                            and s.reported_at <= :now
                          order by s.reported_at desc
                          limit 1) earlier on true
     cross join lateral (select coalesce(w.latest, earlier.temp) as temp) t
     where :condition = 'gpu_hot'
       and t.temp >= c.temp_c
), opened as (
    -- A firing alert of the same key makes this a no-op (the unique partial index), also for a
    -- second evaluator running at the same moment.
    insert into gpufs_alerts (user_id, client_id, condition, device_index, state, starts_at, value, threshold,
                              message, updated_at)
    select h.user_id, h.client_id, :condition, h.device_index, 'firing', :now, h.value, h.threshold, h.message, :now
      from holding h
     where h.opens
        on conflict (client_id, condition, coalesce(device_index, -1)) where state = 'firing' do nothing
    returning alert_id, user_id, 'firing' as status
), refreshed as (
    update gpufs_alerts f
       set value = h.value, threshold = h.threshold, message = h.message, updated_at = :now
      from holding h
     where f.state = 'firing'
       and f.condition = :condition
       and f.user_id = h.user_id
       and f.client_id = h.client_id
       and f.device_index is not distinct from h.device_index
    returning f.alert_id
), resolved as (
    -- Includes the alerts of clients turned invalid or deleted: they hold nowhere.
    update gpufs_alerts f
       set state = 'resolved', ends_at = :now, updated_at = :now
     where f.state = 'firing'
       and f.condition = :condition
       and not exists (select 1
                         from holding h
                        where h.user_id = f.user_id
                          and h.client_id = f.client_id
                          and h.device_index is not distinct from f.device_index)
    returning f.alert_id, f.user_id, 'resolved' as status
), queued as (
    insert into gpufs_alert_outbox (alert_id, channel, status, url, created_at, next_attempt_at)
    select c.alert_id, t.channel, c.status, t.url, :now, :now
      from (select alert_id, user_id, status from opened
            union all
            select alert_id, user_id, status from resolved) c
      join gpufs_alert_settings st on st.user_id = c.user_id
     cross join lateral (values ('webhook', st.webhook_url), ('alertmanager', st.alertmanager_url)) t (channel, url)
     where t.url is not null
     order by c.alert_id, t.channel
    returning 1
)
select (select count(*) from opened) as opened,
       (select count(*) from refreshed) as refreshed,
       (select count(*) from resolved) as resolved,
       (select count(*) from queued) as queued;

-- name: alerts-firing-counts()
-- Firing alerts per condition, for the gpufs_alerts_firing gauge.
select condition, count(*) as firing
  from gpufs_alerts
 where state = 'firing'
 group by condition;

-- name: alerts-outbox-claim(now, lease_until, batch)
-- Take up to `batch` due notifications: each is leased until `lease_until` (a sender that dies
-- mid-send leaves it to be sent again), and an alert's notifications on one channel go out in
-- order (its resolved one waits for its firing one). Each row carries the alert as it stands.
with claimed as (
    update gpufs_alert_outbox o
       set next_attempt_at = :lease_until,
           attempts        = o.attempts + 1
     where o.id in (select q.id
                      from gpufs_alert_outbox q
                     where q.delivered_at is null
                       and q.given_up_at is null
                       and q.next_attempt_at <= :now
                       and not exists (select 1
                                         from gpufs_alert_outbox e
                                        where e.alert_id = q.alert_id
                                          and e.channel = q.channel
                                          and e.id < q.id
                                          and e.delivered_at is null
                                          and e.given_up_at is null)
                     order by q.id
                     limit :batch
                       for update skip locked)
    returning o.id, o.alert_id, o.channel, o.status, o.url, o.created_at, o.attempts
)
select c.id, c.channel, c.status, c.url, c.created_at, c.attempts,
       f.alert_id, f.user_id, f.client_id, g.client_name, f.condition, f.device_index, f.state,
       f.starts_at, f.ends_at, f.value, f.threshold, f.message
  from claimed c
  join gpufs_alerts f on f.alert_id = c.alert_id
  left join gpu_assets g on g.client_id = f.client_id and g.user_id = f.user_id
 order by c.id;

-- name: alerts-outbox-done(id, now)!
-- A 2xx answer: delivered, never sent again.
update gpufs_alert_outbox
   set delivered_at = :now, last_error = null
 where id = :id;

-- name: alerts-outbox-retry(id, next_attempt_at, error)!
-- No answer or a 5xx: try again later.
update gpufs_alert_outbox
   set next_attempt_at = :next_attempt_at, last_error = :error
 where id = :id;

-- name: alerts-outbox-give-up(id, now, error)!
-- Refused by the receiver, an unsafe target, or out of time: not sent again.
update gpufs_alert_outbox
   set given_up_at = :now, last_error = :error
 where id = :id;

-- name: alerts-outbox-prune(before)!
-- Notifications settled (delivered or given up) before `before`: their alerts keep the story.
delete from gpufs_alert_outbox
 where coalesce(delivered_at, given_up_at) < :before;

-- name: alerts-firing-for-alertmanager()
-- Every firing alert of a user with an Alertmanager: re-sent after each evaluation, as
-- Alertmanager expects of its clients (else it resolves them itself).
select st.alertmanager_url as url,
       f.alert_id, f.user_id, f.client_id, g.client_name, f.condition, f.device_index, f.state,
       f.starts_at, f.ends_at, f.value, f.threshold, f.message
  from gpufs_alerts f
  join gpufs_alert_settings st on st.user_id = f.user_id
  left join gpu_assets g on g.client_id = f.client_id and g.user_id = f.user_id
 where f.state = 'firing'
   and st.alertmanager_url is not null
 order by st.alertmanager_url, f.alert_id;

-- name: alerts(user_id, state, client_id, time_from, time_to)
-- The user's alerts, newest first: `state` firing, resolved or null for all; with a time
-- range, those firing at some moment in it.
select f.alert_id, f.client_id, g.client_name, f.condition, f.device_index, f.state,
       f.starts_at, f.ends_at, f.value, f.threshold, f.message
  from gpufs_alerts f
  left join gpu_assets g on g.client_id = f.client_id and g.user_id = f.user_id
 where f.user_id = :user_id
   and (:state::text is null or f.state = :state)
   and (:client_id::bytea is null or f.client_id = :client_id)
   and (:time_to::timestamptz is null or f.starts_at < :time_to)
   and (:time_from::timestamptz is null or f.ends_at is null or f.ends_at >= :time_from)
 order by f.starts_at desc, f.alert_id desc;

-- name: alert-settings(user_id, offline_minutes, temp_c, for_minutes, disk_percent)^
-- A user's settings, the defaults where none were set.
select u.user_id,
       coalesce(st.offline_minutes, :offline_minutes) as offline_minutes,
       coalesce(st.temp_c, :temp_c) as temp_c,
       coalesce(st.for_minutes, :for_minutes) as for_minutes,
       coalesce(st.disk_percent, :disk_percent) as disk_percent,
       st.webhook_url, st.alertmanager_url
  from (select :user_id::varchar as user_id) u
  left join gpufs_alert_settings st on st.user_id = u.user_id;

-- name: save-alert-settings(user_id, offline_minutes, temp_c, for_minutes, disk_percent, webhook_url, set_webhook, alertmanager_url, set_alertmanager, now)!
-- Partial update: a null threshold keeps the stored one; a URL changes only when `set_*` says
-- it was given (null then clears it).
insert into gpufs_alert_settings as st (user_id, offline_minutes, temp_c, for_minutes, disk_percent, webhook_url,
                                        alertmanager_url, updated_at)
values (:user_id, :offline_minutes, :temp_c, :for_minutes, :disk_percent, :webhook_url, :alertmanager_url, :now)
    on conflict (user_id) do update
   set offline_minutes  = coalesce(excluded.offline_minutes, st.offline_minutes),
       temp_c           = coalesce(excluded.temp_c, st.temp_c),
       for_minutes      = coalesce(excluded.for_minutes, st.for_minutes),
       disk_percent     = coalesce(excluded.disk_percent, st.disk_percent),
       webhook_url      = case when :set_webhook then excluded.webhook_url else st.webhook_url end,
       alertmanager_url = case when :set_alertmanager then excluded.alertmanager_url else st.alertmanager_url end,
       updated_at       = excluded.updated_at;
