"""Per-GPU history (contract section 8): each stored report's GPU samples and hourly rollups, their
time partitions and retention, the optional readings, and GET /api/user/device_history."""
import re
from datetime import datetime, timedelta, timezone

import orjson
import psycopg2
import pytest

from gpufs import create_app, history
from gpufs.config import DEFAULTS
from gpufs.db import queries
from gpufs.tasks import Leader

from .conftest import assert_envelope, new_client_id, register
from .reports import gpu, iso, midnight, report, rows, send, send_all, send_batch

SETTINGS = {"GPU_HISTORY_RAW_DAYS": 14, "GPU_HISTORY_HOURLY_DAYS": 400}
FULL_GPU = {"uuid": "GPU-5c3f0b3e-8d7a-4c1f-9e2b-1a2b3c4d5e6f", "fan_speed": 43, "sm_clock_mhz": 2520,
            "mem_clock_mhz": 10501, "mem_total_mb": 24564, "mem_used_mb": 18000, "power_limit": 450.0,
            "ecc_uncorrected": 0, "xid": 79,
            "processes": [{"pid": 4242, "name": "python3", "user": "alice", "used_memory_mb": 17000},
                          {"pid": 7, "name": "Xorg", "used_memory_mb": 300}]}
OPTIONAL = tuple(FULL_GPU)


def hour_of(when):
    return when.replace(minute=0, second=0, microsecond=0)


def history_of(client, cid, user_id="12", status=200, **params):
    query = "&".join(f"{k}={v}" for k, v in {"user_id": user_id, "client_id": cid, **params}.items())
    return assert_envelope(client.get(f"/api/user/device_history?{query}"), status)


def span(start, end, **params):
    return {"start_date": iso(start), "end_date": iso(end), **params}


def partition_of(db, table, cid):
    return rows(db, f"select distinct tableoid::regclass::text from {table} where client_id = %s",  # fixed names
                bytes.fromhex(cid))


def upkeep(app, now, **settings):
    state = app.extensions["gpufs"]
    with state.pool.connection() as conn:
        return history.upkeep(conn, now, {**SETTINGS, **settings})


@pytest.fixture
def cid(client, db):
    return register(client)


# ---- samples and rollups at ingest ---------------------------------------------------------------

def test_device_history_gives_each_gpus_samples_by_range_and_step(client, db, cid):
    t0 = midnight(-1) + timedelta(hours=10)  # a multiple of 120 s
    for seconds, temps in ((0, (70, 40)), (60, (80, 42)), (130, (90, 44)), (300, (60, 46))):
        send(client, report(cid, t0 + timedelta(seconds=seconds), devices=[
            gpu(0, temp=temps[0], usage=temps[0] - 10, mem_usage=50, power_usage=temps[0] * 4),
            gpu(1, name="NVIDIA L40S", temp=temps[1], usage=5, mem_usage=1, power_usage=80)]))

    data = history_of(client, cid, **span(t0, t0 + timedelta(minutes=10), step=120))["data"]
    assert data["client_id"] == cid and data["step_seconds"] == 120
    assert data["start"] == iso(t0) and data["devices"][0]["device_index"] == 0
    gpu0, gpu1 = data["devices"]
    assert (gpu0["name"], gpu1["name"], gpu1["device_index"]) == ("NVIDIA GeForce RTX 4090", "NVIDIA L40S", 1)
    assert gpu0["points"] == [
        {"time": iso(t0), "samples": 2, "temp": 75.0, "temp_max": 80.0, "usage": 65.0, "usage_max": 70.0,
         "mem_usage": 50.0, "power_usage": 300.0, "power_max": 320.0},
        {"time": iso(t0 + timedelta(seconds=120)), "samples": 1, "temp": 90.0, "temp_max": 90.0, "usage": 80.0,
         "usage_max": 80.0, "mem_usage": 50.0, "power_usage": 360.0, "power_max": 360.0},
        {"time": iso(t0 + timedelta(seconds=240)), "samples": 1, "temp": 60.0, "temp_max": 60.0, "usage": 50.0,
         "usage_max": 50.0, "mem_usage": 50.0, "power_usage": 240.0, "power_max": 240.0}]
    assert [p["temp"] for p in gpu1["points"]] == [41.0, 44.0, 46.0]

    # A range is [start, end): the first two reports only; a coarser step folds them into one point.
    data = history_of(client, cid, **span(t0, t0 + timedelta(seconds=59), step=60))["data"]
    assert [len(d["points"]) for d in data["devices"]] == [1, 1]
    data = history_of(client, cid, **span(t0, t0 + timedelta(minutes=10), step=600, device_index=1))["data"]
    assert [d["device_index"] for d in data["devices"]] == [1]
    assert data["devices"][0]["points"] == [{"time": iso(t0), "samples": 4, "temp": 43.0, "temp_max": 46.0,
                                             "usage": 5.0, "usage_max": 5.0, "mem_usage": 1.0,
                                             "power_usage": 80.0, "power_max": 80.0}]


