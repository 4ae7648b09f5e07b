-- uptime_days counted a client's rollup rows on every read, a cost that grew with the days
-- on record (70 rows a client after ten weeks, 365 after a year, for every client listed).
-- The count is kept per client instead, by statement triggers on client_daily_stats, so any
-- writer of that table (this server, the upstream one, a backfill by hand) keeps it right.
-- Writes wait while this runs: no row may land between the backfill and the triggers.
lock table client_daily_stats in share row exclusive mode;

create table if not exists client_uptime_days (
    client_id bytea primary key,
    days      integer not null
);

-- An upsert's new day rows reach `added`; the rows it updates do not. Clients in id order, as
-- ingestion locks them, so two writers never wait on each other's rows crosswise.
create or replace function gpufs_uptime_days_added() returns trigger language plpgsql as $$
begin
    insert into client_uptime_days as u (client_id, days)
    select client_id, count(*) from added group by client_id order by client_id
    on conflict (client_id) do update set days = u.days + excluded.days;
    return null;
end $$;

create or replace function gpufs_uptime_days_removed() returns trigger language plpgsql as $$
begin
    update client_uptime_days u set days = u.days - gone.n
      from (select client_id, count(*) as n from removed group by client_id) gone
     where u.client_id = gone.client_id;
    delete from client_uptime_days u
     where u.days <= 0 and u.client_id in (select client_id from removed);
    return null;
end $$;

create or replace function gpufs_uptime_days_emptied() returns trigger language plpgsql as $$
begin
    delete from client_uptime_days;
    return null;
end $$;

create trigger gpufs_uptime_days_added after insert on client_daily_stats
    referencing new table as added for each statement execute function gpufs_uptime_days_added();
create trigger gpufs_uptime_days_removed after delete on client_daily_stats
    referencing old table as removed for each statement execute function gpufs_uptime_days_removed();
create trigger gpufs_uptime_days_emptied after truncate on client_daily_stats
    for each statement execute function gpufs_uptime_days_emptied();

insert into client_uptime_days (client_id, days)
select client_id, count(*) from client_daily_stats group by client_id
on conflict (client_id) do update set days = excluded.days;
