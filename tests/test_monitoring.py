"""Monitoring figures computed from ingested reports: live status, client_stat, health and uptime,
client_monitor rollups, client_health ranges and paging, and the indexes behind them."""
import json
import tracemalloc
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from psycopg2 import sql

from gpufs.blueprints import monitor
from gpufs.db import queries

from .conftest import assert_envelope, register
from .reports import forget_cache, gpu, iso, midnight, now, report, rows, send, send_all, send_batch


def get(client, endpoint, expect=200, **params):
    params.setdefault("user_id", "12")
    return assert_envelope(client.get(f"/api/user/{endpoint}", query_string=params), expect)


def backdate(db, cid, delta):
    """Registration `delta` before now (created_at is naive UTC)."""
    rows(db, "update gpu_assets set created_at = (%s - %s) at time zone 'UTC' where client_id = %s",
         now(), delta, bytes.fromhex(cid))


def last_seen(db, app, cid, ago):
    """Pretend the server last received a report from `cid` `ago` before now."""
    rows(db, "update system_info set last_seen_at = %s - %s where client_id = %s", now(), ago, bytes.fromhex(cid))
    forget_cache(app)


def every_bucket(cid, start, count, step=120, **kwargs):
    return [report(cid, start + timedelta(seconds=step * i), **kwargs) for i in range(count)]


def by_name(data):
    return {item["client_name"]: item for item in data["devices"]}


# ---- latest report in list and detail -------------------------------------------------------

def test_list_and_detail_show_the_latest_report(client, db):
    cid = register(client)
    send(client, report(cid, midnight(-1) + timedelta(hours=1), cpu=10, devices=[gpu(0, name="old")]))
    send(client, report(cid, midnight(-1) + timedelta(hours=3), cpu=44.5, mem=55, disk=66, total_tflops=82.5,
                        device_memsize=24576, devices=[gpu(1, name="B"), gpu(0, name="A", power_usage=350)]))
    send(client, report(cid, midnight(-1) + timedelta(hours=2), cpu=99, devices=[gpu(0, name="late")]))
    item = get(client, "client_list")["data"]["devices"][0]
    assert (item["device_name"], item["tflops"], item["cpu_usage"], item["memory_usage"], item["storage_usage"]) == (
        "A", 83, 45, 55, 66)
    detail = get(client, "client_device_detail", client_id=cid)["data"]
    assert detail["system_info"]["device_memsize"] == 24576
    assert [(d["device_index"], d["name"], d["power_usage"]) for d in detail["device_info"]] == [
        (0, "A", 350), (1, "B", 350)]


def test_new_client_has_zero_figures_and_no_last_online(client, db):
    register(client)
    item = get(client, "client_list")["data"]["devices"][0]
    assert (item["device_name"], item["tflops"], item["health"], item["uptime_days"], item["last_online"]) == (
        "", 0, 0, 0, None)


# ---- live status ----------------------------------------------------------------------------

def test_live_status_flips_to_offline_at_the_window_edge(app, client, db):
    cid = register(client, status="active")
    send(client, report(cid, None))
    last_seen(db, app, cid, timedelta(seconds=115))
    assert get(client, "client_status_list")["data"]["devices"][0]["client_status"] == "online"
    assert get(client, "client_stat")["data"]["systems_online_number"] == 1
    last_seen(db, app, cid, timedelta(seconds=121))
    assert get(client, "client_status_list")["data"]["devices"][0]["client_status"] == "offline"
    assert get(client, "client_status_list", status="offline")["data"]["total"] == 1
    assert get(client, "client_status_list", status="online")["data"]["total"] == 0
    assert get(client, "client_stat")["data"]["systems_online_number"] == 0
    assert get(client, "client_list")["data"]["devices"][0]["client_status"] == "active"  # registered status


def test_liveness_uses_receive_time_not_the_report_clock(client, db):
    cid = register(client)
    wrong_clock = datetime.now(timezone.utc) - timedelta(hours=3)
    send(client, report(cid, wrong_clock))
    item = get(client, "client_status_list")["data"]["devices"][0]
    assert item["client_status"] == "online"
    received = datetime.fromisoformat(item["last_online"].replace("Z", "+00:00"))
    assert datetime.now(timezone.utc) - received < timedelta(minutes=1)


