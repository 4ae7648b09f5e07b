"""Heartbeat ingestion: POST /api/client/heartbeat and /heartbeats — what is stored, counted and rolled up,
what is refused, and that batches and concurrent writers stay exact."""
import threading
from datetime import datetime, timedelta, timezone

import pytest

from . import reports
from .conftest import assert_envelope, new_client_id, register
from .reports import gpu, iso, midnight, one, rows, send, send_batch

INT64_MAX = 2**63 - 1


def yesterday_10():
    return midnight(-1) + timedelta(hours=10)  # 10:00:00 starts a 120 s bucket


def report(client_id, ts="yesterday 10:00", **kwargs):
    return reports.report(client_id, yesterday_10() if ts == "yesterday 10:00" else ts, **kwargs)


def daily(db, cid, day=None):
    return one(db, """select total_heartbeats, health_heartbeats, avg_cpu_usage, avg_memory_usage, avg_disk_usage,
                             total_network_in_bytes, total_network_out_bytes, last_heartbeat, last_heartbeat_bucket
                        from client_daily_stats where client_id = %s and date = %s""",
               bytes.fromhex(cid), (day or yesterday_10()).date())


@pytest.fixture
def cid(client, db):
    """A registered client, created two days ago so that yesterday's reports count towards health."""
    client_id = register(client)
    rows(db, "update gpu_assets set created_at = now() at time zone 'UTC' - interval '2 days'")
    return client_id


# ---- one report: what is written ------------------------------------------------------------

def test_heartbeat_writes_raw_row_snapshot_and_rollups(client, db, cid):
    body = report(cid, cpu=45.5, mem=60.4, disk=30.5, rx=1111, tx=2222, device_memsize=49152, total_tflops=165.2,
                  devices=[gpu(0, power_usage=350, temp=72.5), gpu(1, name="NVIDIA L40S", usage=12.4, mem_usage=3,
                                                                     power_usage=80, temp=41)])
    assert send(client, body)["data"] == {"status": "stored", "counted": True}

    raw = one(db, "select cpu_usage, mem_usage, disk_usage, network_up, network_down, timestamp, "
                  "now() - created_at < interval '1 minute' from heartbeat")
    assert raw == (46, 60, 31, 2222, 1111, yesterday_10(), True)  # halves round up; up = sent, down = received
    snap = one(db, "select cpu_usage, mem_usage, disk_usage, device_memsize, device_count, total_tflops, reported_at, "
                   "now() - last_seen_at < interval '1 minute' from system_info")
    assert snap == (46, 60, 31, 49152, 2, 165, yesterday_10(), True)
    assert rows(db, "select device_index, device_name, device_temp, device_gpuusage, device_memusage, "
                    "device_powerusage from device_info order by device_index") == [
        (0, "NVIDIA GeForce RTX 4090", 73, 85, 75, 350), (1, "NVIDIA L40S", 41, 12, 3, 80)]
    bucket = int(yesterday_10().timestamp()) // 120
    assert daily(db, cid) == (1, 1, 45.5, 60.4, 30.5, 1111, 2222, yesterday_10(), bucket)
    assert rows(db, "select device_index, device_name, total_heartbeats, avg_utilization, avg_temperature, "
                    "avg_power_usage, avg_memory_usage from device_daily_stats order by device_index") == [
        (0, "NVIDIA GeForce RTX 4090", 1, 85.0, 72.5, 350.0, 75.0), (1, "NVIDIA L40S", 1, 12.4, 41.0, 80.0, 3.0)]
    assert rows(db, "select bucket_start from heartbeat_bucket") == [(yesterday_10(),)]

    detail = assert_envelope(client.get("/api/user/client_device_detail",
                                        query_string={"user_id": "12", "client_id": cid}), 200)["data"]
    assert detail["device_info"][0] == {"device_index": 0, "name": "NVIDIA GeForce RTX 4090", "temp": 73,
                                        "usage": 85, "mem_usage": 75, "power_usage": 350, **reports.UNKNOWN_READINGS}
    assert detail["system_info"]["device_memsize"] == 49152


