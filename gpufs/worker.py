"""gunicorn's threaded worker, leaving a new connection to a worker with a thread free.

All workers wait on one listening socket and whichever runs first accepts. Stock gthread
accepts everything it can while it is awake, so on a small machine the first worker to wake
often takes every connection of a burst and keeps them (keep-alive), while the other workers
idle: measured on two cores, 8 wrk connections all landed on one of two workers in 4 of 10
runs, each time at 38% of the rate of an even split. nginx's upstream keep-alive connections
stick the same way.

This worker stops accepting while all its threads are busy, for at most HANDOFF_SECONDS: long
enough for an idle worker to wake and take the connection, short enough that when every
worker is busy a new connection waits hardly longer than it would in a thread pool's queue.
"""
import os
import time

from gunicorn.workers.gthread import ThreadWorker

HANDOFF_SECONDS = float(os.environ.get("GUNICORN_HANDOFF_SECONDS", "0.02"))


class Worker(ThreadWorker):
    _busy_since = None  # when every thread became busy; None while one is free

    # The stock loop accepts while nr_conns < worker_connections, checked once per turn before it
    # waits for events. Idle keep-alive connections and connections still waiting for their first
    # bytes hold no thread, so they do not count as busy.
    @property
    def worker_connections(self):
        busy = self.nr_conns - len(self.keepalived_conns) - len(self.pending_conns)
        if busy < self.cfg.threads:
            self._busy_since = None
            return self._connection_cap
        now = time.monotonic()
        if self._busy_since is None:
            self._busy_since = now
        if now - self._busy_since >= HANDOFF_SECONDS:
            return self._connection_cap  # every worker is busy: queue it here, as stock gthread does
        return 0

    @worker_connections.setter
    def worker_connections(self, value):
        self._connection_cap = value  # the configured cap (worker_connections), set by ThreadWorker

    def wait_for_and_dispatch_events(self, timeout):
        if self._busy_since is not None:
            left = self._busy_since + HANDOFF_SECONDS - time.monotonic()
            if left > 0:  # not accepting now: wake when the hand-off time is up, to accept again
                timeout = min(timeout, left)
        super().wait_for_and_dispatch_events(timeout)