def test_device_history_averages_and_maxima_are_exact_on_known_data(client, db, cid):
    t0 = midnight(-1) + timedelta(hours=3)
    temps, powers = (61.5, 70.25, 88.0, 64.1, 77.7), (120.5, 300.0, 451.25, 99.9, 250.0)
    send_batch(client, [report(cid, t0 + timedelta(seconds=100 * i), devices=[
        gpu(0, temp=temps[i], usage=10 * i, mem_usage=33.3, power_usage=powers[i])]) for i in range(5)])
    point, = history_of(client, cid, **span(t0, t0 + timedelta(hours=1), step=3600))["data"]["devices"][0]["points"]
    assert point == {"time": iso(t0), "samples": 5, "temp": round(sum(temps) / 5, 2), "temp_max": 88.0,
                     "usage": 20.0, "usage_max": 40.0, "mem_usage": 33.3,
                     "power_usage": round(sum(powers) / 5, 2), "power_max": 451.25}
    # The hourly rollup holds the same figures.
    assert rows(db, "select samples, temp_max, power_max, round(temp_sum::numeric, 3)::float8,"
                    " round(power_sum::numeric, 3)::float8 from gpufs_gpu_hourly") == [
        (5, 88.0, 451.25, round(sum(temps), 3), round(sum(powers), 3))]


def test_device_history_leaves_a_gap_as_a_gap(client, db, cid):
    t0 = midnight(-1) + timedelta(hours=5)
    send(client, report(cid, t0))
    send(client, report(cid, t0 + timedelta(minutes=30)))
    points = history_of(client, cid, **span(t0, t0 + timedelta(hours=1), step=120))["data"]["devices"][0]["points"]
    assert [p["time"] for p in points] == [iso(t0), iso(t0 + timedelta(minutes=30))]
    data = history_of(client, cid, **span(t0 - timedelta(hours=2), t0 - timedelta(hours=1)))["data"]
    assert data["devices"] == []  # nothing in the range: no GPU, no zeros


def test_duplicate_reports_are_not_double_counted_in_buckets_or_rollups(client, db, cid):
    t0 = midnight(-1) + timedelta(hours=7)
    body = report(cid, t0, devices=[gpu(0, temp=70), gpu(1, temp=50)])
    send(client, body)
    assert send(client, body)["data"]["status"] == "duplicate"
    other = report(cid, t0 + timedelta(seconds=30), devices=[gpu(0, temp=80), gpu(1, temp=60)])
    results = send_batch(client, [body, other, other])["data"]  # a stored one, and one twice in the batch
    assert (results["stored"], results["duplicates"]) == (1, 2)
    assert rows(db, "select device_index, count(*) from gpufs_gpu_samples group by 1 order by 1") == [(0, 2), (1, 2)]
    assert rows(db, "select device_index, samples, temp_sum, temp_max from gpufs_gpu_hourly order by 1") == [
        (0, 2, 150.0, 80.0), (1, 2, 110.0, 60.0)]
    points = history_of(client, cid, **span(t0, t0 + timedelta(minutes=2), step=120))["data"]["devices"][0]["points"]
    assert [(p["samples"], p["temp"]) for p in points] == [(2, 75.0)]


def test_backfilled_report_lands_in_its_bucket_and_partition(app, client, db, cid):
    now = datetime.now(timezone.utc)
    upkeep(app, now)
    send(client, report(cid, now - timedelta(minutes=1)))
    late = midnight(-5) + timedelta(hours=13, minutes=7, seconds=30)
    send(client, report(cid, late, devices=[gpu(0, temp=66)]))
    assert sorted(partition_of(db, "gpufs_gpu_samples", cid)) == sorted(
        [(f"gpufs_gpu_samples_p{late:%Y%m%d}",), (f"gpufs_gpu_samples_p{now:%Y%m%d}",)])
    assert (f"gpufs_gpu_hourly_p{late:%Y%m}",) in partition_of(db, "gpufs_gpu_hourly", cid)
    points = history_of(client, cid, **span(late - timedelta(hours=1), late + timedelta(hours=1), step=300)
                        )["data"]["devices"][0]["points"]
    assert [(p["time"], p["temp"]) for p in points] == [(iso(late.replace(minute=5, second=0)), 66.0)]


