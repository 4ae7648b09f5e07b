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


def client_address(environ):
    """The caller's address: nginx's last X-Forwarded-For hop when nginx (on loopback) sent the
    request, else the peer itself. A header from anyone else is not believed."""
    peer = environ.get("REMOTE_ADDR") or "-"
    forwarded = environ.get("HTTP_X_FORWARDED_FOR")
    if forwarded and peer in ("127.0.0.1", "::1"):
        return printable(forwarded.rsplit(",", 1)[-1].strip())[:64] or peer
    return peer


def _current_request_id():
    return g.get("request_id") if has_request_context() else None


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
    """Request ids, the per-request log line and the request metrics, through Flask's hooks.

    Install it before anything else registers a before_request hook (create_app does), so the
    request is timed and given its id before the token check can refuse it; Flask still runs
    the after_request hooks for that 401, a 404 or an error page."""
    app.before_request(_begin)
    app.after_request(_answered)
    app.teardown_request(_raised)


def _begin():
    g.request_id = request_id_from(request.headers.get("X-Request-ID"))
    g.request_started = time.perf_counter()


def _answered(response):
    line = _line(response.status_code)
    response.headers["X-Request-ID"] = line["request_id"]
    g.request_logged = True
    if response.is_streamed and not response.direct_passthrough:
        # A generated answer (client_health) is timed whole: logged once its last byte is sent.
        response.call_on_close(lambda: _done(line))
    else:
        # A body in memory, or a file the server sends itself (which never closes the response).
        _done(line)
    return response


def _raised(exc):
    # An exception Flask hands to the WSGI server (PROPAGATE_EXCEPTIONS) skips after_request.
    if exc is not None and not g.get("request_logged"):
        _done(_line(500))


def _line(status):
    if "request_id" not in g:  # a host's earlier before_request refused the request before _begin ran
        _begin()
    rule = request.url_rule
    query = request.environ.get("QUERY_STRING", "")
    return {"request_id": g.request_id, "method": request.method, "path": request.path + ("?" + query if query else ""),
            "endpoint": rule.rule if rule else metrics.UNMATCHED, "client": client_address(request.environ),
            "status": status, "started": g.request_started}


def _done(line):
    seconds = time.perf_counter() - line.pop("started")
    metrics.observe_request(line["endpoint"], line["method"], line["status"], seconds)
    line["duration_ms"] = round(seconds * 1000, 3)
    request_log.info("%s %s %s %.1fms %s", line["method"], printable(line["path"]), line["status"],
                     seconds * 1000, line["client"], extra=line)
