"""schemas.Shape, the compiled dump the read views use, agrees with marshmallow's dump on real rows (as
dicts and straight from psycopg2's tuples); the one time format."""
import copy
import random
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from gpufs import schemas
from gpufs.db import all_rows, dumped_rows, get_db, one_row, queries
from gpufs.envelope import dumps, isoz

from .conftest import register


@pytest.fixture
def rows(app, client, db):
    cid = register(client)
    register(client, name="idle box")
    report = {"client_id": cid, "system": {"cpu_usage": 45.5, "memory_usage": 60, "disk_usage": 30,
                                           "network_rx": 1000, "network_tx": 2000},
              "device_memsize": 24576, "total_tflops": 83,
              "devices": [{"index": i, "name": f"GPU {i}", "temp": 70 + i, "usage": 50, "mem_usage": 40,
                           "power_usage": 300} for i in range(2)]}
    assert client.post("/api/client/heartbeat", json=report).status_code == 200
    client.post("/api/models/insert", json={"name": "m", "version": "1", "version_code": 1, "engine_type": 0,
                                            "min_gpu_memory_gb": None, "checksum": "a" * 64})
    with app.app_context():
        common = {"user_id": "12", "window_seconds": 120, "interval": 120}
        listed = all_rows(queries.client_list, client_id=None, status=None, name=None, valid_status=None,
                          live=True, **common)
        detail = all_rows(queries.client_detail, user_id="12", client_id=bytes.fromhex(cid), interval=120)
        yield {
            # The list reads the views dump from tuples: (schema, query, parameters).
            "queries": {
                "list": (schemas.ClientItem(many=True), queries.client_list, {
                    "client_id": None, "status": None, "name": None, "valid_status": None, "live": True,
                    **common}),
                "monitor": (schemas.MonitorRow(many=True), queries.client_monitor,
                            {"user_id": "12", "client_id": None, "date_from": None, "date_to": None}),
                "health": (schemas.HealthRow(many=True), queries.client_health, {
                    "user_id": "12", "client_id": None, "time_from": None, "time_to": None, "before": None,
                    "limit": None}),
                "models": (schemas.ModelItem(many=True), queries.models_list,
                           {"is_active": None, "min_gpu_memory_gb": None}),
            },
            "list": (schemas.ClientList(), {"total": len(listed), "devices": listed}),
            "detail": (schemas.ClientDetail(), {
                "system_info": detail[0], "device_info": [row for row in detail if row["device_index"] is not None]}),
            "stat": (schemas.ClientStat(), one_row(queries.client_stat, temp_warning=85, **common)),
            "monitor": (schemas.MonitorRow(many=True), all_rows(queries.client_monitor, user_id="12",
                                                                client_id=None, date_from=None, date_to=None)),
            "health": (schemas.HealthRow(many=True), all_rows(queries.client_health, user_id="12", client_id=None,
                                                              time_from=None, time_to=None, before=None,
                                                              limit=None)),
            "models": (schemas.ModelItem(many=True), all_rows(queries.models_list, is_active=None,
                                                              min_gpu_memory_gb=None)),
        }


@pytest.mark.parametrize("view", ["list", "detail", "stat", "monitor", "health", "models"])
def test_shape_dumps_exactly_what_the_schema_dumps(rows, view):
    schema, data = rows[view]
    expected = schema.dump(data)
    assert expected  # real rows, not an empty list
    # Bytes, not ==: an integer field must not come out as 5.0, nor a float one as 5.
    assert dumps(schemas.Shape(schema).dump(data)) == dumps(expected)


@pytest.mark.parametrize("view", ["list", "monitor", "health", "models"])
def test_rows_dumped_from_tuples_are_byte_for_byte_the_schema_dump(rows, view):
    schema, query, params = rows["queries"][view]
    expected = dumps(schema.dump(all_rows(query, **params)))
    assert expected != b"[]"
    # Bytes, not ==: an integer field must not come out as 5.0, nor a float one as 5.
    assert dumps(dumped_rows(query, schemas.Shape(schema), **params)) == expected


