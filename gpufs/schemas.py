"""marshmallow schemas: every request body and query string in, every response item out."""
import numbers
import re
from datetime import datetime, time, timedelta, timezone

import orjson
from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, validate, validates_schema

from .envelope import isoz

CLIENT_STATUSES = ("active", "online", "offline", "maintenance", "error")
VALID_STATUSES = ("valid", "invalid")
# Matched whole (fullmatch: `$` alone would let a trailing newline through), ASCII only.
HEX32 = re.compile(r"^[0-9a-fA-F]{32}$")
CHECKSUM = re.compile(r"^(sha256:)?[0-9a-fA-F]{64}$")
QUERY_INT = re.compile(r"[ \t]*[+-]?[0-9]{1,19}[ \t]*")
DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
REPORT_FUTURE_LIMIT = timedelta(minutes=5)
REPORT_EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)  # see docs/decisions.md

# Messages a curl user can act on; the handler prefixes each with its field name.
MESSAGES = {
    "required": "is required",
    "null": "may not be null",
    "invalid": "has the wrong type",
    "validator_failed": "is not a valid value",
}


def _messages(**extra):
    return {**MESSAGES, **extra}


class Base(Schema):
    class Meta:
        unknown = EXCLUDE  # unknown fields are ignored, per the contract


# ---- field types -------------------------------------------------------------------------

