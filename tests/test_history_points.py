"""device_history's points are written as JSON by PostgreSQL (gpufs_history_point) and go into the
answer as they are (schemas.Points): held here to what the plain path, marshmallow dumping the same
points as Python values, gives, on every kind of range; and the rounding to numeric's."""
import struct
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal

import orjson
import pytest

from gpufs import create_app, envelope, history, schemas

from .conftest import now, register
from .reports import gpu, iso, report, rows, send_batch
from .test_history import history_of, span

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
POINT_FIELDS = list(schemas.HistoryPoint().fields)
QUOTED = 'Tesla "T4" \\ été'  # a name the JSON must escape: it goes through marshmallow, not the SQL


def start_hour():
    return now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=5)


def samples(t0):
    """(time, device_index, name, uuid, temp, usage, mem_usage, power_usage) of the reports sent: three
    GPUs every 120 s for 4 hours, a second report in some minutes, 40 minutes of silence, GPU 2 gone
    after the first hour and renamed before it went, and one reading a float4 cannot hold exactly."""
    out = []
    for i in range(120):
        if 60 <= i < 80:  # the gap
            continue
        for extra in ((0, 30) if i % 5 == 0 else (0,)):
            at = t0 + timedelta(seconds=120 * i + extra)
            out.append((at, 0, "NVIDIA GeForce RTX 4090", "GPU-0", 40 + (i % 7) * 1.5, (i * 13) % 100, 33.25,
                        100 + i * 2.75 + extra))
            out.append((at, 1, QUOTED, None, 50.0 + (i % 3) * 0.25, 7, 1.0, 80.5))
            if i < 30:
                out.append((at, 2, "old name" if i < 20 else "new name", "GPU-2", 70, 99.5, 12.5, 300 - i))
    out.append((t0 + timedelta(hours=4, minutes=30), 0, "NVIDIA GeForce RTX 4090", "GPU-0", 72.3, 1, 2, 3))
    return out


def send(client, cid, points):
    by_time = {}
    for at, index, name, uuid, temp, usage, mem_usage, power in points:
        item = {**gpu(index, name=name, temp=temp, usage=usage, mem_usage=mem_usage, power_usage=power), "uuid": uuid}
        by_time.setdefault(at, []).append(item)
    send_batch(client, [report(cid, at, devices=devices) for at, devices in sorted(by_time.items())])


def float4(value):
    return struct.unpack("f", struct.pack("f", value))[0]


def rounded(value):
    # As round(x::numeric, 2) does: x's 15-digit decimal, halves away from zero.
    return float(Decimal(f"{value:.15g}").quantize(Decimal("0.01"), ROUND_HALF_UP))


