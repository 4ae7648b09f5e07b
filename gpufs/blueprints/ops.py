"""Operational endpoints of the standalone server, at the root: /healthz, /readyz, /metrics and
/metrics/fleet.

create_app registers them; init_app does not, so a host app embedding the API keeps its own.
"""
import logging

from flask import Blueprint, Response, current_app, request

from .. import auth, metrics
from .. import fleet_metrics as fleet
from ..db import DOWN_ERRORS
from ..envelope import respond
from ..errors import Invalid, Unavailable
from ..ext import state

bp = Blueprint("gpufs_ops", __name__)
log = logging.getLogger("gpufs.ops")


@bp.get("/healthz")
def healthz():
    """The process answers; no I/O, so a slow database never gets a live server restarted."""
    return respond({"status": "ok"})


@bp.get("/readyz")
def readyz():
    """Ready when PostgreSQL answers; Redis is reported but, being only a cache, never decides."""
    checks = {"database": database_state(), "redis": state().cache.ping()}
    if checks["database"] != "ok":
        return respond(checks, 503, "not ready: database unreachable")
    return respond(checks)


@bp.get("/metrics")
def prometheus_metrics():
    metrics.observe_pool(state().pool)
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)


@bp.get("/metrics/fleet")
def fleet_metrics():
    """The fleet in dcgm-exporter's names (contract section 11). Token mode: an admin key sees every
    user, a user key its own; `?user_id=` narrows."""
    if state().config["AUTH_MODE"] == "token":
        auth.authenticate()  # outside /api/, so the API's guard did not run
    user_id = request.args.get("user_id")
    if user_id is not None and not 1 <= len(user_id) <= 32:
        raise Invalid("user_id: must be 1-32 characters")
    auth.authorize_user(user_id)
    who = auth.identity()
    if who is not None and not who.admin:
        user_id = who.user_id  # a user key sees its own user's fleet, never everyone's
    body, content_type = fleet.exposition(current_app, user_id)
    return Response(body, content_type=content_type)


def database_state():
    """"ok" or "down". A pooled connection may be stale after a PostgreSQL restart: one retry
    on a fresh connection (bounded by DB_CONNECT_TIMEOUT) tells a restart from an outage."""
    pool = state().pool
    for _attempt in range(2):
        try:
            conn = pool.getconn()
        except Unavailable as err:
            log.warning("readiness: %s", err.message)
            return "down"
        broken = False
        try:
            with conn.cursor() as cur:
                cur.execute("select 1")
            return "ok"
        except DOWN_ERRORS as err:
            broken = True
            log.warning("readiness: database unreachable: %s", str(err).strip())
        finally:
            pool.putconn(conn, broken)
    return "down"