def test_report_with_no_partition_yet_stores_and_upkeep_moves_it_into_its_own(app, client, db, cid):
    now = datetime.now(timezone.utc)
    day = midnight(-3)
    upkeep(app, now)
    rows(db, f"drop table gpufs_gpu_samples_p{day:%Y%m%d}")  # as if the upkeep had never made it (a fixed name)
    send(client, report(cid, day + timedelta(hours=2)))
    assert partition_of(db, "gpufs_gpu_samples", cid) == [("gpufs_gpu_samples_default",)]
    made = upkeep(app, now)["made"]
    assert made == [f"gpufs_gpu_samples_p{day:%Y%m%d}"]
    assert partition_of(db, "gpufs_gpu_samples", cid) == [(f"gpufs_gpu_samples_p{day:%Y%m%d}",)]
    assert rows(db, "select count(*) from gpufs_gpu_samples_default") == [(0,)]


# ---- whole buckets from the rollups ---------------------------------------------------------------

def points_of(app, cid, low, high, step, device_index=None):
    """device_history's points per GPU for [low, high) at `step`, read straight from the database
    (no cache), as {device_index: [point]}."""
    span = history.plan(low, high, step, high + timedelta(minutes=1), raw_days=14)
    with app.extensions["gpufs"].pool.connection() as conn:
        devices = history.device_history(conn, "12", bytes.fromhex(cid), device_index, span)
    return {d["device_index"]: orjson.loads(orjson.dumps(d["points"])) for d in devices}


@pytest.fixture
def half_hours_since(db):
    """Sets where the rollups hold half hours (migration 0016), as a database upgraded at that time
    has it; put back afterwards."""
    def set_since(when):
        with db.cursor() as cur:
            cur.execute("update gpufs_gpu_half_hours set since = %s", (when,))
    original = rows(db, "select since from gpufs_gpu_half_hours")[0][0]
    yield set_since
    set_since(original)


def test_whole_half_hour_buckets_come_from_the_rollups_with_the_samples_figures(app, client, db, cid,
                                                                                 half_hours_since):
    t0 = midnight(-1) + timedelta(hours=9, minutes=7, seconds=30)  # mid-bucket, so both ends are part-buckets
    send_all(client, [report(cid, t0 + timedelta(minutes=4 * i), devices=[
        gpu(0, temp=40 + (i * 7) % 45 + 0.1 * (i % 10), usage=(i * 13) % 101, mem_usage=(i * 3) % 100 + 0.5,
            power_usage=100 + (i * 37) % 400 + 0.25),
        gpu(1, temp=30 + i % 20, usage=5, mem_usage=1, power_usage=80.5)]) for i in range(50)])
    low, high = t0 + timedelta(minutes=3), t0 + timedelta(hours=3, minutes=1)
    half_hours_since(midnight(1))  # rollups not used: every point from the samples
    from_samples = {step: points_of(app, cid, low, high, step) for step in (1800, 3600, 5400)}
    half_hours_since(datetime(1970, 1, 1, tzinfo=timezone.utc))  # as in a database made since migration 0016
    for step, expected in from_samples.items():
        assert points_of(app, cid, low, high, step) == expected, step
        assert points_of(app, cid, low, high, step, device_index=1) == {1: expected[1]}
    assert sum(p["samples"] for p in from_samples[1800][0]) == 45  # the reports in [low, high)
    assert [p["time"] for p in from_samples[1800][0]][:2] == [iso(t0.replace(minute=0, second=0)),
                                                             iso(t0.replace(minute=30, second=0))]

    # The whole buckets are the rollups' (a changed rollup shows); the part-buckets at the ends are not.
    with db.cursor() as cur:
        cur.execute("update gpufs_gpu_hourly set temp_max = 99 where device_index = 0")
    maxima = [p["temp_max"] for p in points_of(app, cid, low, high, 1800)[0]]
    assert maxima[1:-1] == [99.0] * (len(maxima) - 2) and 99.0 not in (maxima[0], maxima[-1])


