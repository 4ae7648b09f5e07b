"""Alerts (contract section 10): conditions evaluated in SQL by the one background-task leader,
kept in PostgreSQL, and sent from an outbox to webhooks and Alertmanagers."""
import logging
from datetime import timedelta

from prometheus_client import Counter, Gauge

from ..db import queries
from ..tasks import Task

log = logging.getLogger("gpufs.alerts")

CONDITIONS = ("offline", "gpu_hot", "error_status", "disk_full")
DEFAULTS = {"offline_minutes": 5, "temp_c": 85, "for_minutes": 5, "disk_percent": 95}

# Set by the process that evaluates; "livemostrecent": under gunicorn a dead leader's value leaves
# the sum, and the next leader's takes its place.
FIRING = Gauge("gpufs_alerts_firing", "Alerts firing, by condition, as of the last evaluation.",
               ["condition"], multiprocess_mode="livemostrecent")
NOTIFICATIONS = Counter(
    "gpufs_alert_notifications_total",
    "Alert notifications sent, by channel (webhook, alertmanager) and result (delivered; retry: no answer "
    "or a 5xx, tried again later; failed: refused by the receiver or out of time; refused: unsafe target).",
    ["channel", "result"])


def init_app(state):
    """Add the evaluation to the app's background tasks (run by the one leader, see gpufs/tasks.py)."""
    from .outbox import Sender
    sender = Sender(state)

    every = float(state.config["ALERT_EVAL_SECONDS"])
    lead = Lead(every)

    def run(conn, now):
        evaluate(conn, now, since=lead.since(now))
        sender.wake()  # sends on its own thread: a slow target never delays the next evaluation

    state.tasks.append(Task("alerts", every, run))


class Lead:
    """When this process's evaluations began: a run missed (it was not leading, or the database was
    away) starts anew, and clients get offline_minutes from then to report before being offline."""

    def __init__(self, every):
        self.gap = timedelta(seconds=3 * every)
        self.began = self.last = None

    def since(self, now):
        if self.last is None or now - self.last > self.gap:
            self.began = now
        self.last = now
        return self.began


def evaluate(conn, now, since=None):
    """Evaluate every condition at `now`, in one transaction; return {condition: (opened, refreshed,
    resolved, queued)}. `conn` is not in autocommit (the leader's, or a test's own). `since`: when
    this evaluator began; silence before it opens no offline alert (see alerts-evaluate)."""
    with conn:
        done = {condition: _values(queries.alerts_evaluate(conn, condition=condition, now=now, since=since,
                                                            **DEFAULTS))
                for condition in CONDITIONS}
        firing = dict(_values(row) for row in queries.alerts_firing_counts(conn))
    for condition in CONDITIONS:
        FIRING.labels(condition).set(firing.get(condition, 0))
    changed = {c: counts for c, counts in done.items() if counts[0] or counts[2]}
    if changed:
        log.info("alerts evaluated at %s: %s", now.isoformat(), ", ".join(
            f"{c} +{counts[0]} -{counts[2]}" for c, counts in changed.items()))
    return done


def _values(row):
    """A row as a tuple, from a plain cursor or from the pool's dict cursor."""
    return tuple(row.values()) if isinstance(row, dict) else tuple(row)