def test_maintenance_and_error_stay_whatever_the_heartbeats(client, db):
    cids = {status: register(client, name=status, status=status) for status in ("maintenance", "error", "online")}
    send_batch(client, [report(cid, None) for cid in cids.values()])
    live = {i["client_name"]: i["client_status"] for i in get(client, "client_status_list")["data"]["devices"]}
    assert live == {"maintenance": "maintenance", "error": "error", "online": "online"}
    assert [i["client_name"] for i in get(client, "client_status_list", status="online")["data"]["devices"]] == [
        "online"]
    stat = get(client, "client_stat")["data"]
    assert (stat["systems_online_number"], stat["systems_maintenance_number"]) == (1, 1)


# ---- client_stat ----------------------------------------------------------------------------

def test_client_stat_counts_warnings_online_maintenance_and_tflops(app, client, db):
    names = ("healthy", "hot", "broken", "silent", "resting", "gone")
    statuses = {"broken": "error", "silent": "active", "resting": "maintenance"}
    cids = {n: register(client, name=n, status=statuses.get(n, "online")) for n in names}
    send_batch(client, [
        report(cids["healthy"], None, total_tflops=100, devices=[gpu(0, temp=84.4)]),
        report(cids["hot"], None, total_tflops=50, devices=[gpu(0, temp=60), gpu(1, temp=90)]),
        report(cids["broken"], None, total_tflops=7),
        report(cids["resting"], None, total_tflops=3),
        report(cids["gone"], None, total_tflops=1),
    ])
    last_seen(db, app, cids["gone"], timedelta(minutes=10))
    stat = get(client, "client_stat")["data"]
    assert stat == {"systems_total_number": 6, "systems_online_number": 2, "systems_maintenance_number": 1,
                    # broken (error), silent (active, never seen), gone (online, not live), hot (90 °C)
                    "systems_warnings_number": 4, "total_tflops": 161, "uptime_rate": 0}


def test_client_stat_leaves_out_invalid_clients(client, db):
    cid = register(client)
    send(client, report(cid, None, total_tflops=10))
    assert_envelope(client.post("/api/user/edit_client_info",
                                json={"user_id": "12", "client_id": cid, "valid_status": "invalid"}), 200)
    stat = get(client, "client_stat")["data"]
    assert (stat["systems_total_number"], stat["total_tflops"]) == (0, 0)


def test_uptime_rate_is_yesterdays_counted_share(client, db):
    cid = register(client)
    backdate(db, cid, timedelta(days=2))
    send_batch(client, every_bucket(cid, midnight(-1), 360, step=240))  # every other bucket: 360 of 720
    assert get(client, "client_stat")["data"]["uptime_rate"] == 50


def test_uptime_rate_counts_in_yesterdays_own_bucket_width(client, db):
    cid = register(client)
    backdate(db, cid, timedelta(days=2))
    rows(db, "insert into heartbeat_config_daily (date, heartbeat_interval_secs) values (%s, 600)", midnight(-1).date())
    send_batch(client, every_bucket(cid, midnight(-1), 36, step=1200))  # every other 600 s bucket: 36 of 144
    assert get(client, "client_stat")["data"]["uptime_rate"] == 25


def test_uptime_rate_averages_clients_that_existed_yesterday(client, db):
    half, idle, new = (register(client, name=n) for n in ("half", "idle", "new"))
    backdate(db, half, timedelta(days=2))
    backdate(db, idle, timedelta(days=3))  # no heartbeat yesterday: counts 0
    send_batch(client, every_bucket(half, midnight(-1), 360, step=240) + [report(new, None)])  # `new` is not counted
    assert get(client, "client_stat")["data"]["uptime_rate"] == 25


def test_uptime_rate_of_client_created_during_yesterday_expects_buckets_from_then(client, db):
    cid = register(client)
    rows(db, "update gpu_assets set created_at = %s", (midnight(-1) + timedelta(hours=12)).replace(tzinfo=None))
    # Reports every bucket of yesterday's second half: all 360 expected buckets; the morning ones predate it.
    send_batch(client, every_bucket(cid, midnight(-1) + timedelta(hours=6), 540))
    assert get(client, "client_stat")["data"]["uptime_rate"] == 100