def test_rollups_written_before_the_half_hours_are_used_in_whole_hours_only(app, client, db, cid,
                                                                           half_hours_since):
    t0 = midnight(-1) + timedelta(hours=4)
    send_all(client, [report(cid, t0 + timedelta(minutes=5 * i), devices=[gpu(0, temp=50 + i)]) for i in range(24)])
    low, high = t0, t0 + timedelta(hours=2)
    expected = points_of(app, cid, low, high, 1800)
    # A database upgraded at t0 + 1 h: the rollups before it hold whole hours, and are not split.
    half_hours_since(t0 + timedelta(hours=1))
    with db.cursor() as cur:
        cur.execute("update gpufs_gpu_hourly set temp_max = 99 where hour < %s", (t0 + timedelta(hours=1),))
    assert points_of(app, cid, low, high, 1800) == expected
    half_hours_since(t0 + timedelta(minutes=30))  # not on the step's grid: its bucket from the samples
    assert [p["temp_max"] for p in points_of(app, cid, low, high, 3600)[0]] == [61.0, 73.0]


# ---- retention -----------------------------------------------------------------------------------

def test_retention_drops_whole_partitions_and_older_ranges_come_from_hourly_rollups(app, app_config, client, db,
                                                                                       cid):
    now = datetime.now(timezone.utc)
    upkeep(app, now)
    old = midnight(-10) + timedelta(hours=8, minutes=5)
    send_batch(client, [report(cid, old, devices=[gpu(0, temp=60)]),
                        report(cid, old + timedelta(minutes=10), devices=[gpu(0, temp=70)]),
                        report(cid, now - timedelta(minutes=5), devices=[gpu(0, temp=50)])])
    gone = f"gpufs_gpu_samples_p{old:%Y%m%d}"

    done = upkeep(app, now, GPU_HISTORY_RAW_DAYS=9)  # the next run, with a shorter raw retention
    assert gone in done["dropped"] and f"gpufs_gpu_samples_p{now:%Y%m%d}" not in done["dropped"]
    assert all(name.startswith("gpufs_gpu_samples_p") and name[-8:] <= f"{old:%Y%m%d}" for name in done["dropped"])
    assert rows(db, "select to_regclass(%s)", gone) == [(None,)]
    assert rows(db, "select count(*) from gpufs_gpu_samples where client_id = %s", bytes.fromhex(cid)) == [(1,)]
    assert rows(db, "select count(*) from gpufs_gpu_hourly where client_id = %s", bytes.fromhex(cid)) == [(2,)]

    # A range reaching past the raw retention is answered from the hourly rollups, in whole hours.
    shorter = create_app({**app_config, "GPU_HISTORY_RAW_DAYS": 9})
    short = shorter.test_client()
    data = history_of(short, cid, **span(old - timedelta(hours=1), now))["data"]
    assert data["step_seconds"] >= 3600 and data["step_seconds"] % 3600 == 0
    points = data["devices"][0]["points"]
    assert points[0]["samples"] == 2 and points[0]["temp"] == 65.0 and points[0]["temp_max"] == 70.0
    assert sum(p["samples"] for p in points) == 3
    data = history_of(short, cid, **span(old - timedelta(hours=1), now, step=600))["data"]
    assert data["step_seconds"] == 3600
    # Within the raw retention, the samples answer with the step asked for.
    data = history_of(short, cid, **span(now - timedelta(hours=1), now, step=600))["data"]
    assert data["step_seconds"] == 600 and data["devices"][0]["points"][0]["temp"] == 50.0
    shorter.extensions["gpufs"].close()
    upkeep(app, now)  # the partitions back for the other tests