def test_rows_from_tuples_convert_what_their_column_types_need(app):
    class Sums(schemas.Schema):
        total = schemas.fields.Integer()
        rate = schemas.fields.Float()
        seen = schemas.Time()

    # Columns in another order than the schema, one more than it has, numbers of other types.
    sql = "select 2::int as rate, 'x' as extra, 7::numeric as total, timestamptz '2026-11-28 09:05:07+01' as seen"
    for output in (False, True):  # times as datetimes, or as text (db.Cursor.for_output)
        with app.app_context(), get_db().cursor() as cur:
            cur.execute(sql) if not output else cur.for_output().execute(sql)
            assert dumps(schemas.Shape(Sums(many=True)).rows(cur)) == \
                b'[{"total":7,"rate":2.0,"seen":"2026-11-28T08:05:07.000000Z"}]'


def test_time_columns_read_as_text_exactly_as_isoz_formats_them(app):
    rnd = random.Random(9)
    texts = ["infinity", "-infinity", "0001-01-02 00:00:00", "9999-12-30 23:59:59.999999", "2026-11-28 09:05:07",
             "2026-11-28 09:05:07.7", "2026-11-28 09:05:07.120000", "2026-11-28 09:05:07.000001"]
    for _ in range(3000):
        fraction = "".join(rnd.choice("0123456789") for _ in range(rnd.randint(0, 6)))
        texts.append(f"{rnd.randint(2, 9998):04d}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d} "
                     f"{rnd.randint(0, 23):02d}:{rnd.randint(0, 59):02d}:{rnd.randint(0, 59):02d}"
                     + (f".{fraction}" if fraction else ""))
    statements = ["select unnest(%s::timestamptz[])", "select unnest(%s::timestamp[])"]
    with app.app_context():
        conn = get_db()
        # UTC is the pool's zone and the fast path; in another zone every value takes the slow one.
        for zone in ("UTC", "Asia/Kolkata"):
            with conn.cursor() as cur:
                cur.execute("set time zone %s", (zone,))
            for sql in statements:
                with conn.cursor() as cur:
                    cur.execute(sql, (texts,))
                    expected = [isoz(value) for (value,) in cur.tuples()]
                with conn.cursor().for_output() as cur:
                    cur.execute(sql, (texts,))
                    assert [value for (value,) in cur.tuples()] == expected, (zone, sql)
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


# ---- Load: the compiled report load agrees with marshmallow's --------------------------------

ODD = [None, True, False, 0, -1, 1, 100, 101, 100.5, -0.0, 255, 256, 1e308, 2**63 - 1, 2**63, 2**64,
       float("nan"), float("inf"), "", "x", "\x00", "12", "0" * 32, "a" * 256, [], {}, [None], [{}], {"a": 1}]
TIMESTAMPS = ["2026-11-28T09:05:07Z", "2026-11-28T09:05:07.5+05:30", "2026-11-28T09:05:07", "yesterday",
              "2026-02-30T00:00:00Z", 1764320707, "0001-01-01T00:00:00+01:00"]


