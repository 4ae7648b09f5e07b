"""PostgreSQL access: a per-process connection pool, one connection per request, and the SQL files."""
import functools
import logging
import os
import re
import threading
from contextlib import contextmanager
from pathlib import Path

import aiosql
import psycopg2
import psycopg2.errors
import psycopg2.extensions
from flask import current_app, g
from psycopg2 import pool as pgpool
from psycopg2 import sql as pgsql

from .envelope import isoz
from .errors import Unavailable

log = logging.getLogger("gpufs.db")
SQL_DIR = Path(__file__).with_name("sql")
queries = aiosql.from_path(SQL_DIR, "psycopg2")

# Errors that mean "the database is not there", as opposed to a bug in a query.
DOWN_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError)


class Connection(psycopg2.extensions.connection):
    """Autocommit: a read is one round trip, not BEGIN, the query and a ROLLBACK. A write
    runs in `with conn:`, which in psycopg2 2.9 still makes it one transaction."""

    def __init__(self, *args, prepare=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.autocommit = True
        self.prepare = prepare  # DB_PREPARE: run PREPARED queries as prepared statements
        self.statements = {}  # statement -> (its EXECUTE, the parameter names): what this session prepared
        self.prepares = 0


class Cursor(psycopg2.extensions.cursor):
    """Rows as plain dicts, each built in one dict(zip()): RealDictCursor sets every column
    through a Python __setitem__, which cost more than the query on small reads. A row is as
    long as its description, so zip() needs no strict check (a third of its cost)."""

    def _dicts(self, rows):
        names = [column[0] for column in self.description] if rows else ()
        return [dict(zip(names, row, strict=False)) for row in rows]

    def fetchone(self):
        row = super().fetchone()
        return None if row is None else self._dicts([row])[0]

    def fetchmany(self, size=None):
        return self._dicts(super().fetchmany(self.arraysize if size is None else size))

    def fetchall(self):
        return self._dicts(super().fetchall())

    def for_output(self):
        """Times as text in the one output format: the cursors whose rows schemas.Shape.rows dumps."""
        for caster in TIME_TEXT:
            psycopg2.extensions.register_type(caster, self)
        return self

    def tuples(self, size=None):
        """Rows as psycopg2 makes them, for schemas.Shape: all that remain, or the next `size`."""
        return super().fetchall() if size is None else super().fetchmany(size)

    def __iter__(self):
        while rows := self.fetchmany(self.itersize):
            yield from rows


def _text_time(fallback, suffix):
    """A caster from a time column's text straight to the one output format (envelope.isoz).
    Parsing it into a datetime and formatting that again cost more than the rest of a row. The
    session's TimeZone is UTC, so a timestamptz reads 'YYYY-MM-DD HH:MM:SS[.ffffff]+00' and a
    timestamp the same without '+00'; anything else (infinity, BC, a year past 9999, another
    zone) goes through psycopg2's own parse and isoz."""

    def cast(value, cur):
        if value is None:
            return None
        n = len(value) - len(suffix)
        if value.endswith(suffix) and value[4:5] == "-" and value[10:11] == " " and (
                n == 19 or (21 <= n <= 26 and value[19] == ".")):
            return f"{value[:10]}T{value[11:n]}{'.000000' if n == 19 else '0' * (26 - n)}Z"
        return isoz(fallback(value, cur))

    return psycopg2.extensions.new_type(fallback.values, f"GPUFS_TEXT_{fallback.name}", cast)


TIME_TEXT = (_text_time(psycopg2.extensions.PYDATETIMETZ, "+00"), _text_time(psycopg2.extensions.PYDATETIME, ""))


class Pool:
    """A lazily created, fork-aware ThreadedConnectionPool: gunicorn workers each build their own."""

    def __init__(self, config):
        self.config = config
        self._pool = None
        self._pid = None
        self._lock = threading.Lock()
        self.in_use = 0
        self.checkouts = 0  # connections handed out, ever: shows whether a request touched the database
        self.on_change = None  # called with the pool when in_use changes (the standalone app's gauge)

    def _connect_kwargs(self):
        c = self.config
        return {
            "dsn": c["DATABASE_URL"],
            "connect_timeout": int(c["DB_CONNECT_TIMEOUT"]),
            "application_name": "gpufs",
            "options": f"-c statement_timeout={int(c['DB_STATEMENT_TIMEOUT_MS'])} -c TimeZone=UTC",
            "connection_factory": functools.partial(Connection, prepare=bool(c["DB_PREPARE"])),
            "cursor_factory": Cursor,
            # TCP keepalives so a peer that vanished is noticed instead of waited on forever.
            "keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 2,
        }

    def _get_pool(self):
        if self._pool is None or self._pid != os.getpid():
            with self._lock:
                if self._pool is None or self._pid != os.getpid():
                    self._pool = pgpool.ThreadedConnectionPool(
                        0, int(self.config["DB_POOL_MAX"]), **self._connect_kwargs())
                    self._pool.minconn = self._pool.maxconn  # else putconn closes every connection beyond minconn
                    self._pid = os.getpid()
        return self._pool

    def getconn(self):
        try:
            conn = self._get_pool().getconn()
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
                conn.autocommit = True  # a server-side cursor's stream turns it off
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


def state(app=None):
    return (app or current_app).extensions["gpufs"]


def get_db():
    """The request's connection, taken from the pool on first use and returned in teardown."""
    if "gpufs_db" not in g:
        g.gpufs_db = state().pool.getconn()
    return g.gpufs_db


def close_db(exc=None):
    conn = g.pop("gpufs_db", None)
    if conn is not None:
        state().pool.putconn(conn, broken=isinstance(exc, DOWN_ERRORS) or g.pop("gpufs_db_broken", False))


def dumped_rows(query, shape, **params):
    """Run a named select on the request connection and return its rows dumped by `shape` (a
    schemas.Shape), built from the tuples without a dict per row in between."""
    # The query's SQL on a cursor of our own: aiosql's row-by-row generator cost more than the
    # rows on small reads.
    with get_db().cursor().for_output() as cur:
        execute(cur, query, params)
        return shape.rows(cur)


# Statements each connection plans once. The reads a dashboard polls: planning them took as
# long as running them or longer (the health window's functions are inlined into each). The
# clients check every report takes (the same plan for any number of ids), and one heartbeat
# report's write, whose planning took three times as long as its execution; a batch's write
# keeps a plain statement, because its plan depends on how many reports it carries. Not the
# health page: a generic plan of its time range could be far off for another range.
PREPARED = frozenset({"models_list", "client_list", "client_detail", "client_stat", "client_monitor",
                      "report_clients", "ingest_reports_one"})


# What EXECUTE raises when its prepared statement no longer fits the session.
STALE_STATEMENT = (psycopg2.errors.InvalidSqlStatementName, psycopg2.errors.FeatureNotSupported)


def execute(cur, query, params, statement=None):
    """Execute an aiosql query with its named parameters. When DB_PREPARE is on and `statement`
    (by default the query's name) is one of PREPARED, as a prepared statement of the session.
    DB_PREPARE is off for PgBouncer in transaction mode, where the next statement may land on
    another server connection."""
    conn = cur.connection
    statement = statement or query.__name__
    if not conn.prepare or statement not in PREPARED:
        cur.execute(query.sql, params)
        return
    prepared = conn.statements.get(statement) or _prepare(cur, query, statement)
    try:
        cur.execute(prepared[0], [params[name] for name in prepared[1]])
    except STALE_STATEMENT:
        # The session lost its statements (DISCARD ALL) or a migration altered a column under
        # one ("cached plan must not change result type"): prepared again, it reads what is
        # there now. All of them are forgotten, since a lost session lost every one. In a
        # transaction (`with conn:` begins one even in autocommit) the error aborted it, so only
        # the next use prepares anew; ingest retries its transaction.
        conn.statements.clear()
        if conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            raise
        prepared = _prepare(cur, query, statement)
        cur.execute(prepared[0], [params[name] for name in prepared[1]])


def _prepare(cur, query, statement):
    conn = cur.connection
    conn.prepares += 1  # a new name each time: one that failed may still be in the session
    name = f"gpufs_{statement}_{conn.prepares}"
    text, names = positional(query.sql)
    with conn.cursor(cursor_factory=psycopg2.extensions.cursor) as own:
        own.execute(pgsql.SQL("prepare {} as ").format(pgsql.Identifier(name)) + pgsql.SQL(text))
        own.execute("select parameter_types::text[] from pg_prepared_statements where name = %s", (name,))
        types = own.fetchone()[0]
    # Each argument cast to its parameter's type, as the plain statement's text casts it: EXECUTE
    # does not turn psycopg2's ARRAY['...'] (text[]) into jsonb[] by itself.
    sql = pgsql.SQL("execute {}").format(pgsql.Identifier(name))
    if names:
        sql += pgsql.SQL("({})").format(pgsql.SQL(", ").join(pgsql.SQL("%s::" + kind) for kind in types))
    conn.statements[statement] = (sql.as_string(conn), names)
    return conn.statements[statement]


_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%%")


def positional(text):
    """aiosql's psycopg2 SQL (%(name)s placeholders, %% for a percent sign) as PREPARE takes it:
    $1..$n, one number per name, and the names in that order."""
    names = []

    def number(match):
        if match.group(1) is None:
            return "%"
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return _PLACEHOLDER.sub(number, text), names


def all_rows(query, **params):
    """Every row a named statement returns, as dicts; through `execute`, so one of PREPARED is
    prepared."""
    with get_db().cursor() as cur:
        execute(cur, query, params)
        return cur.fetchall()


def one_row(query, **params):
    """The row of a one-row statement (aiosql's `^`), as a dict, or None."""
    rows = all_rows(query, **params)
    return rows[0] if rows else None
