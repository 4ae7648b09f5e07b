"""The outbox's sender: every opened or resolved alert to its user's webhook and Alertmanager,
retried with backoff for up to an hour, at least once (a receiver drops repeats by the key)."""
import http.client
import logging
import threading
from datetime import datetime, timedelta, timezone
from urllib.parse import urlsplit

import orjson

from ..db import queries
from ..envelope import isoz
from ..schemas import AlertItem
from . import NOTIFICATIONS, targets

log = logging.getLogger("gpufs.alerts")

BATCH = 50
LEASE = timedelta(minutes=2)  # a claimed notification whose sender died is sent again after this
GIVE_UP_AFTER = timedelta(hours=1)
KEEP_SETTLED = timedelta(days=7)  # delivered or given-up notifications, for looking into a delivery
FIRST_RETRY_SECONDS, LAST_RETRY_SECONDS = 15, 600
item_out = AlertItem()


def deliver(conn, now, allow_private):
    """Send every notification due at `now`; return the results' counts. `conn` is a pool
    connection (autocommit, rows as dicts). Nothing is held open while a target answers."""
    with conn:
        queries.alerts_outbox_prune(conn, before=now - KEEP_SETTLED)
        due = list(queries.alerts_outbox_claim(conn, now=now, lease_until=now + LEASE, batch=BATCH))
    results = {}
    for row in due:
        result, error = _send(row, allow_private)
        if result == "retry" and now - row["created_at"] >= GIVE_UP_AFTER:
            result = "failed"
        with conn:
            if result == "delivered":
                queries.alerts_outbox_done(conn, id=row["id"], now=now)
            elif result == "retry":
                queries.alerts_outbox_retry(conn, id=row["id"], next_attempt_at=now + backoff(row["attempts"]),
                                            error=error)
            else:
                queries.alerts_outbox_give_up(conn, id=row["id"], now=now, error=error)
        if result != "delivered":
            log.warning("alert %s %s to %s: %s (%s)", row["alert_id"], row["status"], row["channel"], result, error)
        NOTIFICATIONS.labels(row["channel"], result).inc()
        results[result] = results.get(result, 0) + 1
    return results


def backoff(attempts):
    """Seconds to wait after the `attempts`-th failed try: doubling from 15 s, at most 10 minutes."""
    return timedelta(seconds=min(LAST_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2 ** max(0, attempts - 1)))


def refresh_alertmanagers(conn, allow_private):
    """Post every firing alert again to its user's Alertmanager (it resolves an alert it stops
    hearing about). Best effort: the next evaluation sends them again anyway."""
    by_url = {}
    for row in queries.alerts_firing_for_alertmanager(conn):
        by_url.setdefault(row["url"], []).append(alertmanager_alert(row))
    for url, alerts in by_url.items():
        try:
            status = targets.post(alertmanager_endpoint(url), orjson.dumps(alerts), {}, allow_private)
            if not 200 <= status < 300:
                log.warning("alertmanager %s answered %s to the firing alerts", urlsplit(url).netloc, status)
        except (targets.Refused, OSError, http.client.HTTPException) as err:
            log.warning("alertmanager %s: firing alerts not re-sent (%s)", urlsplit(url).netloc, err)


def _send(row, allow_private):
    """("delivered" | "retry" | "failed" | "refused", error text or None)."""
    try:
        if row["channel"] == "webhook":
            body, headers = webhook_body(row), {"Idempotency-Key": f"{row['alert_id']}:{row['status']}"}
            status = targets.post(row["url"], body, headers, allow_private)
        else:
            status = targets.post(alertmanager_endpoint(row["url"]), orjson.dumps([alertmanager_alert(row)]), {},
                                  allow_private)
    except targets.Refused as err:
        return "refused", str(err)
    except (OSError, http.client.HTTPException) as err:
        return "retry", f"no answer: {err}"[:500]
    if 200 <= status < 300:
        return "delivered", None
    if status >= 500 or status == 429:
        return "retry", f"HTTP {status}"
    return "failed", f"HTTP {status}"  # the receiver refuses it: sending it again would not change that


def webhook_body(row):
    """The contract's payload; a Slack incoming webhook gets the text it displays instead."""
    if _is_slack(row["url"]):
        return orjson.dumps({"text": f"[{row['status'].upper()}] {row['message']}"})
    return orjson.dumps({"status": row["status"], "alert": item_out.dump(row)})


def _is_slack(url):
    parts = urlsplit(url)
    return parts.hostname == "hooks.slack.com" and parts.path.startswith("/services/")


def alertmanager_endpoint(base):
    return base.rstrip("/") + "/api/v2/alerts"


def alertmanager_alert(row):
    """One alert in Alertmanager's API v2 shape; `endsAt` once resolved."""
    labels = {"alertname": row["condition"], "client_id": bytes(row["client_id"]).hex(),
              "client_name": row["client_name"] or "", "user_id": row["user_id"]}
    if row["device_index"] is not None:
        labels["gpu"] = str(row["device_index"])
    alert = {"labels": labels, "annotations": {"summary": row["message"]}, "startsAt": isoz(row["starts_at"])}
    if row["ends_at"] is not None:
        alert["endsAt"] = isoz(row["ends_at"])
    return alert


class Sender:
    """The leader's sender thread, woken after each evaluation: a slow or dead target delays
    neither the evaluation nor a request. Only the leader wakes it, so one process sends."""

    def __init__(self, state):
        self.state = state
        self._wake = threading.Event()
        self._thread = None
        self._lock = threading.Lock()

    def wake(self):
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="gpufs-alerts-sender", daemon=True)
                self._thread.start()
        self._wake.set()

    def _loop(self):
        allow_private = bool(self.state.config["ALERT_ALLOW_PRIVATE_TARGETS"])
        while True:
            self._wake.wait()
            self._wake.clear()
            try:
                with self.state.pool.connection() as conn:
                    deliver(conn, datetime.now(timezone.utc), allow_private)
                    refresh_alertmanagers(conn, allow_private)
            except Exception:  # the database away, or a bug: the next wake tries again
                log.exception("alert notifications not sent")