class Text(fields.String):
    """A JSON string (numbers are not coerced) with a length range; no NUL characters, which
    PostgreSQL text cannot hold."""

    def __init__(self, min_len=None, max_len=None, **kwargs):
        kwargs.setdefault("error_messages", _messages(invalid="must be a string",
                                                      nul="must not contain NUL characters"))
        if min_len is not None or max_len is not None:
            kwargs.setdefault("validate", _length(min_len, max_len))
        super().__init__(**kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        if "\x00" in text:
            raise self.make_error("nul")
        return text


def _length(lo, hi):
    if lo and hi:
        text = f"must be {lo}-{hi} characters"
    elif hi:
        text = f"must be at most {hi} characters"
    else:
        text = f"must be at least {lo} characters"
    return validate.Length(min=lo, max=hi, error=text)


class ClientId(fields.String):
    """32 hexadecimal characters, loaded as 16 bytes, dumped lower-case."""

    def __init__(self, **kwargs):
        kwargs.setdefault("error_messages", _messages(invalid="must be 32 hexadecimal characters"))
        super().__init__(**kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str) or not HEX32.fullmatch(value):
            raise self.make_error("invalid")
        return bytes.fromhex(value)

    def _serialize(self, value, attr, obj, **kwargs):
        return None if value is None else bytes(value).hex()


class Enum(fields.String):
    def __init__(self, choices, **kwargs):
        kwargs.setdefault("error_messages", _messages(invalid="must be a string"))
        kwargs["validate"] = validate.OneOf(choices, error="must be one of " + ", ".join(choices))
        super().__init__(**kwargs)


class StrictInt(fields.Integer):
    """A JSON integer: no strings, no booleans, no fractions."""

    def __init__(self, lo=None, hi=None, **kwargs):
        kwargs.setdefault("error_messages", _messages(invalid="must be an integer"))
        kwargs.setdefault("validate", _range(lo, hi))
        super().__init__(strict=True, **kwargs)

    def _validated(self, value):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise self.make_error("invalid")
        return value


class Number(fields.Float):
    """A JSON number (integer or fraction), never a string or boolean."""

    def __init__(self, lo=None, hi=None, **kwargs):
        kwargs.setdefault("error_messages", _messages(invalid="must be a number"))
        kwargs.setdefault("validate", _range(lo, hi))
        super().__init__(**kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != value:
            raise self.make_error("invalid")
        return float(value)


class FullMatch(validate.Regexp):
    """validate.Regexp matched against the whole value (it uses re.match), documented by its pattern."""

    def __call__(self, value):
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


def _range(lo, hi):
    if lo is None and hi is None:
        return None
    if lo is not None and hi is not None:
        text = f"must be between {lo} and {hi}"
    elif lo is not None:
        text = f"must be at least {lo}"
    else:
        text = f"must be at most {hi}"
    return validate.Range(min=lo, max=hi, error=text)


class StrictBool(fields.Boolean):
    """A JSON boolean: true or false, nothing else."""

    def __init__(self, **kwargs):
        kwargs.setdefault("error_messages", _messages(invalid="must be true or false"))
        super().__init__(**kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class QueryBool(fields.Boolean):
    """A query-string boolean: true/false/1/0, any case."""

    def __init__(self, **kwargs):
        kwargs.setdefault("error_messages", _messages(invalid="must be true, false, 1 or 0"))
        super().__init__(**kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        text = str(value).strip().lower()
        if text in ("true", "1"):
            return True
        if text in ("false", "0"):
            return False
        raise self.make_error("invalid")


class QueryInt(fields.Integer):
    def __init__(self, lo=None, hi=None, **kwargs):
        kwargs.setdefault("error_messages", _messages(invalid="must be an integer"))
        kwargs.setdefault("validate", _range(lo, hi))
        super().__init__(**kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if not QUERY_INT.fullmatch(str(value)):
            raise self.make_error("invalid")
        return int(value)


def parse_time(text, need_zone):
    """ISO 8601 date-time; a trailing Z is UTC. Returns an aware datetime or raises ValueError."""
    if not isinstance(text, str) or not text.isascii() or "T" not in text.upper() and " " not in text:
        raise ValueError
    value = datetime.fromisoformat(text.strip().replace("z", "Z").replace("Z", "+00:00"))
    if value.tzinfo is None:
        if need_zone:
            raise ValueError("zone")
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


class Instant(fields.Field):
    """An ISO 8601 time with Z or an offset (reports) — or, for queries, without (taken as UTC)."""

    def __init__(self, need_zone=True, **kwargs):
        msg = "must be an ISO 8601 time with Z or an offset" if need_zone else "must be an ISO 8601 time"
        kwargs.setdefault("error_messages", _messages(invalid=msg))
        self.need_zone = need_zone
        super().__init__(**kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        try:
            return parse_time(value, self.need_zone)
        except (ValueError, TypeError, OverflowError) as err:  # overflow: year 1 or 9999 shifted by an offset
            raise self.make_error("invalid") from err

    def _serialize(self, value, attr, obj, **kwargs):
        return isoz(value)


class DayOrInstant(fields.Field):
    """A UTC day YYYY-MM-DD (loaded as its midnight) or a full ISO 8601 time; returns (datetime, is_day)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("error_messages", _messages(invalid="must be a date YYYY-MM-DD or an ISO 8601 time"))
        super().__init__(**kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        text = str(value).strip()
        try:
            if DAY.fullmatch(text):
                day = datetime.strptime(text, "%Y-%m-%d").date()
                return datetime.combine(day, time.min, tzinfo=timezone.utc), True
            return parse_time(text, need_zone=False), False
        except (ValueError, TypeError, OverflowError) as err:
            raise self.make_error("invalid") from err


class Time(fields.Field):
    """Output: a time in the one format (UTC, microseconds, Z), null when absent."""

    def _serialize(self, value, attr, obj, **kwargs):
        return isoz(value)


# ---- requests: clients ---------------------------------------------------------------------

def user_id(max_len=32):
    return Text(1, max_len, required=True)


class InsertClient(Base):
    user_id = user_id()
    client_id = ClientId(required=True)
    client_status = Enum(CLIENT_STATUSES, required=True)
    os_type = Text(1, 64, allow_none=True)
    name = Text(1, 32, required=True)


class EditClient(Base):
    user_id = user_id(255)
    client_id = ClientId(required=True)
    os_type = Text(1, 50)
    name = Text(1, 255)
    client_status = Enum(CLIENT_STATUSES)
    valid_status = Enum(VALID_STATUSES)

    @validates_schema
    def _something_to_change(self, data, **kwargs):
        if not any(k in data for k in ("os_type", "name", "client_status", "valid_status")):
            raise ValidationError("at least one of os_type, name, client_status, valid_status is required")


class ClientListQuery(Base):
    user_id = user_id()
    client_id = ClientId()
    status = Enum(CLIENT_STATUSES)
    name = Text(0, 255)
    valid_status = Enum(VALID_STATUSES)


class ClientDetailQuery(Base):
    user_id = user_id()
    client_id = ClientId(required=True)
    status = Text()  # accepted and ignored, as published
    name = Text()


class UserQuery(Base):
    user_id = user_id()


class _DateRange(Base):
    start_date = DayOrInstant()
    end_date = DayOrInstant()

    @validates_schema
    def _ordered(self, data, **kwargs):
        start, end = data.get("start_date"), data.get("end_date")
        if start and end and start[0] > end[0]:
            raise ValidationError("must not be after end_date", "start_date")


def time_range(data):
    """(from inclusive, to exclusive) for a start_date/end_date pair; whole days are inclusive."""
    start, end = data.get("start_date"), data.get("end_date")
    low = start[0] if start else None
    try:
        high = None if end is None else end[0] + (timedelta(days=1) if end[1] else timedelta(microseconds=1))
    except OverflowError:  # the end of 9999-12-31: nothing is later, so no upper bound
        high = None
    return low, high


class MonitorQuery(_DateRange):
    user_id = user_id()
    client_id = ClientId()


class DeviceHistoryQuery(_DateRange):
    user_id = user_id()
    client_id = ClientId(required=True)
    device_index = QueryInt(0, 255)
    step = QueryInt(60, 86400)


class HealthQuery(_DateRange):
    user_id = user_id()
    client_id = ClientId()
    limit = QueryInt(1, 10000)
    before = Instant(need_zone=False)


# ---- requests: models ----------------------------------------------------------------------

class InsertModel(Base):
    name = Text(1, 100, required=True)
    version = Text(1, 50, required=True)
    version_code = StrictInt(1, INT64_MAX, required=True)
    engine_type = StrictInt(0, 32767, required=True)
    is_active = StrictBool()
    min_memory_mb = StrictInt(0, INT32_MAX, allow_none=True)
    min_gpu_memory_gb = StrictInt(0, INT32_MAX, allow_none=True)
    download_url = Text(1, 2048, allow_none=True, validate=[
        _length(1, 2048),
        validate.URL(schemes={"http", "https"}, require_tld=False, error="must be an http or https URL"),
    ])
    checksum = Text(allow_none=True, validate=FullMatch(
        CHECKSUM, "must be sha256: followed by 64 hexadecimal characters, or 64 hexadecimal characters"))
    expected_size = StrictInt(0, INT64_MAX, allow_none=True)


class ModelsQuery(Base):
    is_active = QueryBool()
    min_gpu_memory_gb = QueryInt(0, INT32_MAX)


# ---- requests: heartbeats ------------------------------------------------------------------

class Object(fields.Nested):
    """A nested JSON object; anything else is reported on the field itself ("system: must be an object")."""

    def __init__(self, nested, **kwargs):
        kwargs.setdefault("error_messages", _messages(type="must be an object"))
        super().__init__(nested, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, dict):
            raise self.make_error("type")
        return super()._deserialize(value, attr, data, **kwargs)


class SystemReport(Base):
    cpu_usage = Number(0, 100, required=True)
    memory_usage = Number(0, 100, required=True)
    disk_usage = Number(0, 100, required=True)
    network_rx = StrictInt(0, INT64_MAX, required=True)
    network_tx = StrictInt(0, INT64_MAX, required=True)


class ProcessReport(Base):
    pid = StrictInt(0, INT32_MAX, required=True)
    name = Text(0, 255, required=True)
    user = Text(0, 64, allow_none=True)
    used_memory_mb = StrictInt(0, INT32_MAX, allow_none=True)


class DeviceReport(Base):
    """A GPU of a report: the seed's six readings, then the optional ones (contract section 8),
    where absent or null means unknown and is stored as null, never 0."""

    index = StrictInt(0, 255, required=True)
    name = Text(0, 255, required=True)
    temp = Number(0, 150, required=True)
    usage = Number(0, 100, required=True)
    mem_usage = Number(0, 100, required=True)
    power_usage = Number(0, 10000, required=True)
    uuid = Text(1, 64, allow_none=True)
    fan_speed = Number(0, 100, allow_none=True)
    sm_clock_mhz = StrictInt(0, INT32_MAX, allow_none=True)
    mem_clock_mhz = StrictInt(0, INT32_MAX, allow_none=True)
    mem_total_mb = StrictInt(0, INT32_MAX, allow_none=True)
    mem_used_mb = StrictInt(0, INT32_MAX, allow_none=True)
    power_limit = Number(0, 10000, allow_none=True)
    ecc_uncorrected = StrictInt(0, INT64_MAX, allow_none=True)
    xid = StrictInt(0, INT32_MAX, allow_none=True)
    processes = fields.List(Object(ProcessReport), allow_none=True,
                            validate=validate.Length(max=64, error="must hold at most 64 processes"),
                            error_messages=_messages(invalid="must be a list"))


class Report(Base):
    """One heartbeat report (contract sections 5 and 7); `devices` omitted or null is a CPU-only machine."""

    error_messages = {"type": "must be a JSON object"}

    client_id = ClientId(required=True)
    timestamp = Instant(allow_none=True)
    system = Object(SystemReport, required=True)
    device_memsize = StrictInt(0, INT64_MAX, allow_none=True)
    total_tflops = Number(0, INT32_MAX, allow_none=True)
    devices = fields.List(Object(DeviceReport), load_default=list, allow_none=True,
                          error_messages=_messages(invalid="must be a list"))

    @validates_schema
    def _consistent(self, data, **kwargs):
        indexes = [d["index"] for d in data.get("devices") or []]
        if len(indexes) != len(set(indexes)):
            raise ValidationError("device index must be unique within a report", "devices")
        ts = data.get("timestamp")
        if ts is not None and ts > datetime.now(timezone.utc) + REPORT_FUTURE_LIMIT:
            raise ValidationError("must not be more than 5 minutes in the future", "timestamp")
        if ts is not None and ts < REPORT_EARLIEST:
            raise ValidationError("must not be before 2000-01-01", "timestamp")

    @post_load
    def _cpu_only(self, data, **kwargs):
        if data.get("devices") is None:
            data["devices"] = []
        return data


class ReportBatch(Base):
    reports = fields.List(fields.Raw(), required=True, validate=validate.Length(
        1, 1000, error="must hold 1-1000 reports"), error_messages=_messages(invalid="must be a list"))


# ---- responses -----------------------------------------------------------------------------

class ClientItem(Schema):
    client_id = ClientId()
    client_name = fields.String()
    client_status = fields.String()
    valid_status = fields.String()
    os_type = fields.String(allow_none=True)
    device_name = fields.String()
    tflops = fields.Integer()
    cpu_usage = fields.Integer()
    memory_usage = fields.Integer()
    storage_usage = fields.Integer()
    health = fields.Integer()
    last_online = Time(allow_none=True)
    created_at = Time()
    uptime_days = fields.Integer()


class ClientList(Schema):
    total = fields.Integer()
    devices = fields.List(fields.Nested(ClientItem))


class SystemInfo(Schema):
    health = fields.Integer()
    cpu_usage = fields.Integer()
    memory_usage = fields.Integer()
    storage_usage = fields.Integer()
    device_memsize = fields.Integer()
    uptime_days = fields.Integer()


class DeviceInfo(Schema):
    device_index = fields.Integer()
    name = fields.String()
    temp = fields.Integer()
    usage = fields.Integer()
    mem_usage = fields.Integer()
    power_usage = fields.Integer()
    uuid = fields.String(allow_none=True)
    fan_speed = fields.Integer(allow_none=True)
    sm_clock_mhz = fields.Integer(allow_none=True)
    mem_clock_mhz = fields.Integer(allow_none=True)
    mem_total_mb = fields.Integer(allow_none=True)
    mem_used_mb = fields.Integer(allow_none=True)
    power_limit = fields.Float(allow_none=True)
    ecc_uncorrected = fields.Integer(allow_none=True)
    xid = fields.Integer(allow_none=True)
    processes = fields.List(fields.Nested(ProcessReport), allow_none=True)


class ClientDetail(Schema):
    system_info = fields.Nested(SystemInfo)
    device_info = fields.List(fields.Nested(DeviceInfo))


class ClientStat(Schema):
    systems_total_number = fields.Integer()
    systems_online_number = fields.Integer()
    systems_maintenance_number = fields.Integer()
    systems_warnings_number = fields.Integer()
    total_tflops = fields.Integer()
    uptime_rate = fields.Integer()


class MonitorRow(Schema):
    client_id = ClientId()
    client_name = fields.String()
    created_at = Time()
    updated_at = Time()
    date = fields.Date(allow_none=True)
    avg_cpu_usage = fields.Float(allow_none=True)
    avg_memory_usage = fields.Float(allow_none=True)
    avg_disk_usage = fields.Float(allow_none=True)
    total_network_in_bytes = fields.Integer(allow_none=True)
    total_network_out_bytes = fields.Integer(allow_none=True)
    total_heartbeats = fields.Integer(allow_none=True)
    last_heartbeat = Time(allow_none=True)
    avg_network_in_bytes = fields.Float(allow_none=True)
    avg_network_out_bytes = fields.Float(allow_none=True)


class HealthRow(Schema):
    client_id = ClientId()
    client_name = fields.String()
    timestamp = Time()
    cpu_usage = fields.Integer()
    mem_usage = fields.Integer()
    disk_usage = fields.Integer()
    network_up = fields.Integer()
    network_down = fields.Integer()


class HistoryPoint(Schema):
    time = Time()
    samples = fields.Integer()
    temp = fields.Float()
    temp_max = fields.Float()
    usage = fields.Float()
    usage_max = fields.Float()
    mem_usage = fields.Float()
    power_usage = fields.Float()
    power_max = fields.Float()


class Points(fields.List):
    """A list of HistoryPoint; or that list already written as JSON (an orjson.Fragment), which goes
    into the answer as it is: PostgreSQL writes device_history's points (gpufs_history_point),
    because dumping thousands of them here took most of the request. tests/test_history_points.py
    holds the two to one answer."""

    def _serialize(self, value, attr, obj, **kwargs):
        if isinstance(value, orjson.Fragment):
            return value
        return super()._serialize(value, attr, obj, **kwargs)


class DeviceSeries(Schema):
    device_index = fields.Integer()
    name = fields.String(allow_none=True)
    uuid = fields.String(allow_none=True)
    points = Points(fields.Nested(HistoryPoint))


class DeviceHistory(Schema):
    client_id = ClientId()
    start = Time()
    end = Time()
    step_seconds = fields.Integer()
    devices = fields.List(fields.Nested(DeviceSeries))


class ModelItem(Schema):
    id = fields.Integer()
    name = fields.String()
    version = fields.String()
    version_code = fields.Integer()
    engine_type = fields.Integer()
    is_active = fields.Boolean()
    min_memory_mb = fields.Integer(allow_none=True)
    min_gpu_memory_gb = fields.Integer(allow_none=True)
    download_url = fields.String(allow_none=True)
    checksum = fields.String(allow_none=True)
    expected_size = fields.Integer(allow_none=True)
    created_at = Time()


class IngestResult(Schema):
    status = fields.String()
    counted = fields.Boolean()


class BatchItem(Schema):
    index = fields.Integer()
    status = fields.String()
    code = fields.Integer()
    message = fields.String()


class BatchResult(Schema):
    stored = fields.Integer()
    duplicates = fields.Integer()
    rejected = fields.Integer()
    results = fields.List(fields.Nested(BatchItem))


# ---- alerts (contract section 10) -------------------------------------------------------------

ALERT_STATES = ("firing", "resolved", "all")
ALERT_URL_FIELDS = ("webhook_url", "alertmanager_url")
ALERT_THRESHOLD_FIELDS = ("offline_minutes", "temp_c", "for_minutes", "disk_percent")


class AlertsQuery(_DateRange):
    user_id = user_id()
    state = Enum(ALERT_STATES, load_default="firing")
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
        fields_ = ALERT_THRESHOLD_FIELDS + ALERT_URL_FIELDS
        if not any(k in data for k in fields_):
            raise ValidationError("at least one of " + ", ".join(fields_) + " is required")


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
