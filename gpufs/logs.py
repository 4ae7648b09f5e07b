"""Logging for the standalone server: text or JSON lines, and one line per request with its id.

The request id comes from X-Request-ID when it is sane (printable ASCII, at most 128
characters: no newline can forge a log line or a header), else it is generated; it is echoed
in the response and attached to every log line written while the request runs, so the
nginx access log, our log and the client's report can be joined on it.
"""
import json
import logging
import re
import sys
import time
import uuid
from datetime import datetime, timezone

from flask import g, has_request_context, request

from . import metrics
from .envelope import isoz

request_log = logging.getLogger("gpufs.request")
SANE_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")  # visible ASCII: no space, no control character
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def request_id_from(header):
    """The caller's X-Request-ID when it is safe to log and echo, else a fresh one."""
    if header and SANE_REQUEST_ID.fullmatch(header) and '"' not in header and "\\" not in header:
        return header
    return uuid.uuid4().hex


def printable(text):
    """`text` with control characters escaped, so a decoded %0a in a path cannot split a log line."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def client_address():
    """The caller's address: nginx's last X-Forwarded-For hop when nginx (on loopback) sent the
    request, else the peer itself. A header from anyone else is not believed."""
    peer = request.remote_addr or "-"
    forwarded = request.headers.get("X-Forwarded-For")
    if forwarded and peer in ("127.0.0.1", "::1"):
        return printable(forwarded.rsplit(",", 1)[-1].strip())[:64] or peer
    return peer


def _current_request_id():
    return g.get("gpufs_request_id") if has_request_context() else None


class TextFormatter(logging.Formatter):
    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s%(rid)s: %(message)s")

    def formatMessage(self, record):  # the traceback, appended after this, keeps its line breaks
        rid = getattr(record, "request_id", None) or _current_request_id()
        record.rid = f" [{rid}]" if rid else ""
        return printable(super().formatMessage(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line; request lines carry method, path, status and duration as fields."""

    FIELDS = ("request_id", "method", "path", "status", "duration_ms", "endpoint", "client")

    def format(self, record):
        out = {"time": isoz(datetime.fromtimestamp(record.created, timezone.utc)), "level": record.levelname,
               "logger": record.name, "message": record.getMessage()}
        for field in self.FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                out[field] = value
        if "request_id" not in out and (rid := _current_request_id()):
            out["request_id"] = rid
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a record is emitted, not when the app was made."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def configure(settings):
    """Send every log record to stderr in LOG_FORMAT (text or json) at LOG_LEVEL; idempotent."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "gpufs", False)]:
        root.removeHandler(handler)
    handler = _StderrHandler()
    handler.gpufs = True
    handler.setFormatter(JsonFormatter() if settings["LOG_FORMAT"] == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(settings["LOG_LEVEL"])


def install(app):
    """Request ids, the per-request log line and the request metrics, for the standalone app."""
    pool = app.extensions["gpufs"].pool
    metrics.observe_pool(pool)  # each gunicorn worker publishes its pool size as it boots
    pool.on_change = metrics.pool_changed

    def _start():
        g.gpufs_started = time.perf_counter()
        g.gpufs_request_id = request_id_from(request.headers.get("X-Request-ID"))

    # First of all before_request functions: a request refused by an earlier one (401 from the
    # token check) is still timed, and still logged under the caller's request id.
    app.before_request_funcs.setdefault(None, []).insert(0, _start)

    @app.after_request
    def _finish(response):
        started = g.get("gpufs_started", time.perf_counter())
        rid = g.get("gpufs_request_id") or request_id_from(None)
        response.headers["X-Request-ID"] = rid
        query = request.query_string.decode("latin-1")
        line = {"request_id": rid, "method": request.method,
                "path": request.path + ("?" + query if query else ""),
                "endpoint": request.url_rule.rule if request.url_rule else metrics.UNMATCHED,
                "client": client_address()}

        # Logged when the last byte is sent, so a streamed answer is timed whole.
        def done():
            seconds = time.perf_counter() - started
            status = response.status_code
            metrics.observe_request(line["endpoint"], line["method"], status, seconds)
            request_log.info("%s %s %s %.1fms %s", line["method"], printable(line["path"]), status,
                             seconds * 1000, line["client"],
                             extra={**line, "status": status, "duration_ms": round(seconds * 1000, 3)})

        response.call_on_close(done)
        # A passed-through file (the docs page's assets) would be handed to the server without
        # the response's close hooks: send it through werkzeug's closing iterator instead.
        response.direct_passthrough = False
        return response
