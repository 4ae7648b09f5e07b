"""Alerts under /api/user: alerts, alert_settings and save_alert_settings (contract section 10)."""
from datetime import datetime, timezone

from .. import schemas
from ..alerts import DEFAULTS, targets
from ..alerts import schemas as alert_schemas
from ..auth import identity
from ..db import get_db, queries
from ..envelope import respond
from ..errors import Forbidden, Invalid
from . import cfg, load_args, load_json
from .user import bp

alerts_in = alert_schemas.AlertsQuery()
settings_in = alert_schemas.AlertSettingsQuery()
save_in = alert_schemas.SaveAlertSettings()
alerts_out = alert_schemas.AlertItem(many=True)
settings_out = alert_schemas.AlertSettings()


@bp.get("/alerts")
def alerts():
    args = load_args(alerts_in)
    low, high = schemas.time_range(args)
    rows = queries.alerts(get_db(), user_id=args["user_id"], client_id=args.get("client_id"),
                               state=None if args["state"] == "all" else args["state"], time_from=low, time_to=high)
    return respond(alerts_out.dump(list(rows)))


@bp.get("/alert_settings")
def alert_settings():
    args = load_args(settings_in)
    return respond(settings_out.dump(queries.alert_settings(get_db(), user_id=args["user_id"], **DEFAULTS)))


@bp.post("/alert_settings")
def save_alert_settings():
    data = load_json(save_in)
    _check_urls(data)
    conn = get_db()
    with conn:
        queries.save_alert_settings(
            conn, user_id=data["user_id"], **{k: data.get(k) for k in alert_schemas.THRESHOLD_FIELDS},
            webhook_url=data.get("webhook_url"), set_webhook="webhook_url" in data,
            alertmanager_url=data.get("alertmanager_url"), set_alertmanager="alertmanager_url" in data,
            now=datetime.now(timezone.utc))
    return respond(settings_out.dump(queries.alert_settings(conn, user_id=data["user_id"], **DEFAULTS)))


def _check_urls(data):
    """A URL makes the server call out: in token mode only an admin key sets one (clearing is
    anyone's), and never to an address the server refuses to call."""
    given = [field for field in alert_schemas.URL_FIELDS if data.get(field) is not None]
    who = identity()
    if given and who is not None and not who.admin:
        raise Forbidden(f"{given[0]}: only an admin key may set a URL")
    for field in given:
        try:
            targets.check(data[field], cfg("ALERT_ALLOW_PRIVATE_TARGETS"))
        except targets.Refused as err:
            raise Invalid(f"{field}: {err}") from err
