-- Alerts (contract section 10): each user's thresholds and targets, one row per alert
-- episode, and the outbox of notifications written with every state change.

create table if not exists gpufs_alert_settings (
    user_id          varchar(255) primary key,
    offline_minutes  integer,  -- null: the default, so a default changed in code reaches every user
    temp_c           integer,
    for_minutes      integer,
    disk_percent     integer,
    webhook_url      text,
    alertmanager_url text,
    updated_at       timestamptz not null
);

create table if not exists gpufs_alerts (
    alert_id     bigint generated always as identity primary key,
    user_id      varchar(255)     not null,
    client_id    bytea            not null,
    condition    text             not null check (condition in ('offline', 'gpu_hot', 'error_status', 'disk_full')),
    device_index smallint         null,
    state        text             not null check (state in ('firing', 'resolved')),
    starts_at    timestamptz      not null,
    ends_at      timestamptz      null,
    value        double precision null,
    threshold    double precision null,
    message      text             not null,
    updated_at   timestamptz      not null
);

-- One firing alert per (client, condition, GPU): a second evaluator, or a retried one, can
-- only find the row already there (on conflict do nothing), never open another.
create unique index if not exists gpufs_alerts_one_firing
    on gpufs_alerts (client_id, condition, coalesce(device_index, -1)) where state = 'firing';
-- GET /api/user/alerts: a user's alerts, newest first.
create index if not exists gpufs_alerts_user_starts on gpufs_alerts (user_id, starts_at desc);

create table if not exists gpufs_alert_outbox (
    id              bigint generated always as identity primary key,
    alert_id        bigint      not null references gpufs_alerts (alert_id) on delete cascade,
    channel         text        not null check (channel in ('webhook', 'alertmanager')),
    status          text        not null check (status in ('firing', 'resolved')),
    url             text        not null,  -- the target when the alert changed, not a later one
    created_at      timestamptz not null,
    next_attempt_at timestamptz not null,
    attempts        integer     not null default 0,
    delivered_at    timestamptz null,
    given_up_at     timestamptz null,
    last_error      text        null
);

-- The sender's queue: only what is still to be sent.
create index if not exists gpufs_alert_outbox_due
    on gpufs_alert_outbox (next_attempt_at) where delivered_at is null and given_up_at is null;

