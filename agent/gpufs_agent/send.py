"""Getting reports to the server: HTTP with retries (stdlib only), a bounded on-disk buffer for what
could not be delivered, and registration of an unknown client."""
import http.client
import json
import logging
import os
import platform
import random
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from typing import NamedTuple

log = logging.getLogger("gpufs_agent")

HEARTBEAT = "/api/client/heartbeat"
HEARTBEATS = "/api/client/heartbeats"
INSERT_CLIENT = "/api/user/insert_client"
BATCH_MAX = 1000  # the server's limit per batch body


class Stop(Exception):
    """The server refuses this agent for good (invalid client, bad token): retrying cannot help."""


class Answer(NamedTuple):
    status: int
    body: dict | None
    message: str


class Transport:
    """POSTs JSON to the server. Connection failures, 5xx and 429 are retried with jittered
    exponential backoff; after the last try `post` returns None. Any other answer is returned."""

    def __init__(self, server, token=None, timeout=10.0, retries=3, backoff=1.0, backoff_max=30.0, sleep=time.sleep):
        self.server = server.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.sleep = sleep

    def _once(self, path, data):
        headers = {"Content-Type": "application/json", "Accept": "application/json",
                   "User-Agent": "gpufs-agent"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.server + path, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return _answer(resp.status, resp.read(), resp.reason)
        except urllib.error.HTTPError as err:
            with err:
                return _answer(err.code, err.read(), err.reason)

    def post(self, path, payload):
        data = json.dumps(payload, separators=(",", ":")).encode()
        for attempt in range(self.retries + 1):
            try:
                answer = self._once(path, data)
                if answer.status < 500 and answer.status != 429:
                    return answer
                problem = f"HTTP {answer.status}: {answer.message}"
            except (OSError, http.client.HTTPException) as err:  # refused, reset, timed out, DNS
                problem = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
            if attempt < self.retries:
                # Full jitter: agents that lost the server together must not come back in step.
                delay = random.uniform(0, min(self.backoff_max, self.backoff * 2 ** attempt))
                log.info("POST %s failed (%s); retry %d/%d in %.2fs", path, problem, attempt + 1, self.retries, delay)
                self.sleep(delay)
        log.warning("POST %s%s failed after %d tries: %s", self.server, path, self.retries + 1, problem)
        return None


def _answer(status, raw, reason):
    try:
        body = json.loads(raw)
    except ValueError:
        body = None  # a proxy's HTML error page, say
    if not isinstance(body, dict):
        body = None
    message = body.get("message") if body and isinstance(body.get("message"), str) else str(reason or "")
    return Answer(status, body, message)


class Buffer:
    """Undelivered reports, oldest first, one JSON per line in `path`; at most `limit` are kept."""

    def __init__(self, path, limit=10000):
        self.path = path
        self.limit = max(int(limit), 1)
        self.reports = self._load()

    def _load(self):
        reports = []
        try:
            with open(self.path) as f:
                for n, line in enumerate(f, 1):
                    try:
                        reports.append(json.loads(line))
                    except ValueError:
                        # A line cut short by a crash or a full disk: lose that report, not the rest.
                        log.warning("%s:%d: unreadable buffered report skipped", self.path, n)
        except FileNotFoundError:
            pass
        return reports[-self.limit:]

    def __len__(self):
        return len(self.reports)

    def add(self, report):
        self.reports.append(report)
        if len(self.reports) <= self.limit:
            with open(self.path, "a") as f:
                f.write(json.dumps(report, separators=(",", ":")) + "\n")
            return
        dropped = self.reports[: len(self.reports) - self.limit]
        del self.reports[: len(dropped)]
        log.warning("buffer full (%d reports): dropped the oldest, from %s", self.limit, dropped[0].get("timestamp"))
        self._save()

    def drop_first(self, n):
        del self.reports[:n]
        self._save()

    def _save(self):
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as f:
            f.writelines(json.dumps(r, separators=(",", ":")) + "\n" for r in self.reports)
        os.replace(tmp, self.path)  # a crash mid-write leaves the old buffer, never half of one


class Delivery:
    """Sends one report at a time, keeps what could not be sent, and backfills it once the server answers."""

    def __init__(self, transport, buffer, client_id, user=None, name=None, batch_size=BATCH_MAX):
        self.transport = transport
        self.buffer = buffer
        self.client_id = client_id
        self.user = user
        self.name = name
        self.batch_size = min(max(int(batch_size), 1), BATCH_MAX)
        self.registered_at = None

    def send(self, report):
        """Deliver `report`, then any backlog; True when the server stored it."""
        answer = self.transport.post(HEARTBEAT, report)
        if answer is not None and answer.status == 404 and self.register():
            report = self._not_before_registration(report)
            answer = self.transport.post(HEARTBEAT, report)
        if answer is None:
            self.buffer.add(report)
            log.warning("server unreachable: report of %s kept for later (%d waiting)",
                        report["timestamp"], len(self.buffer))
            return False
        stored = self._judge(answer, f"report of {report['timestamp']}")
        self.flush()  # it answered, so it is up: a good moment for the backlog
        return stored

    def _not_before_registration(self, report):
        """The report, timed no earlier than the server's answer to its registration.

        The server counts a client's reports from its registration on, and this report was measured
        just before it (and the agent's clock may lag the server's): timed as measured, it would
        not count, nor would the next one in its bucket, and a new machine would show health 0."""
        if not self.registered_at or _instant(self.registered_at) <= _instant(report["timestamp"]):
            return report
        return {**report, "timestamp": self.registered_at}

    def _judge(self, answer, what):
        if answer.status == 200:
            log.debug("%s: %s", what, (answer.body or {}).get("data"))
            return True
        if answer.status in (401, 403):
            raise Stop(_refusal(answer, self.client_id))
        if answer.status == 404:
            hint = "" if self.user else "; register it (insert_client) or run with --user to let the agent do it"
            log.error("%s dropped: the server does not know client %s (%s)%s", what, self.client_id,
                      answer.message, hint)
        else:
            # Not retried: the same body would get the same answer (a bad value, a clock too far ahead).
            log.error("%s dropped: the server refused it with HTTP %d: %s", what, answer.status, answer.message)
        return False

    def register(self):
        """Create this client on the server under --user; False when that is not possible now."""
        if not self.user:
            return False
        body = {"user_id": self.user, "client_id": self.client_id, "client_status": "online",
                "os_type": (platform.system() or "unknown")[:64], "name": self.name}
        answer = self.transport.post(INSERT_CLIENT, body)
        if answer is None:
            return False
        if answer.status == 200:
            log.info("registered client %s as %r for user %s", self.client_id, self.name, self.user)
            self.registered_at = (answer.body or {}).get("timestamp")  # the envelope's: the server's clock
            return True
        if answer.status in (401, 403, 409):
            raise Stop(f"cannot register client {self.client_id} for user {self.user}: "
                       f"HTTP {answer.status}: {answer.message}")
        log.error("registering client %s failed with HTTP %d: %s", self.client_id, answer.status, answer.message)
        return False

    def flush(self):
        """Send the backlog through the batch endpoint, oldest first; stops at the first failure."""
        registered = False
        while self.buffer:
            chunk = self.buffer.reports[: self.batch_size]
            answer = self.transport.post(HEARTBEATS, {"reports": chunk})
            if answer is None:
                return
            if answer.status == 413 and self.batch_size > 1:
                self.batch_size = max(self.batch_size // 2, 1)  # the server's body limit is below ours
                continue
            if answer.status == 404:
                log.error("the server has no %s (HTTP 404: %s); %d reports stay buffered", HEARTBEATS,
                          answer.message, len(self.buffer))
                return
            if answer.status != 200:
                self._judge(answer, f"{len(chunk)} buffered reports")
                self.buffer.drop_first(len(chunk))
                continue
            data = (answer.body or {}).get("data") or {}
            results = data.get("results") or []
            if not registered and any(r.get("code") == 404 for r in results) and self.register():
                registered = True
                continue  # resending is safe: the server stores a (client, timestamp) once
            self._log_batch(chunk, data, results)
            self.buffer.drop_first(len(chunk))

    def _log_batch(self, chunk, data, results):
        log.info("backlog: %s stored, %s duplicates, %s rejected; %d still waiting", data.get("stored"),
                 data.get("duplicates"), data.get("rejected"), len(self.buffer) - len(chunk))
        refused = [r for r in results if r.get("status") == "rejected"]
        for r in refused:
            when = chunk[r["index"]].get("timestamp") if 0 <= r.get("index", -1) < len(chunk) else "?"
            log.error("buffered report of %s dropped: HTTP %s: %s", when, r.get("code"), r.get("message"))
        if any(r.get("code") == 403 for r in refused):
            raise Stop(_refusal(Answer(403, None, refused[0].get("message", "")), self.client_id))


def _instant(text):
    try:  # Python 3.10's fromisoformat does not take the Z
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return datetime.min.replace(tzinfo=timezone.utc)  # not a time: the report's own is kept


def _refusal(answer, client_id):
    if answer.status == 401:
        return f"the server wants a valid token (HTTP 401: {answer.message}); pass --token or GPUFS_TOKEN"
    return (f"the server refuses client {client_id} (HTTP 403: {answer.message}); it is marked invalid, or the "
            f"token does not own it. Fix that on the server, then start the agent again")
