"""Numbered SQL migrations (tables, columns, indexes), applied once each, then the SQL functions
(sql/functions.sql) on every run; under an advisory lock so workers may race safely."""
import logging
from datetime import datetime, timezone
from pathlib import Path

import psycopg2

log = logging.getLogger("gpufs.migrate")
MIGRATIONS = Path(__file__).with_name("sql") / "migrations"
FUNCTIONS = Path(__file__).with_name("sql") / "functions.sql"
LOCK_KEY = 7_354_210_981  # any constant: it names "gpufs migrations" among advisory locks


def pending(applied):
    return [p for p in sorted(MIGRATIONS.glob("*.sql")) if p.stem not in applied]


def migrate(dsn, connect_timeout=3):
    """Apply every migration not yet recorded, then the functions; return the migrations applied."""
    conn = psycopg2.connect(dsn, connect_timeout=connect_timeout, options="-c TimeZone=UTC")
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("select pg_advisory_lock(%(key)s)", {"key": LOCK_KEY})
        try:
            return _apply(conn)
        finally:
            with conn.cursor() as cur:
                cur.execute("select pg_advisory_unlock(%(key)s)", {"key": LOCK_KEY})
    finally:
        conn.close()


def _apply(conn):
    with conn.cursor() as cur:
        cur.execute("""create table if not exists gpufs_migrations (
                           name       text primary key,
                           applied_at timestamptz not null default now())""")
        cur.execute("select name from gpufs_migrations")
        applied = {row[0] for row in cur.fetchall()}
    done = []
    for path in pending(applied):
        conn.autocommit = False
        with conn, conn.cursor() as cur:
            cur.execute(path.read_text())
            cur.execute("insert into gpufs_migrations (name) values (%(name)s)", {"name": path.stem})
        conn.autocommit = True
        log.info("applied migration %s", path.stem)
        done.append(path.stem)
    with conn, conn.cursor() as cur:  # create or replace: the same text again changes nothing
        cur.execute(FUNCTIONS.read_text())
    # Reports of today and the next days land in partitions of their own from the start; the
    # background task makes the rest of the retention window.
    from .history import ensure
    ensure(conn, datetime.now(timezone.utc))
    return done