def test_partition_upkeep_runs_on_one_of_several_workers(urls, db):
    now = datetime.now(timezone.utc)
    runs = []

    def worker(name):
        task = history.task({**DEFAULTS, **SETTINGS})
        upkeep_run = task.run
        task.run = lambda conn, at: runs.append((name, upkeep_run(conn, at)))
        return Leader(urls["DATABASE_URL"], [task], clock=lambda: now)

    leaders = [worker("first"), worker("second")]
    try:
        assert [leader.step() for leader in leaders] == [True, False]
        assert [leader.step() for leader in leaders] == [True, False]  # not due again for an hour
        assert [name for name, _ in runs] == ["first"]
        oldest = now - timedelta(days=SETTINGS["GPU_HISTORY_RAW_DAYS"])
        for day in (oldest, now, now + history.AHEAD):
            assert rows(db, "select to_regclass(%s) is not null", f"gpufs_gpu_samples_p{day:%Y%m%d}") == [(True,)]
        assert rows(db, "select to_regclass(%s) is not null",
                    f"gpufs_gpu_hourly_p{now - timedelta(days=399):%Y%m}") == [(True,)]
    finally:
        for leader in leaders:
            leader.stop()


def test_prune_also_drops_gpu_history_partitions_past_their_retention(app, runner, client, db, cid):
    now = datetime.now(timezone.utc)
    upkeep(app, now)
    old = midnight(-12) + timedelta(hours=1)
    send(client, report(cid, old))
    app.extensions["gpufs"].config["GPU_HISTORY_RAW_DAYS"] = 11
    result = runner.invoke(args=["gpufs", "prune"])
    assert result.exit_code == 0, result.output
    assert "GPU history partitions" in result.output
    assert rows(db, "select to_regclass(%s)", f"gpufs_gpu_samples_p{old:%Y%m%d}") == [(None,)]
    assert rows(db, "select count(*) from gpufs_gpu_hourly") == [(1,)]
    upkeep(app, now)


# ---- the optional readings -----------------------------------------------------------------------

def test_optional_readings_are_stored_and_shown_and_unknown_ones_stay_null(client, db, cid):
    t0 = datetime.now(timezone.utc) - timedelta(minutes=1)
    send(client, report(cid, t0, devices=[{**gpu(0), **FULL_GPU}, gpu(1, name="NVIDIA L40S"),
                                          {**gpu(2), **{key: None for key in OPTIONAL}}]))
    detail = assert_envelope(client.get(f"/api/user/client_device_detail?user_id=12&client_id={cid}"), 200)
    full, absent, null = detail["data"]["device_info"]
    assert {key: full[key] for key in OPTIONAL} == FULL_GPU
    assert {key: absent[key] for key in OPTIONAL} == {key: None for key in OPTIONAL}
    assert {key: null[key] for key in OPTIONAL} == {key: None for key in OPTIONAL}
    assert (full["temp"], full["power_usage"]) == (72, 350)  # the seed's six stay as they were

    columns = ", ".join(OPTIONAL)  # fixed names
    stored = rows(db, f"select device_index, {columns} from gpufs_gpu_samples order by 1")
    assert stored[0][1:] == tuple(FULL_GPU.values())
    assert stored[1][1:] == stored[2][1:] == (None,) * len(OPTIONAL)
    assert rows(db, f"select {columns} from device_info where device_index = 1") == [(None,) * len(OPTIONAL)]

    data = history_of(client, cid)["data"]
    assert [(d["device_index"], d["uuid"]) for d in data["devices"]] == [(0, FULL_GPU["uuid"]), (1, None), (2, None)]


@pytest.mark.parametrize("field, value, message", [
    ("uuid", "", "devices.0.uuid: must be 1-64 characters"),
    ("uuid", "G" * 65, "devices.0.uuid: must be 1-64 characters"),
    ("fan_speed", 101, "devices.0.fan_speed: must be between 0 and 100"),
    ("fan_speed", "40", "devices.0.fan_speed: must be a number"),
    ("sm_clock_mhz", -1, "devices.0.sm_clock_mhz: must be between 0 and 2147483647"),
    ("mem_clock_mhz", 1.5, "devices.0.mem_clock_mhz: must be an integer"),
    ("mem_total_mb", -5, "devices.0.mem_total_mb: must be between 0 and 2147483647"),
    ("mem_used_mb", True, "devices.0.mem_used_mb: must be an integer"),
    ("power_limit", -0.5, "devices.0.power_limit: must be between 0 and 10000"),
    ("ecc_uncorrected", -1, "devices.0.ecc_uncorrected: must be between 0 and 9223372036854775807"),
    ("xid", -3, "devices.0.xid: must be between 0 and 2147483647"),
    ("processes", {"pid": 1}, "devices.0.processes: must be a list"),
    ("processes", [{"pid": 1, "name": "x", "used_memory_mb": 1}] * 65, "devices.0.processes: must hold at most 64"),
    ("processes", [{"pid": -1, "name": "x"}], "devices.0.processes.0.pid: must be between 0 and 2147483647"),
    ("processes", [{"name": "x"}], "devices.0.processes.0.pid: is required"),
    ("processes", [{"pid": 1, "name": "x" * 256}], "devices.0.processes.0.name: must be at most 255 characters"),
    ("processes", [{"pid": 1, "name": "x", "user": "u" * 65}], "devices.0.processes.0.user: must be at most 64"),
    ("processes", [{"pid": 1, "name": "x", "used_memory_mb": -1}],
     "devices.0.processes.0.used_memory_mb: must be between 0 and 2147483647"),
    ("power_limit", 1e300, "devices.0.power_limit: must be between 0 and 10000"),
])
def test_bad_optional_readings_are_400_naming_the_field(client, db, cid, field, value, message):
    body = assert_envelope(client.post("/api/client/heartbeat", json=report(
        cid, None, devices=[{**gpu(0), field: value}])), 400)
    assert message in body["message"]
    assert rows(db, "select count(*) from gpufs_gpu_samples") == [(0,)]