@st.composite
def reports(draw, mutations=None):
    """A valid report of up to 8 GPUs, then `mutations` random changes: a key set to an odd value,
    removed, or added."""
    number = st.one_of(st.integers(0, 100), st.floats(0, 100, allow_nan=False))
    gpus = [{"index": i, "name": draw(st.text(max_size=20).filter(lambda t: "\x00" not in t)),
             "temp": draw(st.floats(0, 150)), "usage": draw(number), "mem_usage": draw(number),
             "power_usage": draw(st.integers(0, 10000))} for i in range(draw(st.integers(0, 8)))]
    report = {"client_id": draw(st.sampled_from(["0" * 32, "ABCDEF0123456789abcdef0123456789"])),
              "system": {"cpu_usage": draw(number), "memory_usage": draw(number), "disk_usage": draw(number),
                         "network_rx": draw(st.integers(0, 2**63 - 1)), "network_tx": draw(st.integers(0, 99))},
              "devices": draw(st.sampled_from([gpus, gpus, None, "missing"]))}
    if report["devices"] == "missing":
        del report["devices"]
    for key, values in (("timestamp", TIMESTAMPS[:2] + [None]), ("device_memsize", [0, 24576, None]),
                        ("total_tflops", [0, 83.5, None])):
        if draw(st.booleans()):
            report[key] = draw(st.sampled_from(values))
    for _ in range(draw(st.integers(0, 4) if mutations is None else mutations)):
        devices = report.get("devices") if isinstance(report.get("devices"), list) else []
        parents = [p for p in [report, report.get("system"), *devices] if isinstance(p, dict)]
        target = draw(st.sampled_from(parents))
        key = draw(st.sampled_from(sorted(target) + ["extra"]))
        change = draw(st.sampled_from(["odd", "odd", "delete", "timestamp", "duplicate index"]))
        if change == "delete":
            target.pop(key, None)
        elif change == "timestamp":
            report["timestamp"] = draw(st.sampled_from(TIMESTAMPS))
        elif change == "duplicate index" and len(devices) > 1 and all(isinstance(d, dict) for d in devices[:2]):
            devices[1] = {**devices[1], "index": devices[0].get("index")}
        else:
            target[key] = draw(st.sampled_from(ODD))
    return report


def _outcome(load, raw):
    try:
        return "loaded", repr(load(raw))  # repr: 5 and 5.0, or a str and its bytes, must not pass as equal
    except ValidationError as err:
        return "refused", err.messages


@settings(max_examples=300, derandomize=True, deadline=None, database=None)
@given(raw=reports())
def test_compiled_report_load_answers_exactly_as_marshmallow(raw):
    assert _outcome(schemas.Load(schemas.Report()), raw) == _outcome(schemas.Report().load, raw)


@settings(max_examples=100, derandomize=True, deadline=None, database=None)
@given(raw=reports(mutations=st.just(0)))
def test_compiled_report_load_takes_valid_reports_without_marshmallow(raw):
    # Calling the compiled checks alone: a valid report must not be handed to marshmallow.
    assert repr(schemas.Load(schemas.Report()).fast(raw)) == repr(schemas.Report().load(raw))


def test_compiled_report_load_agrees_on_every_field_set_to_every_odd_value():
    base = {"client_id": "0" * 32, "timestamp": "2026-11-28T09:05:07Z", "device_memsize": 1, "total_tflops": 1,
            "system": {"cpu_usage": 1, "memory_usage": 1, "disk_usage": 1, "network_rx": 1, "network_tx": 1},
            "devices": [{"index": 0, "name": "a", "temp": 1, "usage": 1, "mem_usage": 1, "power_usage": 1}]}
    fast, slow = schemas.Load(schemas.Report()), schemas.Report().load
    cases = 0
    for parent in (None, "system", "devices"):
        for key in [*(base[parent][0] if parent == "devices" else base.get(parent, base)), "extra"]:
            for value in [*ODD, "delete"]:
                raw = copy.deepcopy(base)
                target = raw if parent is None else raw[parent][0] if parent == "devices" else raw[parent]
                if value == "delete":
                    target.pop(key, None)
                else:
                    target[key] = value
                assert _outcome(fast, raw) == _outcome(slow, raw), (parent, key, value)
                cases += 1
    assert cases > 500


def test_compiled_load_refuses_what_marshmallow_refuses_with_its_message():
    load = schemas.Load(schemas.Report())
    bad = {"client_id": "0" * 32, "system": {"cpu_usage": 101, "memory_usage": 1, "disk_usage": 1,
                                             "network_rx": 1, "network_tx": 1},
           "devices": [{"index": 0, "name": "a", "temp": 1, "usage": 1, "mem_usage": 1, "power_usage": 1}] * 2}
    with pytest.raises(ValidationError) as err:
        load(bad)
    assert err.value.messages == {"system": {"cpu_usage": ["must be between 0 and 100"]}}
