"""The benchmark's dataset, built set-based in gpufs_bench (bench/dataset.sql), and its user groups."""
import hashlib
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import aiosql
import psycopg2

from gpufs.migrate import migrate

queries = aiosql.from_path(Path(__file__).with_name("dataset.sql"), "psycopg2")
INTERVAL = 120  # HEARTBEAT_INTERVAL_SECONDS: the server runs with its default
DAY = 86400
FLEET_SIZES = (10, 100, 1000)
MODELS = 30
# Bulk loads go in with these tables' indexes dropped and rebuilt after: maintaining three
# btrees row by row made a 10x history take minutes on two cores, sorting them takes seconds.
BULK_TABLES = ("heartbeat", "heartbeat_bucket")


@dataclass
class Layout:
    """Who owns what: user ids of this run (all start with its token) and the sizes built."""

    run: str
    scale: float = 1.0
    days: int = 7
    ingest_threads: int = 4
    ingest_clients: int = 500
    now: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    @property
    def main(self):
        return f"{self.run}-main"

    @property
    def main_clients(self):
        return max(1, round(100 * self.scale))

    @property
    def background(self):
        return max(0, round(5000 * self.scale) - sum(FLEET_SIZES))

    def fleet_user(self, size):
        return f"{self.run}-bg-f{size}"

    def ingest_user(self, thread):
        return f"{self.run}-in-{thread}"

    @property
    def scraped(self):
        """The user of figure M's fleet: 1,000 machines of 8 GPUs, reporting when the figure runs."""
        return f"{self.run}-fm"

    @property
    def end(self):
        """The newest bucket start with a heartbeat: a bucket that has begun, a minute ago at least."""
        return datetime.fromtimestamp(math.floor((self.now.timestamp() - 60) / INTERVAL) * INTERVAL, timezone.utc)

    @property
    def start(self):
        return self.end - timedelta(days=self.days) + timedelta(seconds=INTERVAL)


def connect(dsn):
    conn = psycopg2.connect(dsn, options="-c TimeZone=UTC")
    conn.autocommit = True
    return conn


def build(dsn, layout, say=print):
    """Empty gpufs_bench and fill it; returns {table: rows} and the seconds taken."""
    migrate(dsn)
    began = time.monotonic()
    conn = connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("set synchronous_commit = off")  # the build only; servers keep the default
        _build(conn, layout, say)
        vacuum(conn)
        counts = table_counts(conn)
    finally:
        conn.close()
    return counts, time.monotonic() - began


def _build(conn, layout, say):
    q, lo = queries, layout
    created = lo.start - timedelta(seconds=60)
    q.truncate_all(conn)
    q.register_clients(conn, user_id=lo.main, count=lo.main_clients, created_at=created)
    for size in FLEET_SIZES:
        q.register_clients(conn, user_id=lo.fleet_user(size), count=size, created_at=created)
    q.register_background(conn, prefix=f"{lo.run}-bg-", count=lo.background, per_user=10, created_at=created)
    for thread in range(lo.ingest_threads):
        q.register_clients(conn, user_id=lo.ingest_user(thread), count=lo.ingest_clients, created_at=created)
    q.add_snapshots(conn, now=lo.now)
    q.add_devices(conn, now=lo.now)
    q.add_models(conn, count=MODELS)
    say(f"  {lo.main_clients} clients x {lo.days} days of heartbeats every {INTERVAL} s for {lo.main}")
    add_history(conn, lo, lo.main, lo.start, lo.end)
    add_gpu_samples(conn, lo, lo.start, lo.end)
    background = f"{lo.run}-bg-%"
    say("  background: a week of rollups and the last hour of heartbeats of the other users' clients")
    hour_ago = lo.end - timedelta(hours=1) + timedelta(seconds=INTERVAL)
    with without_indexes(conn, BULK_TABLES):
        q.add_heartbeats(conn, users=background, time_from=hour_ago, time_to=lo.end, interval=INTERVAL)
        q.add_buckets(conn, users=background, time_from=hour_ago, time_to=lo.end, interval=INTERVAL)
    q.add_rollups(conn, users=background, time_from=lo.start, time_to=lo.end, interval=INTERVAL)
    q.add_device_rollups(conn, users=background, day_from=lo.start.date(), day_to=lo.end.date())