def expected(points, low, high, step, device_index=None):
    """The answer's devices computed here from the samples sent, as Python values: what the
    plain path is given."""
    width = timedelta(seconds=step)
    buckets, newest = {}, {}
    for at, index, name, uuid, *readings in sorted(points, key=lambda p: p[0]):
        if not low <= at < high or device_index not in (None, index):
            continue
        newest[index] = (name, uuid)
        buckets.setdefault(index, {}).setdefault(EPOCH + (at - EPOCH) // width * width, []).append(readings)
    devices = []
    for index in sorted(buckets):
        series = []
        for time, group in sorted(buckets[index].items()):
            temp, usage, mem_usage, power = ([float4(r[k]) for r in group] for k in range(4))
            series.append({"time": time, "samples": len(group),
                           "temp": rounded(sum(temp) / len(group)), "temp_max": max(r[0] for r in group),
                           "usage": rounded(sum(usage) / len(group)), "usage_max": max(r[1] for r in group),
                           "mem_usage": rounded(sum(mem_usage) / len(group)),
                           "power_usage": rounded(sum(power) / len(group)), "power_max": max(r[3] for r in group)})
        devices.append({"device_index": index, "name": newest[index][0], "uuid": newest[index][1], "points": series})
    return devices


def plain(data, devices):
    """The answer's data as the plain path writes it: marshmallow's dump of Python values, through
    the envelope's dumps, read back."""
    value = {"client_id": bytes.fromhex(data["client_id"]), "start": parse(data["start"]), "end": parse(data["end"]),
             "step_seconds": data["step_seconds"], "devices": devices}
    return orjson.loads(envelope.dumps(schemas.DeviceHistory().dump(value)))


def parse(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def assert_as_plain(data, points, device_index=None, low=None):
    """`data` (served) equals, field for field and in the same order, the plain dump of the points
    computed from `points` over its range (from `low` when given); numbers by value (JSON has one
    number type: 75 is 75.0)."""
    low, high = low or parse(data["start"]), parse(data["end"])
    assert data == plain(data, expected(points, low, high, data["step_seconds"], device_index))
    for device in data["devices"]:
        assert list(device) == ["device_index", "name", "uuid", "points"]
        for point in device["points"]:
            assert list(point) == POINT_FIELDS
            assert isinstance(point["time"], str) and all(type(point[k]) in (int, float) for k in POINT_FIELDS[1:])


@pytest.mark.parametrize("params", [
    {},  # the default: the last 24 hours, 300 s
    {"step": "120"},
    {"step": "60"},
    {"step": "600"},
    {"step": "3600"},
    {"step": "120", "device_index": "1"},
    {"step": "300", "device_index": "2"},
    {"step": "86400"},
])
def test_device_history_points_are_the_plain_dump_of_the_same_points(client, db, params):
    cid = register(client)
    t0 = start_hour()
    points = samples(t0)
    send(client, cid, points)
    whole_day = span(now() - history.DEFAULT_RANGE, now())
    data = history_of(client, cid, **({**whole_day, **params} if params else {}))["data"]
    assert data["step_seconds"] == int(params.get("step", 300))
    index = int(params["device_index"]) if "device_index" in params else None
    assert_as_plain(data, points, index)
    assert [d["device_index"] for d in data["devices"]] == ([0, 1, 2] if index is None else [index])
    if index is None:
        assert [(d["name"], d["uuid"]) for d in data["devices"]] == [
            ("NVIDIA GeForce RTX 4090", "GPU-0"), (QUOTED, None), ("new name", "GPU-2")]


def test_device_history_points_across_a_gap_and_an_empty_range_are_the_plain_dump(client, db):
    cid = register(client)
    t0 = start_hour()
    points = samples(t0)
    send(client, cid, points)
    low, high = t0 + timedelta(hours=1, minutes=50), t0 + timedelta(hours=3, minutes=10)  # around the gap
    data = history_of(client, cid, **span(low, high, step=120))["data"]
    assert_as_plain(data, points)
    times = [point["time"] for point in data["devices"][0]["points"]]
    assert iso(t0 + timedelta(hours=2)) not in times and iso(t0 + timedelta(hours=2, minutes=40)) in times
    data = history_of(client, cid, **span(t0 - timedelta(hours=2), t0 - timedelta(seconds=1)))["data"]
    assert data["devices"] == [] and data == plain(data, [])


def test_device_history_points_from_the_hourly_rollups_are_the_plain_dump(app_config, client, db):
    cid = register(client)
    t0 = start_hour()
    points = samples(t0)
    send(client, cid, points)
    hourly = create_app({**app_config, "GPU_HISTORY_RAW_DAYS": 0})  # every range reaches past the raw samples
    hourly.extensions["gpufs"].clock = now
    try:
        low, high = t0 + timedelta(minutes=10), now()
        data = history_of(hourly.test_client(), cid, **span(low, high, step=3600))["data"]
        assert data["step_seconds"] == 3600
        assert_as_plain(data, points, low=t0)  # the hour holding the start, whole
        assert sum(p["samples"] for d in data["devices"] for p in d["points"]) == len(
            [p for p in points if t0 <= p[0] < high])
    finally:
        hourly.extensions["gpufs"].close()


def test_device_history_cached_answer_is_the_same_bytes(app, client, db):
    cid = register(client)
    send(client, cid, samples(start_hour()))
    cache = app.extensions["gpufs"].cache
    answers = [client.get(f"/api/user/device_history?user_id=12&client_id={cid}").data for _ in range(2)]
    assert cache.stats["hit"] == 1 and cache.stats["miss"] >= 1
    first, second = (answer.split(b',"message":')[0] for answer in answers)  # the timestamp differs
    assert first == second and orjson.loads(answers[0])["data"]["devices"]


def test_gpufs_round2_rounds_as_numeric_does(db):
    # Every average of up to 120 whole readings, ties a float8 holds just below or above, large and
    # negative values, and random ones: the float arithmetic agrees with numeric everywhere.
    assert rows(db, """
        with x(v) as (select s::float8 / n from generate_series(0, 3000) s, generate_series(1, 120) n
                      union all select unnest(array[0.285, 1.005, 0.575, 2.675, 1.115, 9999.995, 0.125, -0.285,
                                                    -2.5, 999999.995, 1e6 + 0.125, 123456789.125, 1e300, 0])
                      union all select random() * 10000 from generate_series(1, 100000))
        select v from x where gpufs_round2(v) is distinct from round(v::numeric, 2)::float8 limit 5""") == []