@pytest.mark.parametrize("devices", [..., None, []])
def test_report_without_gpus_is_a_cpu_only_machine(client, db, cid, devices):
    body = report(cid)
    if devices is ...:
        del body["devices"]
    else:
        body["devices"] = devices
    assert send(client, body)["data"] == {"status": "stored", "counted": True}
    assert one(db, "select device_count from system_info") == (0,)
    assert rows(db, "select 1 from device_info") == []
    assert rows(db, "select 1 from device_daily_stats") == []


def test_gpu_missing_from_newer_report_disappears_from_snapshot(client, db, cid):
    send(client, report(cid, devices=[gpu(0), gpu(1), gpu(2)]))
    send(client, report(cid, ts=yesterday_10() + timedelta(minutes=10), devices=[gpu(0, temp=80), gpu(2, temp=60)]))
    assert rows(db, "select device_index, device_temp from device_info order by 1") == [(0, 80), (2, 60)]
    assert one(db, "select device_count from system_info") == (2,)


def test_report_older_than_snapshot_does_not_replace_it(client, db, cid):
    send(client, report(cid, ts=yesterday_10(), cpu=70, devices=[gpu(0, temp=70)]))
    rows(db, "update system_info set last_seen_at = now() - interval '1 hour'")
    late = report(cid, ts=yesterday_10() - timedelta(hours=1), cpu=10, devices=[gpu(0, temp=30), gpu(1)])
    assert send(client, late)["data"] == {"status": "stored", "counted": True}

    assert one(db, "select cpu_usage, reported_at, now() - last_seen_at < interval '1 minute' from system_info") == (
        70, yesterday_10(), True)  # the late report still proves the client alive
    assert rows(db, "select device_index, device_temp from device_info") == [(0, 70)]
    assert one(db, "select count(*) from heartbeat") == (2,)


def test_every_stored_report_proves_the_client_alive_and_a_duplicate_does_not(client, db, cid):
    seen = "select now() - last_seen_at < interval '1 minute' from system_info"
    send(client, report(cid, ts=yesterday_10()))
    rows(db, "update system_info set last_seen_at = now() - interval '1 hour'")
    assert send(client, report(cid, ts=yesterday_10()))["data"]["status"] == "duplicate"
    assert one(db, seen) == (False,)  # nothing stored, nothing proven
    send(client, report(cid, ts=yesterday_10() + timedelta(minutes=2)))  # newer: replaces the snapshot
    assert one(db, seen) == (True,)
    rows(db, "update system_info set last_seen_at = now() - interval '1 hour'")
    send_batch(client, [report(cid, ts=yesterday_10() + timedelta(minutes=4)),  # one newer, one late
                        report(cid, ts=yesterday_10() - timedelta(minutes=4))])
    assert one(db, seen) == (True,)
    assert one(db, "select reported_at from system_info") == (yesterday_10() + timedelta(minutes=4),)


# ---- counting: duplicates and buckets -------------------------------------------------------

def test_duplicate_report_is_stored_once_and_adds_nothing(client, db, cid):
    send(client, report(cid, cpu=40, rx=100, tx=10))
    before = daily(db, cid)
    retry = send(client, report(cid, cpu=90, rx=100, tx=10))
    assert retry["data"] == {"status": "duplicate", "counted": False}
    assert one(db, "select count(*), min(cpu_usage) from heartbeat") == (1, 40)
    assert daily(db, cid) == before
    assert one(db, "select total_heartbeats from device_daily_stats") == (1,)


def test_reports_in_one_bucket_are_counted_once_but_all_add_traffic(client, db, cid):
    first = send(client, report(cid, ts=yesterday_10() + timedelta(seconds=5), cpu=40, rx=100, tx=10))
    second = send(client, report(cid, ts=yesterday_10() + timedelta(seconds=119), cpu=80, rx=300, tx=30))
    assert first["data"] == {"status": "stored", "counted": True}
    assert second["data"] == {"status": "stored", "counted": False}
    total, health, cpu, _mem, _disk, rx, tx, last, _bucket = daily(db, cid)
    assert (total, health, cpu, rx, tx) == (1, 1, 40.0, 400, 40)
    assert last == yesterday_10() + timedelta(seconds=119)
    assert one(db, "select count(*) from heartbeat") == (2,)
    assert one(db, "select total_heartbeats from device_daily_stats") == (1,)