def add_history(conn, layout, user, time_from, time_to):
    """Raw heartbeats, bucket claims and daily rollups of `user`'s clients over [time_from, time_to]."""
    q = queries
    with without_indexes(conn, BULK_TABLES):
        q.add_heartbeats(conn, users=user, time_from=time_from, time_to=time_to, interval=INTERVAL)
        q.add_buckets(conn, users=user, time_from=time_from, time_to=time_to, interval=INTERVAL)
    q.add_rollups(conn, users=user, time_from=time_from, time_to=time_to, interval=INTERVAL)
    q.add_device_rollups(conn, users=user, day_from=time_from.date(), day_to=time_to.date())


def add_scraped_fleet(dsn, layout, clients):
    """Figure M's fleet: `clients` machines of the scraped user with a week of rollups (their health)
    and a latest report of 8 GPUs received now, so every one is live when the figure scrapes."""
    conn = connect(dsn)
    try:
        user = layout.scraped
        queries.register_clients(conn, user_id=user, count=clients, created_at=layout.start - timedelta(seconds=60))
        queries.add_rollups(conn, users=user, time_from=layout.start, time_to=layout.end, interval=INTERVAL)
        queries.add_scraped_fleet(conn, user_id=user, now=datetime.now(timezone.utc))
        with conn.cursor() as cur:
            cur.execute("analyze gpu_assets, system_info, device_info, client_daily_stats")
    finally:
        conn.close()


def first_client(user):
    """dataset.sql's id of the user's client 1."""
    return hashlib.md5(f"{user}:1".encode()).digest()


def add_gpu_samples(conn, layout, time_from, time_to):
    """The per-GPU samples of the main user's client 1 over [time_from, time_to], and their rollups:
    device_history's."""
    list(queries.add_gpu_partitions(conn, time_from=time_from, time_to=time_to))
    queries.add_gpu_samples(conn, client_id=first_client(layout.main), time_from=time_from, time_to=time_to,
                            interval=INTERVAL)
    queries.add_gpu_rollups(conn, client_id=first_client(layout.main), time_from=time_from, time_to=time_to)


def extend_history(dsn, layout, factor):
    """Give the main user `factor` x the raw heartbeats: more days before the existing ones."""
    conn = connect(dsn)
    began = time.monotonic()
    try:
        with conn.cursor() as cur:
            cur.execute("set synchronous_commit = off")
        # Whole older days, ending before the base week's first (partial) day has a rollup of its own.
        first_day = datetime.combine(layout.start.date(), datetime.min.time(), timezone.utc)
        older_to = first_day - timedelta(seconds=INTERVAL)
        older_from = first_day - timedelta(days=layout.days * (factor - 1))
        queries.backdate_clients(conn, users=layout.main, created_at=older_from - timedelta(seconds=60))
        add_history(conn, layout, layout.main, older_from, older_to)
        add_gpu_samples(conn, layout, older_from, older_to)
        vacuum(conn)
        return queries.count_heartbeats(conn, users=layout.main), time.monotonic() - began
    finally:
        conn.close()


@contextmanager
def without_indexes(conn, tables):
    """Drop the tables' indexes and unique constraints, whatever the migrations made, and rebuild
    them from their saved definitions afterwards."""
    saved = [(row[2], row[3]) for row in queries.index_definitions(conn, tables=list(tables))]
    with conn.cursor() as cur:
        for drop, _create in saved:
            cur.execute(drop)
    try:
        yield
    finally:
        with conn.cursor() as cur:
            cur.execute("set maintenance_work_mem = '256MB'")
            for _drop, create in saved:
                cur.execute(create)


def settle(dsn):
    """vacuum() on a connection of its own."""
    conn = connect(dsn)
    try:
        vacuum(conn)
    finally:
        conn.close()


def vacuum(conn):
    """Fresh statistics and visibility maps, so no autovacuum or stale plan lands inside a measurement."""
    with conn.cursor() as cur:
        # The build commits asynchronously. Until those commits reach the WAL, VACUUM can set neither
        # hint bits nor the visibility map on the pages they wrote, and index-only scans then fetch
        # every new row from the heap (6,300 fetches per client_list after extend_history). One
        # synchronous commit flushes them all.
        cur.execute("set synchronous_commit = on")
        cur.execute("select txid_current()")
        cur.execute("vacuum analyze")
        try:
            cur.execute("checkpoint")
        except psycopg2.Error:
            pass  # needs superuser or pg_checkpoint; only spreads the write-back differently


def table_counts(conn):
    tables = ("gpu_assets", "system_info", "device_info", "heartbeat", "heartbeat_bucket",
              "client_daily_stats", "device_daily_stats", "client_models")
    with conn.cursor() as cur:
        # Fixed table names, no input.
        cur.execute(" union all ".join(f"select '{t}', count(*) from {t}" for t in tables))
        return dict(cur.fetchall())
