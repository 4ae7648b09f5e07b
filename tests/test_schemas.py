"""The output dump (marshmallow's, of the rows as psycopg2 gives them) and the one time format."""
import random
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from marshmallow import ValidationError

from gpufs import schemas
from gpufs.db import get_db
from gpufs.envelope import dumps, isoz


def test_the_dump_writes_each_field_in_its_own_type_whatever_the_column_type(app):
    class Sums(schemas.Schema):
        total = schemas.fields.Integer()
        rate = schemas.fields.Float()
        seen = schemas.Time()

    # Columns in another order than the schema, one more than it has, numbers of other types.
    sql = "select 2::int as rate, 'x' as extra, 7::numeric as total, timestamptz '2026-11-28 09:05:07+01' as seen"
    with app.app_context(), get_db().cursor() as cur:
        cur.execute(sql)
        # Bytes, not ==: an integer field must not come out as 7.0, nor a float one as 2.
        assert dumps(Sums(many=True).dump(cur.fetchall())) == \
            b'[{"total":7,"rate":2.0,"seen":"2026-11-28T08:05:07.000000Z"}]'


def test_time_columns_in_any_session_zone_come_out_in_the_one_format(app):
    with app.app_context():
        conn = get_db()
        for zone in ("UTC", "Asia/Kolkata"):
            with conn.cursor() as cur:
                cur.execute("set time zone %s", (zone,))
                cur.execute("select timestamptz '2026-11-28 09:05:07.5+00' as t, timestamp '0001-01-02 00:00:00' as n")
                row = cur.fetchone()
            assert (isoz(row["t"]), isoz(row["n"])) == ("2026-11-28T09:05:07.500000Z", "0001-01-02T00:00:00.000000Z")
        with conn.cursor() as cur:
            cur.execute("set time zone 'UTC'")


@pytest.mark.parametrize(("value", "text"), [
    (datetime(2026, 11, 28, 9, 5, 7), "2026-11-28T09:05:07.000000Z"),  # naive: UTC wall time
    (datetime(2026, 11, 28, 9, 5, 7, 42, tzinfo=timezone.utc), "2026-11-28T09:05:07.000042Z"),
    (datetime(2026, 11, 28, 1, 0, tzinfo=timezone(timedelta(hours=-8))), "2026-11-28T09:00:00.000000Z"),
    (datetime(1, 1, 1), "0001-01-01T00:00:00.000000Z"),
])
def test_every_time_is_utc_with_microseconds_and_z(value, text):
    assert isoz(value) == text


def test_time_format_agrees_with_a_plain_formatting_of_many_values():
    rnd = random.Random(8)
    zones = [None, timezone.utc, timezone(timedelta(0)), timezone(timedelta(hours=5, minutes=30)),
             timezone(timedelta(hours=-8)), ZoneInfo("UTC"), ZoneInfo("Europe/Berlin")]
    for _ in range(5000):
        value = datetime(rnd.randint(2, 9998), rnd.randint(1, 12), rnd.randint(1, 28), rnd.randint(0, 23),
                         rnd.randint(0, 59), rnd.randint(0, 59), rnd.choice([0, rnd.randint(0, 999_999)]),
                         tzinfo=rnd.choice(zones))
        u = value if value.tzinfo is None else value.astimezone(timezone.utc)
        expected = (f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}"
                    f".{u.microsecond:06d}Z")
        assert isoz(value) == expected, repr(value)


def test_report_load_refuses_with_a_message_naming_the_field():
    load = schemas.Report().load
    bad = {"client_id": "0" * 32, "system": {"cpu_usage": 101, "memory_usage": 1, "disk_usage": 1,
                                             "network_rx": 1, "network_tx": 1},
           "devices": [{"index": 0, "name": "a", "temp": 1, "usage": 1, "mem_usage": 1, "power_usage": 1}] * 2}
    with pytest.raises(ValidationError) as err:
        load(bad)
    assert err.value.messages == {"system": {"cpu_usage": ["must be between 0 and 100"]}}