def test_backfilled_report_counts_once_whatever_the_arrival_order(client, db, cid):
    send(client, report(cid, ts=yesterday_10() + timedelta(seconds=100)))
    early_same_bucket = send(client, report(cid, ts=yesterday_10() + timedelta(seconds=1)))
    earlier_bucket = send(client, report(cid, ts=yesterday_10() - timedelta(seconds=60)))
    assert early_same_bucket["data"] == {"status": "stored", "counted": False}
    assert earlier_bucket["data"] == {"status": "stored", "counted": True}
    assert daily(db, cid)[0] == 2


def test_running_averages_cover_counted_reports_only(client, db, cid):
    for minutes, cpu, temp in ((0, 10, 50), (2, 20, 60), (3, 99, 99), (4, 60, 70)):  # minute 3 shares a bucket
        send(client, report(cid, ts=yesterday_10() + timedelta(minutes=minutes), cpu=cpu, mem=cpu / 2, disk=50,
                            devices=[gpu(0, temp=temp, usage=cpu)]))
    total, _health, cpu, mem, disk, *_ = daily(db, cid)
    assert (total, cpu, mem, disk) == (3, 30.0, 15.0, 50.0)
    gpu_day = one(db, "select total_heartbeats, avg_temperature, avg_utilization from device_daily_stats")
    assert gpu_day == (3, 60.0, 30.0)


def test_bucket_width_of_a_day_comes_from_heartbeat_config_daily(client, db, cid):
    rows(db, "insert into heartbeat_config_daily (date, heartbeat_interval_secs) values (%s, 600)",
         yesterday_10().date())
    two_days_ago = yesterday_10() - timedelta(days=1)
    results = send_batch(client, [report(cid, ts=yesterday_10()), report(cid, ts=yesterday_10() + timedelta(minutes=5)),
                                  report(cid, ts=two_days_ago), report(cid, ts=two_days_ago + timedelta(minutes=5))])
    assert [r["message"] for r in results["data"]["results"]] == [
        "stored and counted", "stored; not counted: its bucket already has a report",
        "stored and counted", "stored and counted"]
    assert daily(db, cid)[0] == 1
    assert daily(db, cid, two_days_ago)[0] == 2


def test_report_from_before_registration_is_stored_but_not_in_health(client, db):
    cid = register(client)  # created now: yesterday's report predates it
    send(client, report(cid))
    assert daily(db, cid)[:2] == (1, 0)


def test_report_older_than_retention_is_stored_but_not_counted(client, db, cid):
    old = midnight(-100) + timedelta(hours=1)
    assert send(client, report(cid, ts=old))["data"] == {"status": "stored", "counted": False}
    assert daily(db, cid, old)[0] == 0
    assert rows(db, "select 1 from heartbeat_bucket") == []


def test_omitted_or_null_timestamp_is_the_server_time(client, db, cid):
    assert send(client, report(cid, ts=None))["data"]["status"] == "stored"
    assert one(db, "select now() - timestamp < interval '1 minute', timestamp = created_at from heartbeat") == (
        True, True)
    rows(db, "truncate heartbeat")
    assert send(client, report(cid, ts=None, timestamp=None))["data"]["status"] == "stored"
    assert one(db, "select count(*) from heartbeat") == (1,)


def test_network_totals_saturate_instead_of_failing(client, db, cid):
    send(client, report(cid, rx=INT64_MAX, tx=INT64_MAX))
    send(client, report(cid, ts=yesterday_10() + timedelta(minutes=2), rx=INT64_MAX, tx=1))
    assert daily(db, cid)[5:7] == (INT64_MAX, INT64_MAX)


# ---- one report: refused --------------------------------------------------------------------

def test_unregistered_client_is_404(client, db):
    body = send(client, report(new_client_id()), 404)
    assert body["message"] == "client_id: no such client; register it with insert_client"
    assert rows(db, "select 1 from heartbeat") == []


def test_invalid_client_is_403_and_leaves_no_row_anywhere(client, db, cid):
    assert_envelope(client.post("/api/user/edit_client_info",
                                json={"user_id": "12", "client_id": cid, "valid_status": "invalid"}), 200)
    assert send(client, report(cid), 403)["message"].startswith("client_id: client is marked invalid")
    assert send_batch(client, [report(cid)])["data"]["results"][0]["code"] == 403
    for table in ("heartbeat", "heartbeat_bucket", "system_info", "device_info", "client_daily_stats",
                  "device_daily_stats"):
        assert rows(db, f"select 1 from {table}") == [], table  # fixed table names, no input


