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

from .errors import Unavailable
from .ext import state

log = logging.getLogger("gpufs.db")
SQL_DIR = Path(__file__).with_name("sql")
# Every statement the server runs, called as queries.<name>(conn, **params).
queries = aiosql.from_path(SQL_DIR, "psycopg2")

# Errors that mean "the database is not there", as opposed to a bug in a query.
DOWN_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)


class Pool:
    """Up to DB_POOL_MAX connections per process, kept open between requests, lazily and after a fork
    made anew (gunicorn workers each have their own). Its connections are in autocommit (a read is
    one round trip); a write runs in `with conn:`, which makes it one transaction.

    Not psycopg2's ThreadedConnectionPool: it opens a new connection while holding its lock, so
    against a database that accepts and never answers, requests waited for each other's connect
    timeout one after another (20 requests: up to 32 s). Here a connection is made outside the
    lock, and only a free slot is taken under it."""

    def __init__(self, config):
        self.config = config
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._idle = []  # open connections not in use, newest last
        self._free = int(config["DB_POOL_MAX"])  # connections that may still be taken
        self.in_use = 0
        self.checkouts = 0  # connections handed out, ever: shows whether a request touched the database
        self.on_change = None  # called with the pool when in_use changes (the standalone app's gauge)

    def _connect(self):
        c = self.config
        return psycopg2.connect(
            c["DATABASE_URL"], connect_timeout=int(c["DB_CONNECT_TIMEOUT"]), application_name="gpufs",
            options=f"-c statement_timeout={int(c['DB_STATEMENT_TIMEOUT_MS'])} -c TimeZone=UTC",
            cursor_factory=psycopg2.extras.RealDictCursor,
            # TCP keepalives so a peer that vanished is noticed instead of waited on forever.
            keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=2)

    def getconn(self):
        with self._lock:
            if self._pid != os.getpid():  # a forked child: the parent's connections are not ours
                self._pid, self._idle, self._free = os.getpid(), [], int(self.config["DB_POOL_MAX"])
            if self._free == 0:
                log.warning("connection pool exhausted: %s in use", self.config["DB_POOL_MAX"])
                raise Unavailable("server busy: no database connection free, try again")
            self._free -= 1
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            try:
                conn = self._connect()
            except DOWN_ERRORS as err:
                with self._lock:
                    self._free += 1
                log.warning("database unreachable: %s", str(err).strip())
                raise Unavailable() from err
        conn.autocommit = True
        with self._lock:
            self.in_use += 1
            self.checkouts += 1
            if self.on_change is not None:  # under the lock: two threads publish in order
                self.on_change(self)
        return conn

    def putconn(self, conn, broken=False):
        if not broken and not conn.closed:
            try:
                if conn.status != psycopg2.extensions.STATUS_READY:
                    conn.rollback()
                conn.autocommit = True  # the health stream's snapshot turns it off
            except DOWN_ERRORS:
                broken = True
        with self._lock:
            self.in_use -= 1
            if self.on_change is not None:
                self.on_change(self)
            if self._pid != os.getpid():  # taken before a fork: the child does not hand it back
                conn.close()
                return
            self._free += 1
            if broken or conn.closed:
                # A lost connection usually means the server restarted: its siblings are dead too.
                idle, self._idle = self._idle, []
            else:
                idle = []
                self._idle.append(conn)
        if broken or conn.closed:
            for dead in [conn, *idle]:
                dead.close()

    def reset(self):
        """Close the idle connections (they reopen as needed)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

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
