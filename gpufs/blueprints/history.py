"""Per-GPU history under /api/user: device_history (contract section 8)."""
from .. import history, schemas
from ..auth import authorize_user
from ..cache import client_scope
from ..db import get_db
from ..errors import NotFound
from . import Cached, cfg, endpoint, now
from .user import bp


@bp.get("/device_history")
@endpoint("One client's per-GPU history: a point per GPU and non-empty bucket of step seconds",
          query=schemas.DeviceHistoryQuery, data=schemas.DeviceHistory)
def device_history(args):
    authorize_user(args["user_id"])
    # The client's own scope, like client_device_detail: its reports make this miss, nobody else's.
    return Cached(client_scope(args["client_id"]), args, lambda: _history(args))


def _history(args):
    low, high = schemas.time_range(args)
    span = history.plan(low, high, args.get("step"), now(), cfg("GPU_HISTORY_RAW_DAYS"))
    devices = history.device_history(get_db(), args["user_id"], args["client_id"], args.get("device_index"), span)
    if devices is None:
        raise NotFound("client_id: no such client for this user")
    return {"client_id": args["client_id"], "start": span["time_from"], "end": span["time_to"],
            "step_seconds": span["step"], "devices": devices}
