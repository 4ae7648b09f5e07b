"""PostgreSQL access: a per-process connection pool, one connection per request, and the SQL files."""
import logging
import os
import threading
from contextlib import contextmanager
from pathlib import Path

import aiosql
import psycopg2
import psycopg2.extensions
import psycopg2.extras
from flask import g
from psycopg2 import pool as pgpool

from .errors import Unavailable
from .ext import state

log = logging.getLogger("gpufs.db")
SQL_DIR = Path(__file__).with_name("sql")
# Every statement the server runs, called as queries.<name>(conn, **params).
queries = aiosql.from_path(SQL_DIR, "psycopg2")

# Errors that mean "the database is not there", as opposed to a bug in a query.
DOWN_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)


class Pool:
    """A lazily created, fork-aware ThreadedConnectionPool: gunicorn workers each build their own.
    Its connections are in autocommit (a read is one round trip); a write runs in `with conn:`,
    which makes it one transaction."""

    def __init__(self, config):
        self.config = config
        self._pool = None
        self._pid = None
        self._lock = threading.Lock()
        self.in_use = 0
        self.checkouts = 0  # connections handed out, ever: shows whether a request touched the database
        self.on_change = None  # called with the pool when in_use changes (the standalone app's gauge)

    def _get_pool(self):
        if self._pool is None or self._pid != os.getpid():
            with self._lock:
                if self._pool is None or self._pid != os.getpid():
                    c = self.config
                    self._pool = pgpool.ThreadedConnectionPool(
                        0, int(c["DB_POOL_MAX"]), dsn=c["DATABASE_URL"],
                        connect_timeout=int(c["DB_CONNECT_TIMEOUT"]), application_name="gpufs",
                        options=f"-c statement_timeout={int(c['DB_STATEMENT_TIMEOUT_MS'])} -c TimeZone=UTC",
                        cursor_factory=psycopg2.extras.RealDictCursor,
                        # TCP keepalives so a peer that vanished is noticed instead of waited on forever.
                        keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=2)
                    # minconn is how many connections putconn keeps; with 0 it would close each one
                    # returned, and every request would pay a new connection. Opening them all at
                    # creation (minconn=maxconn) would make the first request wait for all of them.
                    self._pool.minconn = self._pool.maxconn
                    self._pid = os.getpid()
        return self._pool

    def getconn(self):
        try:
            conn = self._get_pool().getconn()
            conn.autocommit = True
        except pgpool.PoolError as err:
            log.warning("connection pool exhausted: %s", err)
            raise Unavailable("server busy: no database connection free, try again") from err
        except DOWN_ERRORS as err:
            log.warning("database unreachable: %s", str(err).strip())
            raise Unavailable() from err
        with self._lock:
            self.in_use += 1
            self.checkouts += 1
            if self.on_change is not None:  # under the lock: two threads publish in order
                self.on_change(self)
        return conn

    def putconn(self, conn, broken=False):
        with self._lock:
            self.in_use -= 1
            if self.on_change is not None:
                self.on_change(self)
        pool = self._pool
        if pool is None or self._pid != os.getpid():
            conn.close()
            return
        if not broken and not conn.closed:
            try:
                if conn.status != psycopg2.extensions.STATUS_READY:
                    conn.rollback()
                conn.autocommit = True  # the health stream's snapshot turns it off
            except DOWN_ERRORS:
                broken = True
        pool.putconn(conn, close=broken or bool(conn.closed))
        if broken:
            # A lost connection usually means the server restarted: its siblings are dead too.
            self.reset()

    def reset(self):
        with self._lock:
            old, self._pool = self._pool, None
        if old is not None:
            try:
                old.closeall()
            except pgpool.PoolError:
                pass

    @contextmanager
    def connection(self):
        """A connection outside a request (CLI, background work). It is in autocommit: the caller
        wraps writes that belong together in `with conn:`."""
        conn = self.getconn()
        broken = False
        try:
            yield conn
        except DOWN_ERRORS:
            broken = True
            raise
        finally:
            self.putconn(conn, broken)


def get_db():
    """The request's connection, taken from the pool on first use and returned in teardown."""
    if "gpufs_db" not in g:
        g.gpufs_db = state().pool.getconn()
    return g.gpufs_db


def close_db(exc=None):
    conn = g.pop("gpufs_db", None)
    if conn is not None:
        state().pool.putconn(conn, broken=isinstance(exc, DOWN_ERRORS) or g.pop("gpufs_db_broken", False))
