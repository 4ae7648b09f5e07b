"""Fleet monitoring under /api/user: client_stat, client_monitor and client_health."""
import logging
import uuid
from datetime import timedelta

from flask import Response, stream_with_context
from prometheus_client import Counter

from .. import schemas
from ..auth import authorize_user
from ..cache import client_scope, user_scope
from ..db import get_db, queries
from ..envelope import OK_MESSAGE, dumps, envelope_bytes
from . import Cached, cfg, endpoint, now
from .user import bp

log = logging.getLogger("gpufs.monitor")
STREAM_FAILURES = Counter(
    "gpufs_stream_failures_total", "Streamed answers (client_health without limit) that failed after their headers "
    "were sent: the caller got a 200 with a body cut short.")
STREAM_CHUNK = 2000
STREAM_SLICE_ROWS = 20_000
health_rows = schemas.HealthRow(many=True)


@bp.get("/client_stat")
@endpoint("Fleet totals: online, maintenance, warnings, TFLOPS, yesterday's uptime", query=schemas.UserQuery,
          data=schemas.ClientStat)
def client_stat(args):
    authorize_user(args["user_id"])
    # Online and warning counts change with the clock alone, hence the live (short) TTL.
    return Cached(user_scope(args["user_id"]), {}, lambda: queries.client_stat(
        get_db(), user_id=args["user_id"], now=now(), window_seconds=cfg("ONLINE_WINDOW_SECONDS"),
        interval=cfg("HEARTBEAT_INTERVAL_SECONDS"), temp_warning=cfg("TEMP_WARNING_C")), live=True)


@bp.get("/client_monitor")
@endpoint("Daily rollups per client, newest day first", query=schemas.MonitorQuery, data=schemas.MonitorRow,
          many=True)
def client_monitor(args):
    authorize_user(args["user_id"])
    low, high = schemas.time_range(args)
    # One client's rows change with that client's writes only (see gpufs/cache.py).
    scope = client_scope(args["client_id"]) if args.get("client_id") else user_scope(args["user_id"])
    return Cached(scope, args, lambda: list(queries.client_monitor(
        get_db(), user_id=args["user_id"], client_id=args.get("client_id"), date_from=low and low.date(),
        date_to=high and (high - timedelta(microseconds=1)).date())))


@bp.get("/client_health")
@endpoint("Raw heartbeats, newest first; without `limit` every matching row, streamed",
          query=schemas.HealthQuery, data=schemas.HealthRow, many=True)
def client_health(args):
    authorize_user(args["user_id"])
    low, high = schemas.time_range(args)
    params = {"user_id": args["user_id"], "client_id": args.get("client_id"), "time_from": low,
              "time_to": high, "before": args.get("before")}
    if args.get("limit"):
        return list(queries.client_health(get_db(), **params, limit=args["limit"]))
    return Response(stream_with_context(_failures_seen(_stream_health(params))), mimetype="application/json")


def _failures_seen(chunks):
    """A stream's failure after its 200 went out cannot change the status: it is logged at error level
    (with the request id) and counted, then raised so the server cuts the connection rather than
    end the body as if it were whole."""
    try:
        yield from chunks
    except Exception:
        log.exception("client_health stream failed after its headers were sent")
        STREAM_FAILURES.inc()
        raise


def _stream_health(params):
    """Every matching heartbeat as one envelope, newest first, written in chunks: memory stays flat.

    The rows are read in slices of time, newest slice first, each sorted on its own: sorting the
    whole history before the first row took 6-7 s for 5 million rows. A slice's width follows the
    rows the last one held, aiming at STREAM_SLICE_ROWS."""
    head, tail = envelope_bytes(True, b"[]", OK_MESSAGE).split(b"[]", 1)
    conn = get_db()
    # One snapshot for every slice, as one statement would have: a repeatable-read transaction
    # (the pool puts the connection back in autocommit when it is returned).
    conn.autocommit = False
    with conn:
        queries.repeatable_read(conn)
        span = queries.client_health_span(conn, **params)
        yield head + b"["
        first = True
        upper, width = span["newest"], timedelta(hours=1)
        if upper is not None:
            upper += timedelta(microseconds=1)  # the slices' upper bounds are exclusive
        while upper is not None and upper > span["oldest"]:
            # Compared as a difference, never computed below the oldest: any stored time is safe.
            lower = span["oldest"] if upper - span["oldest"] <= width else upper - width
            count = 0
            # The one statement not run through its aiosql function: a server-side cursor (which
            # those functions do not open) hands the rows over STREAM_CHUNK at a time.
            with conn.cursor(f"client_health_{uuid.uuid4().hex}") as cur:
                cur.execute(queries.client_health.sql, {**params, "time_from": lower, "time_to": upper,
                                                        "limit": None})
                while rows := cur.fetchmany(STREAM_CHUNK):
                    # One orjson call per chunk: the list's brackets are cut off, the rows joined by commas.
                    chunk = dumps(health_rows.dump(rows))[1:-1]
                    yield chunk if first else b"," + chunk
                    first = False
                    count += len(rows)
            upper = lower
            # Never zero wide (a timedelta rounds to microseconds): the loop must move on.
            width = max(width * min(4.0, max(0.25, STREAM_SLICE_ROWS / max(count, 1))), timedelta(milliseconds=1))
    yield b"]" + tail
