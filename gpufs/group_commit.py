"""Group commit: single reports arriving together in one process share one transaction.

A machine sends one report a minute, so a fleet reaches the server as many small, concurrent
requests. Written one by one, each pays a transaction of its own: the client check, the write
statement, a commit waiting for the WAL flush, and the cache's version bumps. Here at most one
write of single reports runs per process at a time; the reports that arrive while it runs wait
and then go together, as the next write, through the batch endpoint's set-based code. There is
no timer: when nothing else is in flight a report is written at once, alone, so a quiet server
adds no latency, and the busier it is, the larger the groups (as PostgreSQL groups WAL flushes).

Every report is answered only after the transaction that holds it has committed. When that
transaction fails, no report of it is stored: a lost database answers 503 to the whole group;
any other error writes the group's reports again one by one, so a report that breaks the write
fails alone and never takes its neighbours with it.
"""
import threading

from prometheus_client import Histogram

from .db import DOWN_ERRORS
from .errors import Unavailable

GROUP_SIZE = Histogram(
    "gpufs_report_group_size", "Single reports written together in one transaction (group commit).",
    buckets=(1, 2, 4, 8, 16, 32, 64))


class _Slot:
    """One waiting report: its result or error, and an event set when either is there, or when the
    report's thread is handed the lead (`lead`) to write the next group."""
    __slots__ = ("item", "result", "error", "lead", "done")

    def __init__(self, item):
        self.item, self.result, self.error, self.lead = item, None, None, False
        self.done = threading.Event()


class GroupCommit:
    """`submit(item)` returns `write([item, ...])[i]` for its item, written together with the items
    submitted while an earlier write was running (at most `limit` per write)."""

    def __init__(self, write, limit=100):
        self._write = write  # write(items) -> one result per item, in order, after its commit
        self.limit = limit
        self._lock = threading.Lock()
        self._queue = []  # slots waiting for the next write; the first is the next leader's own
        self._writing = False  # invariant: not writing => queue empty

    @property
    def waiting(self):
        """How many reports wait for the write in progress to finish (tests and curiosity)."""
        with self._lock:
            return len(self._queue)

    def submit(self, item):
        slot = _Slot(item)
        with self._lock:
            self._queue.append(slot)
            lead = not self._writing
            self._writing = True
        if not lead:
            slot.done.wait()
            if not slot.lead:
                return _outcome(slot, own=False)
        self._write_next()  # this thread's slot is the queue's first: it is in the group written
        return _outcome(slot, own=True)

    def _write_next(self):
        with self._lock:
            group, self._queue = self._queue[:self.limit], self._queue[self.limit:]
        try:
            _fill(group, self._write)
        finally:
            for slot in group:  # interrupted (the worker stopping): never an answer without an outcome
                if slot.result is None and slot.error is None:
                    slot.error = RuntimeError("the write of this report was interrupted")
            with self._lock:
                following = self._queue[0] if self._queue else None
                self._writing = following is not None
                if following is not None:
                    following.lead = True
            # The leader's own slot (group[0]) is not waiting; the others are, and the next leader.
            for slot in group[1:]:
                slot.done.set()
            if following is not None:
                following.done.set()


def _fill(group, write):
    GROUP_SIZE.observe(len(group))
    try:
        results = write([slot.item for slot in group])
    except DOWN_ERRORS as err:
        for slot in group:
            slot.error = err
        return
    except Exception as err:
        if len(group) == 1:
            group[0].error = err
            return
        for slot in group:  # alone, so one bad report fails itself only
            _fill([slot], write)
        return
    for slot, result in zip(group, results, strict=True):
        slot.result = result


def _outcome(slot, own):
    if slot.error is None:
        return slot.result
    if own:  # the leader's thread: its error handler and teardown see the original error
        raise slot.error
    if isinstance(slot.error, DOWN_ERRORS):
        raise Unavailable() from slot.error
    raise RuntimeError("the write of this report failed") from slot.error