FUTURE = datetime.now(timezone.utc) + timedelta(minutes=10)


@pytest.mark.parametrize("change, message", [
    ({"system": {"cpu_usage": 101, "memory_usage": 1, "disk_usage": 1, "network_rx": 0, "network_tx": 0}},
     "system.cpu_usage: must be between 0 and 100"),
    ({"system": {"cpu_usage": 1, "memory_usage": -1, "disk_usage": "1", "network_rx": -5, "network_tx": 1.5}},
     "system.memory_usage: must be between 0 and 100; system.disk_usage: must be a number; "
     "system.network_rx: must be between 0 and 9223372036854775807; system.network_tx: must be an integer"),
    ({"system": None}, "system: may not be null"),
    ({"system": []}, "system: must be an object"),
    ({"client_id": "xyz"}, "client_id: must be 32 hexadecimal characters"),
    ({"timestamp": "2025-07-29T17:55:48"}, "timestamp: must be an ISO 8601 time with Z or an offset"),
    ({"timestamp": "yesterday"}, "timestamp: must be an ISO 8601 time with Z or an offset"),
    ({"timestamp": "0001-01-01T00:00:00+01:00"}, "timestamp: must be an ISO 8601 time with Z or an offset"),
    ({"timestamp": iso(FUTURE)}, "timestamp: must not be more than 5 minutes in the future"),
    ({"devices": [gpu(0), gpu(0)]}, "devices: device index must be unique within a report"),
    ({"devices": [gpu(0, temp=151)]}, "devices.0.temp: must be between 0 and 150"),
    ({"devices": [gpu(256)]}, "devices.0.index: must be between 0 and 255"),
    ({"devices": [gpu(0, power_usage=10001)]}, "devices.0.power_usage: must be between 0 and 10000"),
    ({"devices": [gpu(0, usage=True)]}, "devices.0.usage: must be a number"),
    ({"devices": ["gpu"]}, "devices.0: must be an object"),
    ({"devices": {"index": 0}}, "devices: must be a list"),
    ({"total_tflops": -1}, "total_tflops: must be between 0 and 2147483647"),
    ({"device_memsize": 1.5}, "device_memsize: must be an integer"),
])
def test_heartbeat_validation_names_the_field(client, db, cid, change, message):
    body = {**report(cid), **change}
    assert send(client, body, 400)["message"] == message
    assert rows(db, "select 1 from heartbeat") == []


def test_heartbeat_missing_required_fields_is_400(client, db):
    assert send(client, {}, 400)["message"] == "client_id: is required; system: is required"


def test_heartbeat_body_must_be_json(client, db, cid):
    assert_envelope(client.post("/api/client/heartbeat", data="x", content_type="text/plain"), 415)
    assert_envelope(client.post("/api/client/heartbeat", data="{", content_type="application/json"), 400)


# ---- batches --------------------------------------------------------------------------------

def test_batch_with_mixed_good_and_bad_reports_answers_each_in_order(client, db, cid):
    invalid = register(client, name="retired")
    assert_envelope(client.post("/api/user/edit_client_info",
                                json={"user_id": "12", "client_id": invalid, "valid_status": "invalid"}), 200)
    send(client, report(cid, ts=yesterday_10() - timedelta(hours=1)))  # stored earlier: #5 repeats it
    batch = [
        report(cid, rx=10),                                         # 0 stored, counted
        report(cid, cpu=101),                                       # 1 invalid
        report(new_client_id()),                                    # 2 unregistered
        report(invalid),                                            # 3 invalid client
        report(cid, ts=yesterday_10() + timedelta(seconds=30), rx=20),  # 4 same bucket as #0
        report(cid, ts=yesterday_10() - timedelta(hours=1)),          # 5 already stored
        report(cid, rx=99),                                         # 6 repeats #0 within the batch
        "not a report",                                             # 7
        report(cid, ts=yesterday_10() + timedelta(minutes=2), rx=30),  # 8 next bucket
    ]
    data = send_batch(client, batch)["data"]
    assert (data["stored"], data["duplicates"], data["rejected"]) == (3, 2, 4)
    assert [(r["index"], r["status"], r["code"]) for r in data["results"]] == [
        (0, "stored", 200), (1, "rejected", 400), (2, "rejected", 404), (3, "rejected", 403), (4, "stored", 200),
        (5, "duplicate", 200), (6, "duplicate", 200), (7, "rejected", 400), (8, "stored", 200)]
    messages = [r["message"] for r in data["results"]]
    assert messages[1] == "system.cpu_usage: must be between 0 and 100"
    assert messages[2] == "client_id: no such client; register it with insert_client"
    assert messages[4] == "stored; not counted: its bucket already has a report"
    assert messages[7] == "must be a JSON object"
    assert set(data["results"][0]) == {"index", "status", "code", "message"}
    total, *_rest = daily(db, cid)
    assert (total, daily(db, cid)[5]) == (3, 1000 + 10 + 20 + 30)  # the in-batch repeat #6 added nothing
    assert one(db, "select count(*) from heartbeat where client_id = %s", bytes.fromhex(invalid)) == (0,)


