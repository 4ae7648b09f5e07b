"""Periodic background work (partition upkeep, alert evaluation) done by exactly one process across
every worker and host: the one holding a PostgreSQL session advisory lock. The others keep trying
to take it, so when the leader's process dies its session ends and another one takes over."""
import logging
import threading
import time
from datetime import datetime, timezone

import psycopg2

log = logging.getLogger("gpufs.tasks")

# One key for the whole server: the leader runs every task, so tasks never race each other either.
LOCK_KEY = 0x67707566_7461736B  # "gpuftask"


class Task:
    """`run(conn, now)` every `every` seconds on the leader's own connection (not autocommit); the task
    owns its transactions (`with conn:`), and `now` is the evaluation time, so tests pass their own."""

    def __init__(self, name, every, run):
        self.name = name
        self.every = float(every)
        self.run = run
        self.due = 0.0  # monotonic time of the next run: a new leader runs everything at once


class Leader:
    """One per process. `start()` is idempotent; the thread is a daemon and stops with `stop()`."""

    def __init__(self, dsn, tasks, connect_timeout=3, poll_seconds=1.0, clock=None):
        self.dsn = dsn
        self.tasks = list(tasks)
        self.connect_timeout = int(connect_timeout)
        self.poll_seconds = poll_seconds
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.leading = False
        self._conn = None
        self._thread = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    def start(self):
        with self._lock:
            if self._thread is None and self.tasks:
                self._thread = threading.Thread(target=self._loop, name="gpufs-tasks", daemon=True)
                self._thread.start()

    def stop(self):
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self.leading and self._conn is not None:
            # Hand over at once: a closed session's locks are released only when its backend has
            # finished exiting, which the next leader would otherwise race.
            try:
                with self._conn.cursor() as cur:
                    cur.execute("select pg_advisory_unlock(%(key)s)", {"key": LOCK_KEY})
                self._conn.commit()
            except psycopg2.Error:
                pass
        self._close()

    def step(self):
        """Try to lead, then run the tasks that are due; return whether this process leads.
        The loop calls it every poll; tests call it directly."""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg2.connect(self.dsn, connect_timeout=self.connect_timeout,
                                              application_name="gpufs-tasks")
                self.leading = False
            if not self.leading:
                with self._conn.cursor() as cur:
                    cur.execute("select pg_try_advisory_lock(%(key)s)", {"key": LOCK_KEY})
                    self.leading = cur.fetchone()[0]
                self._conn.commit()  # the lock is the session's: it outlives this and every task's transaction
            if self.leading:
                self._run_due()
        except psycopg2.Error as err:
            # The lock went with the session: lead again only after taking it on a new one.
            log.warning("background tasks: database unavailable (%s)", str(err).strip().splitlines()[0])
            self._close()
        return self.leading

    def _run_due(self):
        for task in self.tasks:
            now = time.monotonic()
            if now < task.due:
                continue
            task.due = now + task.every
            try:
                task.run(self._conn, self.clock())
            except psycopg2.OperationalError:
                raise  # the connection is gone: step() lets go of the lead
            except Exception:  # one failing task must not stop the others, nor the next run
                log.exception("background task %s failed", task.name)
                if self._conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
                    self._conn.rollback()

    def _loop(self):
        while not self._stopping.is_set():
            self.step()
            self._stopping.wait(self.poll_seconds)

    def _close(self):
        self.leading = False
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg2.Error:
                pass
            self._conn = None
