"""marshmallow schemas of the alert endpoints: their query strings and bodies in, alerts and settings out."""
from marshmallow import Schema, ValidationError, fields, validates_schema

from ..schemas import Base, ClientId, Enum, StrictInt, Text, Time, _DateRange, user_id

STATES = ("firing", "resolved", "all")
URL_FIELDS = ("webhook_url", "alertmanager_url")
THRESHOLD_FIELDS = ("offline_minutes", "temp_c", "for_minutes", "disk_percent")


class AlertsQuery(_DateRange):
    user_id = user_id()
    state = Enum(STATES, load_default="firing")
    client_id = ClientId()


class AlertSettingsQuery(Base):
    user_id = user_id()


class SaveAlertSettings(Base):
    """A partial update: only the fields given change; a URL given as null is cleared."""

    user_id = user_id()
    offline_minutes = StrictInt(1, 1440)
    temp_c = StrictInt(30, 150)
    for_minutes = StrictInt(1, 1440)
    disk_percent = StrictInt(50, 100)
    webhook_url = Text(1, 2048, allow_none=True)
    alertmanager_url = Text(1, 2048, allow_none=True)

    @validates_schema
    def _something_to_change(self, data, **kwargs):
        if not any(k in data for k in THRESHOLD_FIELDS + URL_FIELDS):
            raise ValidationError("at least one of " + ", ".join(THRESHOLD_FIELDS + URL_FIELDS) + " is required")


class AlertItem(Schema):
    alert_id = fields.Integer()
    client_id = ClientId()
    client_name = fields.String(allow_none=True, metadata={"description": "null once the client is deleted"})
    condition = fields.String(metadata={"enum": ["offline", "gpu_hot", "error_status", "disk_full"]})
    device_index = fields.Integer(allow_none=True, metadata={"description": "the GPU, for gpu_hot only"})
    state = fields.String(metadata={"enum": ["firing", "resolved"]})
    starts_at = Time()
    ends_at = Time(allow_none=True)
    value = fields.Float(allow_none=True)
    threshold = fields.Float(allow_none=True)
    message = fields.String()


class AlertSettings(Schema):
    user_id = fields.String()
    offline_minutes = fields.Integer()
    temp_c = fields.Integer()
    for_minutes = fields.Integer()
    disk_percent = fields.Integer()
    webhook_url = fields.String(allow_none=True)
    alertmanager_url = fields.String(allow_none=True)
