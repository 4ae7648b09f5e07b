"""Client registry under /api/user: insert_client, edit_client_info, client_list,
client_status_list and client_device_detail (monitoring views live in monitor.py)."""
from flask import Blueprint

from .. import schemas
from ..cache import client_scope, user_scope
from ..db import all_rows, dumped_rows, get_db, one_row, queries, state
from ..envelope import respond
from ..errors import Conflict, NotFound
from . import cached_response, cfg, load_args, load_json

bp = Blueprint("gpufs_user", __name__)

insert_in = schemas.InsertClient()
edit_in = schemas.EditClient()
list_in = schemas.ClientListQuery()
detail_in = schemas.ClientDetailQuery()
item_out = schemas.Shape(schemas.ClientItem(many=True))  # client_list's devices (schemas.ClientList)
system_out = schemas.Shape(schemas.SystemInfo())  # client_device_detail's parts (schemas.ClientDetail)
device_out = schemas.Shape(schemas.DeviceInfo(many=True))


@bp.post("/insert_client")
def insert_client():
    data = load_json(insert_in)
    with get_db():
        row = one_row(queries.insert_client, user_id=data["user_id"], client_id=data["client_id"],
                      client_name=data["name"], client_status=data["client_status"],
                      os_type=data.get("os_type"))
    if row is None:
        raise Conflict("client_id: already registered to another user")
    state().cache.invalidate(user_scope(data["user_id"]), client_scope(data["client_id"]))
    return respond([])


@bp.post("/edit_client_info")
def edit_client_info():
    data = load_json(edit_in)
    with get_db():
        row = one_row(queries.edit_client, user_id=data["user_id"], client_id=data["client_id"],
                      os_type=data.get("os_type"), client_name=data.get("name"),
                      client_status=data.get("client_status"), valid_status=data.get("valid_status"))
    if row is None:
        raise NotFound("client_id: no such client for this user")
    state().cache.invalidate(user_scope(data["user_id"]), client_scope(data["client_id"]))
    return respond(None)


def _client_list(live):
    args = load_args(list_in)

    def produce():
        devices = dumped_rows(queries.client_list, item_out, user_id=args["user_id"],
                              client_id=args.get("client_id"), status=args.get("status"), name=args.get("name"),
                              valid_status=args.get("valid_status"), live=live,
                              window_seconds=cfg("ONLINE_WINDOW_SECONDS"),
                              interval=cfg("HEARTBEAT_INTERVAL_SECONDS"))
        return {"total": len(devices), "devices": devices}

    name = "client_status_list" if live else "client_list"
    return cached_response(user_scope(args["user_id"]), name, dict(args), produce, live=live)


@bp.get("/client_list")
def client_list():
    return _client_list(live=False)


@bp.get("/client_status_list")
def client_status_list():
    return _client_list(live=True)


@bp.get("/client_device_detail")
def client_device_detail():
    args = load_args(detail_in)

    def produce():
        rows = all_rows(queries.client_detail, user_id=args["user_id"], client_id=args["client_id"],
                        interval=cfg("HEARTBEAT_INTERVAL_SECONDS"))
        if not rows:
            raise NotFound("client_id: no such client for this user")
        # The snapshot on every row, a GPU per row (none on the one row of a client without GPUs).
        return {"system_info": system_out.dump(rows[0]),
                "device_info": device_out.dump([row for row in rows if row["device_index"] is not None])}

    # The client's own scope: the rest of the fleet reporting does not make this page miss.
    return cached_response(client_scope(args["client_id"]), "client_device_detail", {"user_id": args["user_id"]},
                           produce)
