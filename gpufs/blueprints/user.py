"""Client registry under /api/user: insert_client, edit_client_info, client_list,
client_status_list and client_device_detail (monitoring views live in monitor.py)."""
from flask import Blueprint

from .. import schemas
from ..auth import authorize_user
from ..cache import client_scope, user_scope
from ..db import get_db, queries
from ..errors import Conflict, NotFound
from ..ext import state
from ..openapi import EMPTY_LIST, NULL
from . import Cached, cfg, endpoint, now

bp = Blueprint("gpufs_user", __name__)


@bp.post("/insert_client")
@endpoint("Register a client, or update the caller's own (upsert by client_id)", body=schemas.InsertClient,
          data=EMPTY_LIST, conflict=True)
def insert_client(data):
    authorize_user(data["user_id"])
    with get_db() as conn:
        row = queries.insert_client(conn, user_id=data["user_id"], client_id=data["client_id"],
                                    client_name=data["name"], client_status=data["client_status"],
                                    os_type=data.get("os_type"))
    if row is None:
        raise Conflict("client_id: already registered to another user")
    state().cache.invalidate(user_scope(data["user_id"]), client_scope(data["client_id"]))
    return []


@bp.post("/edit_client_info")
@endpoint("Change a client's os_type, name, client_status or valid_status", body=schemas.EditClient, data=NULL)
def edit_client_info(data):
    authorize_user(data["user_id"])
    with get_db() as conn:
        row = queries.edit_client(conn, user_id=data["user_id"], client_id=data["client_id"],
                                  os_type=data.get("os_type"), client_name=data.get("name"),
                                  client_status=data.get("client_status"), valid_status=data.get("valid_status"))
    if row is None:
        raise NotFound("client_id: no such client for this user")
    state().cache.invalidate(user_scope(data["user_id"]), client_scope(data["client_id"]))


@bp.get("/client_list")
@endpoint("The user's clients with their latest figures (registered status)", query=schemas.ClientListQuery,
          data=schemas.ClientList)
def client_list(args):
    authorize_user(args["user_id"])
    return Cached(user_scope(args["user_id"]), args, lambda: _clients(args, live=False))


@bp.get("/client_status_list")
@endpoint("The user's clients with their live status: the view to poll", query=schemas.ClientListQuery,
          data=schemas.ClientList)
def client_status_list(args):
    authorize_user(args["user_id"])
    return Cached(user_scope(args["user_id"]), args, lambda: _clients(args, live=True), live=True)


def _clients(args, live):
    devices = list(queries.client_list(
        get_db(), user_id=args["user_id"], client_id=args.get("client_id"), status=args.get("status"),
        name=args.get("name"), valid_status=args.get("valid_status"), live=live, now=now(),
        window_seconds=cfg("ONLINE_WINDOW_SECONDS"), interval=cfg("HEARTBEAT_INTERVAL_SECONDS")))
    return {"total": len(devices), "devices": devices}


@bp.get("/client_device_detail")
@endpoint("One client's latest system report and GPUs", query=schemas.ClientDetailQuery,
          data=schemas.ClientDetail)
def client_device_detail(args):
    authorize_user(args["user_id"])
    # The client's own scope: the rest of the fleet reporting does not make this page miss.
    return Cached(client_scope(args["client_id"]), {"user_id": args["user_id"]}, lambda: _detail(args))


def _detail(args):
    rows = list(queries.client_detail(get_db(), user_id=args["user_id"], client_id=args["client_id"], now=now(),
                                      interval=cfg("HEARTBEAT_INTERVAL_SECONDS")))
    if not rows:
        raise NotFound("client_id: no such client for this user")
    # The snapshot on every row, a GPU per row (none on the one row of a client without GPUs).
    return {"system_info": rows[0], "device_info": [row for row in rows if row["device_index"] is not None]}
