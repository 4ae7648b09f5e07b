"""Per-GPU history under /api/user: device_history (contract section 8)."""
from datetime import datetime, timezone

from .. import history, schemas
from ..cache import client_scope
from ..db import get_db
from ..errors import NotFound
from . import cached_response, cfg, load_args
from .user import bp

history_in = schemas.DeviceHistoryQuery()
history_out = schemas.DeviceHistory()


@bp.get("/device_history")
def device_history():
    args = load_args(history_in)
    low, high = schemas.time_range(args)

    def produce():
        span = history.plan(low, high, args.get("step"), datetime.now(timezone.utc), cfg("GPU_HISTORY_RAW_DAYS"))
        devices = history.device_history(get_db(), args["user_id"], args["client_id"], args.get("device_index"),
                                         span)
        if devices is None:
            raise NotFound("client_id: no such client for this user")
        return history_out.dump({"client_id": args["client_id"], "start": span["time_from"],
                                 "end": span["time_to"], "step_seconds": span["step"], "devices": devices})

    # The client's own scope, like client_device_detail: its reports make this miss, nobody else's.
    return cached_response(client_scope(args["client_id"]), "device_history", dict(args), produce)