# ---- device_history's rules ----------------------------------------------------------------------

def test_device_history_defaults_to_the_last_24_hours_with_at_most_500_points(client, db, cid):
    now = datetime.now(timezone.utc)
    send_batch(client, [report(cid, now - timedelta(hours=h, minutes=1)) for h in (0, 23, 25)])
    data = history_of(client, cid)["data"]
    assert data["step_seconds"] == 300  # 120 s would give 721 points
    start, end = (datetime.fromisoformat(data[k].replace("Z", "+00:00")) for k in ("start", "end"))
    assert end - start == timedelta(hours=24) and abs(end - now) < timedelta(minutes=1)
    assert sum(p["samples"] for p in data["devices"][0]["points"]) == 2  # 25 h ago is outside


@pytest.mark.parametrize("hours, step", [(1, 120), (16, 120), (17, 300), (24 * 7, 1800), (24 * 20, 3600),
                                         (24 * 100, 21600), (24 * 400, 86400)])
def test_device_history_step_is_the_smallest_giving_at_most_500_points(hours, step):
    now = midnight(1)
    chosen = history.plan(now - timedelta(hours=hours), now, None, now, raw_days=1000)
    assert chosen["step"] == step
    assert history.buckets(chosen["time_from"], chosen["time_to"], step) <= 500


def test_device_history_beyond_raw_retention_steps_in_whole_hours():
    now = midnight(1)
    assert history.plan(now - timedelta(days=15), now - timedelta(days=14, hours=23), None, now, 14)["step"] == 3600
    chosen = history.plan(now - timedelta(days=15), now, 5000, now, 14)
    assert (chosen["step"], chosen["hourly"]) == (7200, True)


@pytest.mark.parametrize("params, message", [
    ({"step": "59"}, "step: must be between 60 and 86400"),
    ({"step": "86401"}, "step: must be between 60 and 86400"),
    ({"step": "ten"}, "step: must be an integer"),
    ({"step": "60", "start_date": "2026-01-01", "end_date": "2026-01-07"}, "step: 60 s gives more than 10000"),
    ({"start_date": "2025-01-01", "end_date": "2026-02-05"}, "start_date: the range from start_date to end_date must"),
    ({"start_date": "2026-01-02", "end_date": "2026-01-01"}, "start_date: must not be after end_date"),
    ({"device_index": "256"}, "device_index: must be between 0 and 255"),
    ({"client_id": "xyz"}, "client_id: must be 32 hexadecimal characters"),
])
def test_device_history_bad_parameters_are_400_naming_the_field(client, db, cid, params, message):
    assert message in history_of(client, cid, status=400, **params)["message"]


def test_device_history_7_days_at_60_s_is_400_but_6_days_is_answered(client, db, cid):
    end = midnight(0)
    history_of(client, cid, status=400, **span(end - timedelta(days=7), end, step=60))
    assert history_of(client, cid, **span(end - timedelta(days=6), end, step=60))["data"]["step_seconds"] == 60


def test_device_history_of_another_users_or_no_client_is_404(client, db, cid):
    history_of(client, cid, user_id="13", status=404)
    history_of(client, new_client_id(), status=404)


