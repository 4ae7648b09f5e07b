"""Fleet monitoring under /api/user: client_stat, client_monitor and client_health."""
import uuid
from datetime import timedelta

from flask import Response, stream_with_context

from .. import schemas
from ..cache import client_scope, user_scope
from ..db import dumped_rows, get_db, one_row, queries
from ..envelope import OK_MESSAGE, dumps, envelope_bytes
from . import cached_response, cfg, load_args
from .user import bp

stat_in = schemas.UserQuery()
monitor_in = schemas.MonitorQuery()
health_in = schemas.HealthQuery()
stat_out = schemas.Shape(schemas.ClientStat())
monitor_out = schemas.Shape(schemas.MonitorRow(many=True))
health_out = schemas.Shape(schemas.HealthRow(many=True))
STREAM_CHUNK = 2000
STREAM_SLICE_ROWS = 20_000


@bp.get("/client_stat")
def client_stat():
    args = load_args(stat_in)

    def produce():
        row = one_row(queries.client_stat, user_id=args["user_id"],
                      window_seconds=cfg("ONLINE_WINDOW_SECONDS"),
                      interval=cfg("HEARTBEAT_INTERVAL_SECONDS"), temp_warning=cfg("TEMP_WARNING_C"))
        return stat_out.dump(row)

    # Online and warning counts change with the clock alone, hence the live (short) TTL.
    return cached_response(user_scope(args["user_id"]), "client_stat", {}, produce, live=True)


@bp.get("/client_monitor")
def client_monitor():
    args = load_args(monitor_in)
    low, high = schemas.time_range(args)

    def produce():
        return dumped_rows(queries.client_monitor, monitor_out, user_id=args["user_id"],
                           client_id=args.get("client_id"), date_from=low and low.date(),
                           date_to=high and _last_day(high))

    # One client's rows change with that client's writes only (see gpufs/cache.py).
    scope = client_scope(args["client_id"]) if args.get("client_id") else user_scope(args["user_id"])
    return cached_response(scope, "client_monitor", dict(args), produce)


def _last_day(exclusive_end):
    return (exclusive_end - timedelta(microseconds=1)).date()


@bp.get("/client_health")
def client_health():
    args = load_args(health_in)
    low, high = schemas.time_range(args)
    params = {"user_id": args["user_id"], "client_id": args.get("client_id"), "time_from": low,
              "time_to": high, "before": args.get("before"), "limit": args.get("limit")}
    if args.get("limit"):
        return Response(envelope_bytes(True, dumped_rows(queries.client_health, health_out, **params), OK_MESSAGE),
                        mimetype="application/json")
    return Response(stream_with_context(_stream_health(params)), mimetype="application/json")


def _stream_health(params):
    """Every matching heartbeat as one envelope, newest first, written in chunks: memory stays flat.

    The rows are read in slices of time, newest slice first, each sorted on its own: sorting the
    whole history before the first row took 6-7 s for 5 million rows. A slice's width follows the
    rows the last one held, aiming at STREAM_SLICE_ROWS."""
    head, tail = envelope_bytes(True, b"[]", OK_MESSAGE).split(b"[]", 1)
    # Server-side cursors: rows arrive STREAM_CHUNK at a time instead of all at once. They live in
    # a transaction, so this connection leaves autocommit (the pool restores it when it is returned).
    conn = get_db()
    conn.autocommit = False
    with conn:
        with conn.cursor() as cur:
            # One snapshot for every slice, as one statement would have.
            cur.execute("set transaction isolation level repeatable read")
            cur.execute(queries.client_health_span.sql, params)  # psycopg2 ignores the extra `limit`
            span = cur.fetchone()
        yield head + b"["
        first = True
        upper, width = span["newest"], timedelta(hours=1)
        if upper is not None:
            upper += timedelta(microseconds=1)  # the slices' upper bounds are exclusive
        while upper is not None and upper > span["oldest"]:
            lower = max(upper - width, span["oldest"])
            count = 0
            with conn.cursor(f"client_health_{uuid.uuid4().hex}").for_output() as cur:
                cur.itersize = STREAM_CHUNK
                cur.execute(queries.client_health.sql, {**params, "time_from": lower, "time_to": upper})
                while rows := cur.tuples(STREAM_CHUNK):
                    # One orjson call per chunk: the list's brackets are cut off, the rows joined by commas.
                    chunk = dumps(list(map(health_out.plan(cur.description), rows)))[1:-1]
                    yield chunk if first else b"," + chunk
                    first = False
                    count += len(rows)
            upper = lower
            # Never zero wide (a timedelta rounds to microseconds): the loop must move on.
            width = max(width * min(4.0, max(0.25, STREAM_SLICE_ROWS / max(count, 1))), timedelta(milliseconds=1))
    yield b"]" + tail