def test_uptime_rate_without_clients_is_zero(client, db):
    assert get(client, "client_stat")["data"]["uptime_rate"] == 0


# ---- health and uptime_days -----------------------------------------------------------------

def test_health_counts_days_without_heartbeats_as_zero(client, db):
    cid = register(client)
    backdate(db, cid, timedelta(days=3))  # 3 days = 2160 expected buckets, whatever the time of day
    send_all(client, every_bucket(cid, midnight(-1), 720) + every_bucket(cid, midnight(-2), 360))
    assert get(client, "client_list")["data"]["devices"][0]["health"] == 50
    assert get(client, "client_device_detail", client_id=cid)["data"]["system_info"]["health"] == 50


def test_health_prorates_today(client, db):
    cid = register(client)
    rows(db, "update gpu_assets set created_at = %s", midnight().replace(tzinfo=None))
    elapsed = int((now() - midnight()).total_seconds())
    send_all(client, every_bucket(cid, midnight(), elapsed // 120 + 1))  # every bucket so far
    assert get(client, "client_list")["data"]["devices"][0]["health"] == 100


def test_health_looks_back_seven_days_including_today(client, db):
    cid = register(client)
    backdate(db, cid, timedelta(days=30))
    send_all(client, every_bucket(cid, midnight(-7), 720) + every_bucket(cid, midnight(-1), 720))  # day -7 is outside

    def expected_health():
        today = (now() - midnight()).total_seconds() / 120
        return int(100 * 720 / (6 * 720 + today) + 0.5)

    before = expected_health()
    health = get(client, "client_list")["data"]["devices"][0]["health"]
    assert health in {before, expected_health()}


def test_health_expects_a_configured_days_own_bucket_count(client, db):
    """A day of heartbeat_config_daily with 600 s buckets expects 144 of them, one configured with
    0 the default 720; list and detail alike."""
    rows(db, "insert into heartbeat_config_daily (date, heartbeat_interval_secs) values (%s, 600), (%s, 0)",
         midnight(-2).date(), midnight(-3).date())
    cid = register(client)
    backdate(db, cid, timedelta(days=30))
    send_all(client, every_bucket(cid, midnight(-2), 144, step=600) + every_bucket(cid, midnight(-1), 720))

    def expected_health():
        today = (now() - midnight()).total_seconds() / 120
        return int(100 * (144 + 720) / (5 * 720 + 144 + today) + 0.5)

    before = expected_health()
    listed = get(client, "client_list")["data"]["devices"][0]["health"]
    own = get(client, "client_device_detail", client_id=cid)["data"]["system_info"]["health"]
    assert listed == own and own in {before, expected_health()}


def test_list_health_agrees_with_each_clients_own(client, db):
    """client_list works health out for all clients in one query, the detail per client: the same rule."""
    rows(db, "insert into heartbeat_config_daily (date, heartbeat_interval_secs) values (%s, 600)",
         midnight(-2).date())  # a day of wider buckets: 144 expected
    shapes = {"old": timedelta(days=30), "three days": timedelta(days=3), "since noon": None,
              "silent": timedelta(days=9)}
    cids = {name: register(client, name=name) for name in shapes}
    for name, age in shapes.items():
        if age:
            backdate(db, cids[name], age)
    rows(db, "update gpu_assets set created_at = %s where client_id = %s",
         (midnight(-1) + timedelta(hours=12)).replace(tzinfo=None), bytes.fromhex(cids["since noon"]))
    send_all(client, every_bucket(cids["old"], midnight(-6), 500)
             + every_bucket(cids["old"], midnight(-2), 100, step=600)
             + every_bucket(cids["three days"], midnight(-1), 700)
             + every_bucket(cids["since noon"], midnight(-1), 720))
    listed = {d["client_name"]: d["health"] for d in get(client, "client_list")["data"]["devices"]}
    own = {name: get(client, "client_device_detail", client_id=cid)["data"]["system_info"]["health"]
           for name, cid in cids.items()}
    assert listed == own
    assert len(set(own.values())) == 4 and own["silent"] == 0  # four different figures, not four zeros


def test_health_of_a_client_with_no_expected_bucket_yet_is_zero(client, db):
    cid = register(client)
    backdate(db, cid, timedelta(hours=-1))  # registered "in an hour": a clock ahead of the database's
    assert get(client, "client_list")["data"]["devices"][0]["health"] == 0
    assert get(client, "client_device_detail", client_id=cid)["data"]["system_info"]["health"] == 0


@pytest.mark.parametrize(("counted", "expected", "percent"), [(1, 8, 13), (3, 8, 38), (1, 200, 1), (1, 300, 0),
                                                               (9, 8, 100), (0, 0, 0)])
def test_health_percent_rounds_halves_up_and_caps_at_100(db, counted, expected, percent):
    assert rows(db, "select gpufs_health_percent(%s, %s)", counted, expected) == [(percent,)]


def test_uptime_days_are_kept_for_writers_without_rights_on_our_table(db):
    """The upstream server may write rollups with a role of its own, granted only its tables."""
    role = sql.Identifier(f"upstream_{uuid.uuid4().hex[:8]}")
    cid = b"\x01" * 16
    rows(db, sql.SQL("create role {}").format(role))
    try:
        rows(db, sql.SQL("grant insert, delete on client_daily_stats to {}").format(role))
        rows(db, sql.SQL("grant usage on sequence client_daily_stats_id_seq to {}").format(role))
        rows(db, sql.SQL("set role {}").format(role))
        rows(db, "insert into client_daily_stats (date, client_id, total_heartbeats, last_heartbeat)"
                 " values (current_date, %s, 1, now())", cid)
        rows(db, "reset role")
        assert rows(db, "select days from client_uptime_days where client_id = %s", cid) == [(1,)]
    finally:
        rows(db, "reset role")
        rows(db, "delete from client_daily_stats")
        rows(db, sql.SQL("drop owned by {}").format(role))
        rows(db, sql.SQL("drop role {}").format(role))


def test_reports_before_registration_do_not_raise_health(client, db):
    cid = register(client)
    rows(db, "update gpu_assets set created_at = %s", (midnight(-1) + timedelta(hours=18)).replace(tzinfo=None))
    send_all(client, every_bucket(cid, midnight(-1), 540))  # 00:00-18:00, all before registration
    item = get(client, "client_list")["data"]["devices"][0]
    assert (item["health"], item["uptime_days"]) == (0, 1)


def test_uptime_days_counts_every_day_on_record(client, db):
    cid = register(client)
    send_batch(client, [report(cid, midnight(-20) + timedelta(hours=5)), report(cid, midnight(-2)),
                        report(cid, midnight(-2) + timedelta(hours=23)), report(cid, None)])
    assert get(client, "client_list")["data"]["devices"][0]["uptime_days"] == 3
    assert get(client, "client_device_detail", client_id=cid)["data"]["system_info"]["uptime_days"] == 3


def test_uptime_days_follow_rollups_written_by_any_writer(app, client, db):
    """The count is kept by triggers on client_daily_stats: rows the upstream server or a
    backfill by hand writes count too, an upsert of a day on record does not count twice."""
    cid, other = register(client), register(client, name="other")

    def uptime():
        forget_cache(app)
        return {d["client_id"]: d["uptime_days"] for d in get(client, "client_list")["data"]["devices"]}

    upsert = """insert into client_daily_stats (date, client_id, total_heartbeats, last_heartbeat)
                select current_date - n, %s, 1, now() from unnest(%s::int[]) as n
                on conflict (client_id, date)
                do update set total_heartbeats = client_daily_stats.total_heartbeats + 1"""
    rows(db, upsert, bytes.fromhex(cid), [0, 1, 2])
    rows(db, upsert, bytes.fromhex(cid), [2, 3])  # day 2 is on record already
    rows(db, upsert, bytes.fromhex(other), [5])
    assert uptime() == {cid: 4, other: 1}
    rows(db, "delete from client_daily_stats where client_id = %s and date < current_date - 1", bytes.fromhex(cid))
    assert uptime() == {cid: 2, other: 1}
    rows(db, "delete from client_daily_stats where client_id = %s", bytes.fromhex(other))
    assert uptime() == {cid: 2, other: 0}
    assert rows(db, "select count(*) from client_uptime_days where client_id = %s", bytes.fromhex(other)) == [(0,)]
    rows(db, "truncate client_daily_stats")
    assert uptime() == {cid: 0, other: 0}


# ---- client_monitor -------------------------------------------------------------------------

def test_client_monitor_has_a_row_per_client_and_day(client, db):
    cid = register(client, name="busy")
    idle = register(client, name="idle")
    day2 = midnight(-2) + timedelta(hours=8)
    send_batch(client, [
        report(cid, day2, cpu=10, rx=100, tx=1),
        report(cid, day2 + timedelta(seconds=60), cpu=90, rx=200, tx=2),  # same bucket: traffic only
        report(cid, day2 + timedelta(minutes=2), cpu=30, rx=300, tx=3),
        report(cid, midnight(-1) + timedelta(hours=1), cpu=50, mem=40, disk=20, rx=7, tx=9),
    ])
    data = get(client, "client_monitor")["data"]
    assert [(r["client_name"], r["date"]) for r in data] == [
        ("busy", midnight(-1).date().isoformat()), ("busy", day2.date().isoformat()), ("idle", None)]
    newest, older, empty = data
    assert (newest["total_heartbeats"], newest["avg_cpu_usage"], newest["avg_memory_usage"],
            newest["avg_disk_usage"]) == (1, 50.0, 40.0, 20.0)
    assert (older["total_heartbeats"], older["avg_cpu_usage"]) == (2, 20.0)
    assert (older["total_network_in_bytes"], older["total_network_out_bytes"]) == (600, 6)  # in = received
    assert (older["avg_network_in_bytes"], older["avg_network_out_bytes"]) == (300.0, 3.0)
    assert older["last_heartbeat"] == iso(day2 + timedelta(minutes=2))
    assert empty["client_id"] == idle
    assert all(empty[k] is None for k in ("date", "total_heartbeats", "avg_cpu_usage", "total_network_in_bytes",
                                          "avg_network_in_bytes", "avg_network_out_bytes", "last_heartbeat"))
    assert empty["created_at"].endswith("Z") and empty["updated_at"].endswith("Z")


def test_client_monitor_date_range_narrows_the_days(client, db):
    cid = register(client)
    send_batch(client, [report(cid, midnight(d) + timedelta(hours=12)) for d in (-5, -3, -1)])
    days = [r["date"] for r in get(client, "client_monitor", start_date=midnight(-4).date().isoformat(),
                                   end_date=midnight(-1).date().isoformat())["data"]]
    assert days == [midnight(-1).date().isoformat(), midnight(-3).date().isoformat()]
    empty = get(client, "client_monitor", start_date="2001-01-01", end_date="2001-01-02")["data"]
    assert [(r["client_id"], r["date"], r["avg_network_in_bytes"]) for r in empty] == [(cid, None, None)]
    assert_envelope(client.get("/api/user/client_monitor", query_string={
        "user_id": "12", "start_date": "2025-02-01", "end_date": "2025-01-01"}), 400)


def test_other_users_client_id_gives_empty_monitor_and_health(client, db):
    theirs = register(client, user_id="13")
    send(client, report(theirs, midnight(-1)))
    assert get(client, "client_monitor", client_id=theirs)["data"] == []
    assert get(client, "client_health", client_id=theirs)["data"] == []
    assert get(client, "client_health")["data"] == []


# ---- client_health --------------------------------------------------------------------------

def test_client_health_range_includes_the_whole_end_day(client, db):
    cid = register(client)
    start, end = midnight(-3), midnight(-2)
    edges = [start - timedelta(microseconds=1), start, end + timedelta(hours=23, minutes=59, seconds=59.999999),
             end + timedelta(days=1)]
    send_batch(client, [report(cid, t) for t in edges])
    data = get(client, "client_health", start_date=start.date().isoformat(), end_date=end.date().isoformat())["data"]
    assert [r["timestamp"] for r in data] == [iso(edges[2]), iso(edges[1])]


def test_client_health_accepts_full_iso_times(client, db):
    cid = register(client)
    base = midnight(-1) + timedelta(hours=10)
    send_batch(client, [report(cid, base + timedelta(minutes=m)) for m in (0, 10, 20)])
    data = get(client, "client_health", start_date=iso(base + timedelta(minutes=5)),
               end_date=iso(base + timedelta(minutes=20)))["data"]
    assert [r["timestamp"] for r in data] == [iso(base + timedelta(minutes=20)), iso(base + timedelta(minutes=10))]


@pytest.mark.parametrize("params", [{"start_date": "2025-07-02", "end_date": "2025-07-01"},
                                    {"start_date": "2025-13-01"}, {"limit": "0"}, {"limit": "10001"},
                                    {"before": "soon"}])
def test_client_health_rejects_bad_range_or_paging(client, db, params):
    assert get(client, "client_health", 400, **params)["data"] is None


def test_client_health_pages_newest_first_with_limit_and_before(client, db):
    cid = register(client, name="pager")
    times = [midnight(-1) + timedelta(minutes=m) for m in range(5)]
    send_batch(client, [report(cid, t, cpu=i, rx=100 + i, tx=200 + i) for i, t in enumerate(times)])
    page = get(client, "client_health", limit=2)["data"]
    assert [r["timestamp"] for r in page] == [iso(times[4]), iso(times[3])]
    assert page[0] == {"client_id": cid, "client_name": "pager", "timestamp": iso(times[4]), "cpu_usage": 4,
                       "mem_usage": 60, "disk_usage": 30, "network_up": 204, "network_down": 104}
    page = get(client, "client_health", limit=2, before=page[-1]["timestamp"])["data"]
    assert [r["timestamp"] for r in page] == [iso(times[2]), iso(times[1])]
    page = get(client, "client_health", limit=2, before=page[-1]["timestamp"])["data"]
    assert [r["timestamp"] for r in page] == [iso(times[0])]


def test_client_health_pages_are_the_newest_rows_over_all_clients(client, db):
    # Three clients whose reports interleave, one of them much busier: every page with a limit,
    # a `before` or a time range is the matching prefix of the full newest-first stream.
    cids = [register(client, name=f"pager {i}") for i in range(3)]
    for i, cid in enumerate(cids):
        steps = range(0, 60, 1) if i == 0 else range(i, 60, 7)
        send_batch(client, [report(cid, midnight(-1) + timedelta(minutes=m)) for m in steps])
    full = json.loads(client.get("/api/user/client_health", query_string={"user_id": "12"}).get_data())["data"]
    assert len(full) == 60 + 9 + 9
    key = [(r["timestamp"], r["client_id"]) for r in full]
    assert key == sorted(key, key=lambda k: (k[0], [-ord(c) for c in k[1]]), reverse=True)
    for limit in (1, 5, 20, 100):
        assert get(client, "client_health", limit=limit)["data"] == full[:limit]
    before = iso(midnight(-1) + timedelta(minutes=30))
    older = [r for r in full if r["timestamp"] < before]
    assert get(client, "client_health", limit=10, before=before)["data"] == older[:10]
    window = {"start_date": iso(midnight(-1) + timedelta(minutes=10)),
              "end_date": iso(midnight(-1) + timedelta(minutes=20))}
    inside = [r for r in full if window["start_date"] <= r["timestamp"] <= window["end_date"]]
    assert get(client, "client_health", limit=4, **window)["data"] == inside[:4]
    assert get(client, "client_health", limit=3, client_id=cids[1])["data"] == \
        [r for r in full if r["client_id"] == cids[1]][:3]


def test_client_health_leaves_out_invalid_clients_paged_or_streamed(client, db):
    kept, dropped = register(client, name="kept"), register(client, name="dropped")
    send_batch(client, [report(cid, midnight(-1) + timedelta(minutes=m)) for cid in (kept, dropped) for m in range(3)])
    assert_envelope(client.post("/api/user/edit_client_info",
                                json={"user_id": "12", "client_id": dropped, "valid_status": "invalid"}), 200)
    paged = get(client, "client_health", limit=10)["data"]
    streamed = json.loads(client.get("/api/user/client_health", query_string={"user_id": "12"}).get_data())["data"]
    assert [r["client_id"] for r in paged] == [kept] * 3 and streamed == paged


def test_client_health_without_limit_streams_every_row(client, db):
    cid = register(client)
    rows(db, """insert into heartbeat (client_id, cpu_usage, mem_usage, disk_usage, timestamp)
                select %s, 1, 2, 3, %s + make_interval(mins => n) from generate_series(0, 2499) as n""",
         bytes.fromhex(cid), midnight(-5))  # more rows than one streamed chunk
    resp = client.get("/api/user/client_health", query_string={"user_id": "12"})
    body = json.loads(resp.get_data())
    assert resp.status_code == 200 and body["success"] is True
    stamps = [r["timestamp"] for r in body["data"]]
    assert len(stamps) == 2500 and stamps == sorted(stamps, reverse=True)
    assert stamps[-1] == iso(midnight(-5))


def test_client_health_stream_holds_a_chunk_not_the_answer(client, db, monkeypatch):
    # "Memory stays flat however many rows match": while 30,000 rows stream out in chunks of 200,
    # the Python memory in use at its peak stays a small part of the answer, which a buffered
    # answer would hold whole.
    monkeypatch.setattr(monitor, "STREAM_CHUNK", 200)
    cid = register(client)
    rows(db, """insert into heartbeat (client_id, cpu_usage, mem_usage, disk_usage, timestamp)
                select %s, 1, 2, 3, %s + make_interval(secs => n) from generate_series(1, 30000) as n""",
         bytes.fromhex(cid), midnight(-3))
    resp = client.get("/api/user/client_health", query_string={"user_id": "12"}, buffered=False)
    tracemalloc.start()
    try:
        size = sum(len(chunk) for chunk in resp.response)  # each chunk dropped once counted
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        resp.close()
    assert size > 5_000_000 and peak < size / 4, (size, peak)


def test_client_health_stream_in_many_slices_is_the_one_statement_answer(client, db, monkeypatch):
    # Slices of about two rows: the width grows across gaps of days and shrinks in busy hours, and
    # reports at the same instant from several clients stay together in one slice and in order.
    monkeypatch.setattr(monitor, "STREAM_SLICE_ROWS", 2)
    cids = [register(client, name=f"slice {i}") for i in range(3)]
    base = midnight(-6)
    times = [base + timedelta(minutes=m) for m in (0, 1, 2, 3, 60, 61, 62)] + \
        [base + timedelta(days=3, hours=h) for h in (0, 5)] + [base + timedelta(days=5, seconds=s) for s in range(9)]
    send_batch(client, [report(cid, t) for t in times for cid in cids[:2]] + [report(cids[2], times[4])])
    streamed = json.loads(client.get("/api/user/client_health", query_string={"user_id": "12"}).get_data())["data"]
    assert len(streamed) == 2 * len(times) + 1
    assert streamed == get(client, "client_health", limit=10000)["data"]
    for extra in ({"client_id": cids[1]}, {"before": iso(times[10])},
                  {"start_date": iso(times[2]), "end_date": iso(times[9])}):
        streamed = json.loads(client.get("/api/user/client_health",
                                         query_string={"user_id": "12", **extra}).get_data())["data"]
        assert streamed and streamed == get(client, "client_health", limit=10000, **extra)["data"]


# ---- indexes --------------------------------------------------------------------------------

def _seq_scans(plan):
    found = []
    if plan.get("Node Type") == "Seq Scan":
        found.append(plan.get("Relation Name"))
    for child in plan.get("Plans", []):
        found.extend(_seq_scans(child))
    return found


def test_list_stat_and_detail_never_scan_the_heartbeat_table(client, db):
    cids = [register(client, name=f"c{i}") for i in range(3)]
    send_batch(client, [report(c, None) for c in cids])
    rows(db, """insert into heartbeat (client_id, cpu_usage, mem_usage, disk_usage, timestamp)
                select client_id, 1, 2, 3, now() - make_interval(mins => n)
                  from gpu_assets, generate_series(1, 2000) as n""")
    rows(db, "analyze")
    cid = bytes.fromhex(cids[0])
    plans = {
        "client_list": (queries.client_list.sql, {"user_id": "12", "client_id": None, "status": None, "name": None,
                                                  "valid_status": None, "live": False, "window_seconds": 120,
                                                  "interval": 120, "now": now()}),
        "client_stat": (queries.client_stat.sql, {"user_id": "12", "window_seconds": 120, "interval": 120,
                                                  "temp_warning": 85, "now": now()}),
        "client_detail": (queries.client_detail.sql, {"user_id": "12", "client_id": cid, "interval": 120,
                                                      "now": now()}),
    }
    with db.cursor() as cur:
        for name, (text, params) in plans.items():
            cur.execute("explain (format json) " + text, params)
            plan = cur.fetchone()[0][0]["Plan"]
            assert "heartbeat" not in _seq_scans(plan), name


def _rows_read(plan, table):
    """Rows the plan's scans of `table` returned, over all their loops."""
    found = plan["Actual Rows"] * plan["Actual Loops"] if plan.get("Relation Name") == table else 0
    return found + sum(_rows_read(child, table) for child in plan.get("Plans", []))


def test_health_reads_the_windows_daily_rollups_not_every_day_on_record(client, db):
    """Health looks at 7 days: a client's older days must not be read (figure 4's rule, the cost
    does not grow with the history outside what is shown)."""
    cid = register(client)
    backdate(db, cid, timedelta(days=60))
    rows(db, "insert into client_daily_stats (date, client_id, total_heartbeats, health_heartbeats, last_heartbeat)"
             " select %s::date - n, %s, 700, 700, now() from generate_series(0, 59) as n",
         now().date(), bytes.fromhex(cid))
    rows(db, "analyze client_daily_stats")
    statements = {
        "client_list": (queries.client_list.sql, {"user_id": "12", "client_id": None, "status": None, "name": None,
                                                  "valid_status": None, "live": False, "window_seconds": 120,
                                                  "interval": 120, "now": now()}),
        "client_detail": (queries.client_detail.sql, {"user_id": "12", "client_id": bytes.fromhex(cid),
                                                      "interval": 120, "now": now()}),
        "fleet_metrics": (queries.fleet_metrics.sql, {"user_id": "12", "window_seconds": 120, "interval": 120,
                                                      "now": now()}),
    }
    with db.cursor() as cur:
        for name, (text, params) in statements.items():
            cur.execute("explain (analyze, format json) " + text, params)
            assert _rows_read(cur.fetchone()[0][0]["Plan"], "client_daily_stats") == 7, name
    assert get(client, "client_list")["data"]["devices"][0]["health"] > 0  # and they count


def test_day_configured_with_a_zero_bucket_width_takes_the_default(client, db):
    cid = register(client)
    backdate(db, cid, timedelta(days=2))
    rows(db, "insert into heartbeat_config_daily (date, heartbeat_interval_secs) values (%s, 0)", midnight(-1).date())
    send_batch(client, every_bucket(cid, midnight(-1), 360, step=240))
    assert get(client, "client_stat")["data"]["uptime_rate"] == 50
    assert get(client, "client_list")["data"]["devices"][0]["health"] >= 0


def test_reads_are_evaluated_at_the_apps_clock(app, client, db):
    # "Now" is a parameter of the reads, not the database's now(): a test fixes it, whatever the time of day.
    cid = register(client)
    backdate(db, cid, timedelta(days=10))
    send_all(client, every_bucket(cid, midnight(-4), 720))  # every bucket of one day, three days before yesterday
    app.extensions["gpufs"].clock = lambda: midnight(-3) + timedelta(hours=12)
    forget_cache(app)
    assert get(client, "client_stat")["data"]["uptime_rate"] == 100
    app.extensions["gpufs"].clock = lambda: midnight(-1) + timedelta(hours=12)
    forget_cache(app)
    assert get(client, "client_stat")["data"]["uptime_rate"] == 0