def test_device_history_is_cached_until_the_client_reports(client, db, cid):
    now = datetime.now(timezone.utc)
    send(client, report(cid, now - timedelta(minutes=10), devices=[gpu(0, temp=50)]))
    first = history_of(client, cid)["data"]
    rows(db, "update gpufs_gpu_samples set temp = 99")  # behind the cache's back
    assert history_of(client, cid)["data"] == first
    send(client, report(cid, now - timedelta(minutes=1), devices=[gpu(0, temp=60)]))
    points = history_of(client, cid)["data"]["devices"][0]["points"]
    assert [p["temp"] for p in points] == [99.0, 60.0]


def test_device_history_is_in_the_openapi_document(client, db):
    document = client.get("/api/openapi.json").get_json()
    operation = document["paths"]["/api/user/device_history"]["get"]
    names = {p["name"] for p in operation["parameters"]}
    assert {"user_id", "client_id", "device_index", "start_date", "end_date", "step"} <= names
    assert "404" in operation["responses"] and "400" in operation["responses"]


def test_simulated_history_lands_in_its_days_partitions(app, runner, db):
    # Yesterday: two simulated days ending now cover it whole at any time of day (the day before
    # yesterday has no sample when the test runs in the last two minutes before midnight).
    day = midnight(-1)
    upkeep(app, datetime.now(timezone.utc))
    rows(db, f"drop table gpufs_gpu_samples_p{day:%Y%m%d}")  # as if only migrate had run (a fixed name)
    result = runner.invoke(args=["gpufs", "simulate", "--clients", "1", "--days", "2", "--user", "sim"])
    assert result.exit_code == 0, result.output
    assert rows(db, "select count(*) from gpufs_gpu_samples_default") == [(0,)]
    assert rows(db, "select count(*) > 0 from gpufs_gpu_samples where reported_at < %s", day + timedelta(days=1)) == [
        (True,)]


def test_a_drop_that_cannot_lock_the_table_gives_up_and_keeps_the_partition(app, urls, db):
    now = datetime.now(timezone.utc)
    upkeep(app, now)
    old = f"gpufs_gpu_samples_p{now - timedelta(days=13):%Y%m%d}"
    reader = psycopg2.connect(urls["DATABASE_URL"])  # a long read holds the table
    try:
        with reader.cursor() as cur:
            cur.execute("select count(*) from gpufs_gpu_samples")
        assert upkeep(app, now, GPU_HISTORY_RAW_DAYS=12)["dropped"] == []
    finally:
        reader.close()
    assert rows(db, "select to_regclass(%s) is not null", old) == [(True,)]
    assert old in upkeep(app, now, GPU_HISTORY_RAW_DAYS=12)["dropped"]  # the next run does it
    upkeep(app, now)


def plan_of(db, cid, low, high, step):
    """The tables device_history's query reads for [low, high) at `step` (run, with no sample: the
    per-GPU name lookup does not run), its parameters bound as gpufs/history.py binds them."""
    span = history.plan(low, high, step, high, raw_days=14)
    with db.cursor() as cur:  # the query's own text
        cur.execute("explain (analyze, costs off, timing off, summary off) " + queries.device_history.sql,
                    {"user_id": "12", "client_id": bytes.fromhex(cid), "device_index": None, "time_from": low,
                     "time_to": high, "step": step, "whole_from": span["whole_from"], "whole_to": span["whole_to"]})
        lines = [row[0] for row in cur.fetchall() if "never executed" not in row[0]]
    # Tables, not their indexes.
    return set(re.findall(r"gpufs_gpu_(?:samples|hourly)_(?:p\d{6,8}|default)(?!\w)", "\n".join(lines)))


def test_device_history_reads_only_the_partitions_of_its_range(app, client, db, cid):
    now = datetime.now(timezone.utc)
    upkeep(app, now)  # a partition for every day of the retention, and some ahead
    low = now - timedelta(hours=3)
    assert plan_of(db, cid, low, now, 300) == {f"gpufs_gpu_samples_p{day:%Y%m%d}" for day in (low, now)}
    # A week at 1800 s: the samples of the two part-buckets at its ends, the rollups of the rest.
    week_ago = now - timedelta(days=7)
    assert plan_of(db, cid, week_ago, now, 1800) == {
        f"gpufs_gpu_samples_p{week_ago:%Y%m%d}", f"gpufs_gpu_samples_p{now:%Y%m%d}",
        *{f"gpufs_gpu_hourly_p{month:%Y%m}" for month in (week_ago, now)}}
