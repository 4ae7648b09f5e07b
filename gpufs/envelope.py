"""The one response shape: {success, data, message, timestamp}, and the one time format."""
from datetime import date, datetime, timezone

import orjson
from flask import Response

OK_MESSAGE = "Operation successful"


def isoz(value):
    """The one time format: UTC ISO 8601 with microseconds and Z; naive values are UTC (upstream
    `timestamp` columns)."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value.isoformat(timespec="microseconds") + "Z"


def _default(value):
    if isinstance(value, datetime):
        return isoz(value)
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def dumps(value):
    return orjson.dumps(value, default=_default, option=orjson.OPT_PASSTHROUGH_DATETIME)


def envelope_bytes(success, data, message):
    """Serialize an envelope; `data` may be pre-serialized JSON bytes (a cache hit)."""
    now = isoz(datetime.now(timezone.utc))
    if isinstance(data, bytes):
        return b'{"success":%s,"data":%s,"message":%s,"timestamp":"%s"}' % (
            b"true" if success else b"false", data, dumps(message), now.encode())
    return dumps({"success": success, "data": data, "message": message, "timestamp": now})


def respond(data=None, status=200, message=OK_MESSAGE, headers=None):
    body = envelope_bytes(status < 400, data, message)
    return Response(body, status=status, mimetype="application/json", headers=headers)
