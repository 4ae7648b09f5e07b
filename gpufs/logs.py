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

from flask import has_request_context, request
from werkzeug.wsgi import ClosingIterator

from . import metrics
from .envelope import isoz

request_log = logging.getLogger("gpufs.request")
SANE_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")  # visible ASCII: no space, no control character
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
REQUEST_ID = "gpufs.request_id"  # the WSGI environ key of the request's id


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
    return request.environ.get(REQUEST_ID) if has_request_context() else None


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
    app.wsgi_app = RequestLog(app.wsgi_app)


class RequestLog:
    """WSGI middleware around the Flask app: gives each request its id, and once its last byte is
    sent (so a streamed answer is timed whole) counts it and writes its log line. Around the app
    rather than in Flask's hooks it sees every answer, a 401 from the token check included, and it
    reads the WSGI environ itself: the hooks' lookups through Flask's request and g proxies cost
    about as much as the rest of /healthz."""

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        rid = environ[REQUEST_ID] = request_id_from(environ.get("HTTP_X_REQUEST_ID"))
        answer = []  # [status, endpoint] once the app starts its response

        def start(status, headers, exc_info=None):
            # Flask starts the response while its request context is still pushed.
            rule = request.url_rule if has_request_context() else None
            answer[:] = (int(status[:3]), rule.rule if rule else metrics.UNMATCHED)
            headers.append(("X-Request-ID", rid))
            return start_response(status, headers, exc_info)

        try:
            body = self.wsgi_app(environ, start)
        except BaseException:
            _done(environ, started, answer)
            raise
        return ClosingIterator(body, lambda: _done(environ, started, answer))


def _done(environ, started, answer):
    seconds = time.perf_counter() - started
    status, endpoint = answer or (500, metrics.UNMATCHED)  # the app raised before answering
    method = environ.get("REQUEST_METHOD", "")
    metrics.observe_request(endpoint, method, status, seconds)
    if not request_log.isEnabledFor(logging.INFO):
        return
    query = environ.get("QUERY_STRING", "")
    # What werkzeug makes of PATH_INFO (latin-1 text of the raw bytes) for request.path.
    path = "/" + environ.get("PATH_INFO", "").encode("latin-1").decode(errors="replace").lstrip("/")
    line = {"request_id": environ[REQUEST_ID], "method": method, "path": path + ("?" + query if query else ""),
            "endpoint": endpoint, "client": client_address(environ), "status": status,
            "duration_ms": round(seconds * 1000, 3)}
    # The record made directly: Logger.info would walk the stack for a file and line no format
    # prints, a fifth of the line's cost.
    request_log.handle(request_log.makeRecord(
        request_log.name, logging.INFO, "", 0, "%s %s %s %.1fms %s",
        (method, printable(line["path"]), status, seconds * 1000, line["client"]), None, extra=line))