def test_a_batch_of_only_invalid_reports_answers_each_and_writes_nothing(client, db, cid):
    data = send_batch(client, [report(cid, cpu=101), "not a report"])["data"]
    assert (data["stored"], data["duplicates"], data["rejected"]) == (0, 0, 2)
    assert [(r["index"], r["code"]) for r in data["results"]] == [(0, 400), (1, 400)]
    assert one(db, "select count(*) from heartbeat") == (0,)


@pytest.mark.parametrize("body, message", [
    ({"reports": []}, "reports: must hold 1-1000 reports"),
    ({"reports": [{}] * 1001}, "reports: must hold 1-1000 reports"),
    ({"reports": {}}, "reports: must be a list"),
    ({}, "reports: is required"),
])
def test_batch_size_and_shape_are_checked(client, db, body, message):
    resp = client.post("/api/client/heartbeats", json=body)
    assert assert_envelope(resp, 400)["message"] == message


def test_batch_of_500_reports_with_8_gpus_is_written_whole(client, db, cid):
    other = register(client, name="second")
    gpus = [gpu(i, usage=i * 10) for i in range(8)]
    batch = [report(c, ts=yesterday_10() + timedelta(minutes=2 * i), devices=gpus)
             for i in range(250) for c in (cid, other)]
    data = send_batch(client, batch)["data"]
    assert (data["stored"], data["duplicates"], data["rejected"]) == (500, 0, 0)
    assert one(db, "select count(*), count(distinct client_id) from heartbeat") == (500, 2)
    assert rows(db, "select total_heartbeats, count(*) from device_daily_stats group by 1") == [(250, 16)]
    assert one(db, "select sum(total_heartbeats) from client_daily_stats")[0] == 500
    assert one(db, "select count(*) from device_info") == (16,)
    assert one(db, "select min(reported_at) from system_info") == (yesterday_10() + timedelta(minutes=498),)


def test_concurrent_batches_count_each_bucket_exactly_once(app, db, cid):
    a, b = cid, register(app.test_client(), name="second")
    # Overlapping reports, clients in opposite orders: without per-client locking this double-counts or deadlocks.
    times = [yesterday_10() + timedelta(seconds=30 * i) for i in range(160)]  # 4 per bucket, 40 buckets
    jobs = [[report(c, ts=t, rx=1) for t in times[k::2] for c in ((a, b) if k % 2 else (b, a))] for k in range(4)]
    errors = []

    def post(batch):
        resp = app.test_client().post("/api/client/heartbeats", json={"reports": batch})
        if resp.status_code != 200:
            errors.append(resp.get_json())

    threads = [threading.Thread(target=post, args=(job,)) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for c in (a, b):
        total, _h, _cpu, _mem, _disk, rx, *_ = daily(db, c)
        assert (total, rx) == (40, 160)
    assert one(db, "select count(*) from heartbeat") == (320,)
    assert one(db, "select count(*) from heartbeat_bucket") == (80,)


def test_ingestion_invalidates_cached_reads(client, db, cid):
    query = {"user_id": "12", "client_id": cid}
    assert client.get("/api/user/client_device_detail", query_string=query).get_json()["data"]["device_info"] == []
    send(client, report(cid, devices=[gpu(0, temp=66)]))
    detail = client.get("/api/user/client_device_detail", query_string=query).get_json()["data"]
    assert detail["device_info"][0]["temp"] == 66
