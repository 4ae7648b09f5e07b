"""Alerts under /api/user: alerts, alert_settings and save_alert_settings (contract section 10)."""
from datetime import datetime, timezone

from .. import schemas
from ..alerts import DEFAULTS, targets
from ..auth import authorize_user, identity
from ..db import get_db, queries
from ..errors import Forbidden, Invalid
from . import cfg, endpoint
from .user import bp


@bp.get("/alerts")
@endpoint("The user's alerts, newest first: firing by default, resolved or all", query=schemas.AlertsQuery,
          data=schemas.AlertItem, many=True)
def alerts(args):
    authorize_user(args["user_id"])
    low, high = schemas.time_range(args)
    return list(queries.alerts(get_db(), user_id=args["user_id"], client_id=args.get("client_id"),
                               state=None if args["state"] == "all" else args["state"], time_from=low, time_to=high))


@bp.get("/alert_settings")
@endpoint("The user's alert thresholds and notification targets (the defaults where unset)",
          query=schemas.AlertSettingsQuery, data=schemas.AlertSettings)
def alert_settings(args):
    authorize_user(args["user_id"])
    return queries.alert_settings(get_db(), user_id=args["user_id"], **DEFAULTS)


@bp.post("/alert_settings")
@endpoint("Change some of the user's alert thresholds or targets (null clears a URL); answers the settings",
          body=schemas.SaveAlertSettings, data=schemas.AlertSettings)
def save_alert_settings(data):
    authorize_user(data["user_id"])
    _check_urls(data)
    with get_db() as conn:
        queries.save_alert_settings(
            conn, user_id=data["user_id"], **{k: data.get(k) for k in schemas.ALERT_THRESHOLD_FIELDS},
            webhook_url=data.get("webhook_url"), set_webhook="webhook_url" in data,
            alertmanager_url=data.get("alertmanager_url"), set_alertmanager="alertmanager_url" in data,
            now=datetime.now(timezone.utc))
    return queries.alert_settings(get_db(), user_id=data["user_id"], **DEFAULTS)


def _check_urls(data):
    """A URL makes the server call out: in token mode only an admin key sets one (clearing is
    anyone's), and never to an address the server refuses to call."""
    given = [field for field in schemas.ALERT_URL_FIELDS if data.get(field) is not None]
    who = identity()
    if given and who is not None and not who.admin:
        raise Forbidden(f"{given[0]}: only an admin key may set a URL")
    for field in given:
        try:
            targets.check(data[field], cfg("ALERT_ALLOW_PRIVATE_TARGETS"))
        except targets.Refused as err:
            raise Invalid(f"{field}: {err}") from err
