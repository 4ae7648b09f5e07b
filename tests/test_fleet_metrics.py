"""/metrics/fleet (contract section 11) on real PostgreSQL, scraped by a real Prometheus and checked by
promtool; and the server's own /metrics as the README describes it."""
import json
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import timedelta

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gpufs import create_app
from gpufs.fleet_metrics import IDLE_SECONDS, STALE, Scrapes

from .conftest import ROOT, new_client_id, register, tool_or_skip
from .promserver import deploy_config, gunicorn, prometheus
from .reports import gpu, report, rows, send

GPU_FAMILIES = {"DCGM_FI_DEV_GPU_TEMP": "device_temp", "DCGM_FI_DEV_GPU_UTIL": "device_gpuusage",
                "DCGM_FI_DEV_POWER_USAGE": "device_powerusage"}
GPU_LABELS = {"gpu", "UUID", "modelName", "Hostname", "client_id", "user_id"}
CLIENT_LABELS = {"client_id", "Hostname", "user_id"}


@pytest.fixture
def fleet_app(app_config, db):
    app = create_app({**app_config, "FLEET_METRICS_CACHE_SECONDS": 0})
    yield app
    app.extensions["gpufs"].close()


@pytest.fixture
def fleet(fleet_app):
    return fleet_app.test_client()


def scrape(client, status=200, **params):
    resp = client.get("/metrics/fleet", query_string=params)
    assert resp.status_code == status, resp.get_data(as_text=True)
    return resp.get_data(as_text=True)


def families(text):
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(text, name, **labels):
    """[(labels, value)] of family `name` whose labels include `labels`."""
    found = families(text).get(name)
    return [(s.labels, s.value) for s in (found.samples if found else [])
            if all(s.labels.get(k) == v for k, v in labels.items())]


def value(text, name, **labels):
    found = samples(text, name, **labels)
    assert len(found) == 1, (name, labels, found)
    return found[0][1]


def make_silent(db, cid):
    """The server last received a report from `cid` an hour ago: past any online window."""
    rows(db, "update system_info set last_seen_at = now() - interval '1 hour' where client_id = %s",
         bytes.fromhex(cid))


# ---- what one scrape shows ----------------------------------------------------------------------

def test_fleet_metrics_show_every_gpu_of_a_live_client_in_dcgm_names(fleet, db):
    cid = register(fleet, name="rig-1")
    send(fleet, report(cid, None, cpu=41, mem=52, disk=63, devices=[
        gpu(0, name="NVIDIA A100", temp=71, usage=88, power_usage=301),
        gpu(1, name="NVIDIA A100", temp=64, usage=12, power_usage=95)]))
    text = scrape(fleet)
    found = families(text)
    for name, help_text in (("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C)."),
                            ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %)."),
                            ("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).")):
        assert (found[name].type, found[name].documentation) == ("gauge", help_text)
        assert all(set(s.labels) == GPU_LABELS for s in found[name].samples)
    labels = {"Hostname": "rig-1", "client_id": cid, "user_id": "12", "modelName": "NVIDIA A100"}
    assert value(text, "DCGM_FI_DEV_GPU_TEMP", gpu="0", **labels) == 71
    assert value(text, "DCGM_FI_DEV_GPU_TEMP", gpu="1", **labels) == 64
    assert value(text, "DCGM_FI_DEV_GPU_UTIL", gpu="0", **labels) == 88
    assert value(text, "DCGM_FI_DEV_POWER_USAGE", gpu="1", **labels) == 95
    client = {"Hostname": "rig-1", "client_id": cid, "user_id": "12"}
    assert value(text, "gpufs_client_up", **client) == 1
    assert value(text, "gpufs_client_cpu_usage_percent", **client) == 41
    assert value(text, "gpufs_client_memory_usage_percent", **client) == 52
    assert value(text, "gpufs_client_disk_usage_percent", **client) == 63
    assert 0 <= value(text, "gpufs_client_health_percent", **client) <= 100
    seen = rows(db, "select extract(epoch from last_seen_at)::float8 from system_info")[0][0]
    assert value(text, "gpufs_client_last_seen_timestamp_seconds", **client) == pytest.approx(seen)
    for name in ("gpufs_client_up", "gpufs_client_health_percent", "gpufs_client_cpu_usage_percent",
                 "gpufs_client_last_seen_timestamp_seconds"):
        assert found[name].type == "gauge" and all(set(s.labels) == CLIENT_LABELS for s in found[name].samples)
    assert samples(text, "gpufs_client_info", **client) == [
        ({**client, "client_status": "online", "live_status": "online", "valid_status": "valid", "os_type": "Linux"},
         1)]


def test_fleet_metrics_show_the_richer_readings_a_report_gives(fleet, db):
    cid = register(fleet, name="rich")
    uuid = "GPU-5b2a1c3e-7f4d-4c1a-9e8b-0a1b2c3d4e5f"
    send(fleet, report(cid, None, devices=[
        {**gpu(0, name="NVIDIA H100"), "uuid": uuid, "fan_speed": 45, "sm_clock_mhz": 1980, "mem_clock_mhz": 2619,
         "mem_total_mb": 81559, "mem_used_mb": 20480, "xid": 79},
        gpu(1, name="NVIDIA H100")]))
    text = scrape(fleet)
    labels = {"client_id": cid, "gpu": "0", "UUID": uuid, "modelName": "NVIDIA H100"}
    for name, expected in (("DCGM_FI_DEV_FB_USED", 20480), ("DCGM_FI_DEV_FB_FREE", 81559 - 20480),
                           ("DCGM_FI_DEV_SM_CLOCK", 1980), ("DCGM_FI_DEV_MEM_CLOCK", 2619),
                           ("DCGM_FI_DEV_FAN_SPEED", 45), ("DCGM_FI_DEV_XID_ERRORS", 79),
                           ("DCGM_FI_DEV_GPU_TEMP", 72)):
        assert value(text, name, **labels) == expected, name
        assert families(text)[name].type == "gauge"
    # GPU 1 reported none of them: those families have no sample for it, and its UUID is unknown.
    for name in ("DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_SM_CLOCK", "DCGM_FI_DEV_MEM_CLOCK",
                 "DCGM_FI_DEV_FAN_SPEED", "DCGM_FI_DEV_XID_ERRORS"):
        assert samples(text, name, client_id=cid, gpu="1") == [], name
    assert samples(text, "DCGM_FI_DEV_GPU_TEMP", client_id=cid, gpu="1")[0][0]["UUID"] == ""


def test_fleet_metrics_silent_client_has_no_gpu_samples_and_is_down(fleet, db):
    live = register(fleet, name="live")
    silent = register(fleet, name="silent")
    never = register(fleet, name="never")
    for cid in (live, silent):
        send(fleet, report(cid, None))
    make_silent(db, silent)
    text = scrape(fleet)
    for name in GPU_FAMILIES:
        assert [s[0]["client_id"] for s in samples(text, name)] == [live]
    for cid, up in ((live, 1), (silent, 0), (never, 0)):
        assert value(text, "gpufs_client_up", client_id=cid) == up
    # Its last figures are old news, not a reading: no host figures either, but when it was last heard.
    assert samples(text, "gpufs_client_cpu_usage_percent", client_id=silent) == []
    assert value(text, "gpufs_client_last_seen_timestamp_seconds", client_id=silent) < time.time() - 3000
    assert samples(text, "gpufs_client_last_seen_timestamp_seconds", client_id=never) == []  # never invented
    assert samples(text, "gpufs_client_info", client_id=silent)[0][0]["live_status"] == "offline"
    assert len(samples(text, "gpufs_client_health_percent")) == 3


def test_fleet_metrics_drop_a_clients_gpus_once_the_online_window_passes(fleet_app, fleet, db):
    cid = register(fleet, name="fading")
    send(fleet, report(cid, None, devices=[gpu(0, temp=70)]))
    received = rows(db, "select last_seen_at from system_info")[0][0]
    window = fleet_app.extensions["gpufs"].config["ONLINE_WINDOW_SECONDS"]
    for seconds_after, up in ((window - 1, 1), (window + 1, 0)):
        fleet_app.extensions["gpufs"].clock = lambda s=seconds_after: received + timedelta(seconds=s)
        text = scrape(fleet)
        assert value(text, "gpufs_client_up", client_id=cid) == up
        assert len(samples(text, "DCGM_FI_DEV_GPU_TEMP", client_id=cid)) == up


def test_fleet_metrics_live_whatever_the_registered_status(fleet, db):
    cid = register(fleet, name="resting", status="maintenance")
    send(fleet, report(cid, None, devices=[gpu(0, temp=55)]))
    text = scrape(fleet)
    assert value(text, "gpufs_client_up", client_id=cid) == 1
    assert value(text, "DCGM_FI_DEV_GPU_TEMP", client_id=cid, gpu="0") == 55
    info = samples(text, "gpufs_client_info", client_id=cid)[0][0]
    assert (info["client_status"], info["live_status"]) == ("maintenance", "maintenance")


def test_fleet_metrics_leave_out_invalid_clients(fleet, db):
    kept = register(fleet, name="kept")
    dropped = register(fleet, name="dropped")
    for cid in (kept, dropped):
        send(fleet, report(cid, None))
    assert fleet.post("/api/user/edit_client_info", json={
        "user_id": "12", "client_id": dropped, "valid_status": "invalid"}).status_code == 200
    text = scrape(fleet)
    assert dropped not in text
    assert value(text, "gpufs_client_up", client_id=kept) == 1


def test_fleet_metrics_unknown_reading_has_no_sample(fleet, db):
    cid = register(fleet, name="partial")
    send(fleet, report(cid, None, devices=[gpu(0, temp=60, usage=30)]))
    rows(db, "update device_info set device_temp = null where client_id = %s", bytes.fromhex(cid))
    text = scrape(fleet)
    assert samples(text, "DCGM_FI_DEV_GPU_TEMP", client_id=cid) == []  # NULL: no sample, never a 0
    assert value(text, "DCGM_FI_DEV_GPU_UTIL", client_id=cid) == 30


def test_fleet_metrics_escape_label_values(fleet, db):
    quoted, broken = register(fleet, name='a"b\\c'), register(fleet, name="two\nlines")
    for cid in (quoted, broken):
        send(fleet, report(cid, None))
    text = scrape(fleet)
    assert 'Hostname="a\\"b\\\\c"' in text and 'Hostname="two\\nlines"' in text
    assert all(not line or line.startswith(("#", "DCGM_", "gpufs_")) for line in text.split("\n"))
    # Read back by a parser, the names are exactly the registered ones.
    assert value(text, "DCGM_FI_DEV_GPU_TEMP", client_id=quoted)  # one sample
    assert samples(text, "DCGM_FI_DEV_GPU_TEMP", client_id=quoted)[0][0]["Hostname"] == 'a"b\\c'
    assert samples(text, "gpufs_client_up", client_id=broken)[0][0]["Hostname"] == "two\nlines"


def add_alert(db, user_id, cid, condition, state="firing", device_index=None):
    rows(db, "insert into gpufs_alerts (user_id, client_id, condition, device_index, state, starts_at, ends_at,"
             " message, updated_at) values (%s, %s, %s, %s, %s, now(), case when %s = 'resolved' then now() end,"
             " 'test', now())", user_id, bytes.fromhex(cid), condition, device_index, state, state)


def test_fleet_metrics_count_firing_alerts_per_user_and_condition(fleet, db):
    mine, dropped = register(fleet, name="alerting"), register(fleet, name="invalid")
    theirs = register(fleet, user_id="13", name="calm")
    add_alert(db, "12", mine, "gpu_hot", device_index=0)
    add_alert(db, "12", mine, "gpu_hot", device_index=1)
    add_alert(db, "12", mine, "offline", state="resolved")
    add_alert(db, "12", dropped, "disk_full")
    assert fleet.post("/api/user/edit_client_info", json={
        "user_id": "12", "client_id": dropped, "valid_status": "invalid"}).status_code == 200
    add_alert(db, "13", theirs, "error_status")
    text = scrape(fleet)
    assert families(text)["gpufs_alerts_firing"].type == "gauge"
    assert {(s[0]["user_id"], s[0]["condition"]): s[1] for s in samples(text, "gpufs_alerts_firing")} == {
        ("12", "offline"): 0, ("12", "gpu_hot"): 2, ("12", "error_status"): 0, ("12", "disk_full"): 0,
        ("13", "offline"): 0, ("13", "gpu_hot"): 0, ("13", "error_status"): 1, ("13", "disk_full"): 0}
    assert {s[0]["user_id"] for s in samples(scrape(fleet, user_id="13"), "gpufs_alerts_firing")} == {"13"}


def test_fleet_metrics_user_id_narrows_to_one_user(fleet, db):
    mine, theirs = register(fleet, user_id="12", name="mine"), register(fleet, user_id="13", name="theirs")
    both = scrape(fleet)
    assert {s[0]["client_id"] for s in samples(both, "gpufs_client_up")} == {mine, theirs}
    assert {s[0]["client_id"] for s in samples(scrape(fleet, user_id="13"), "gpufs_client_up")} == {theirs}
    assert samples(scrape(fleet, user_id="99"), "gpufs_client_up") == []
    assert "user_id" in fleet.get("/metrics/fleet", query_string={"user_id": "x" * 33}).get_json()["message"]
    assert fleet.get("/metrics/fleet", query_string={"user_id": ""}).status_code == 400


def test_fleet_metrics_are_kept_a_few_seconds_per_user(app_config, db):
    app = create_app({**app_config, "FLEET_METRICS_CACHE_SECONDS": 3600})
    client = app.test_client()
    cid = register(client, name="cached")
    first = scrape(client)
    pool = app.extensions["gpufs"].pool
    send(client, report(cid, None))
    checkouts = pool.checkouts
    assert scrape(client) == first  # the same answer, without touching the database
    assert pool.checkouts == checkouts
    assert value(scrape(client, user_id="12"), "gpufs_client_up", client_id=cid) == 1  # another scope: fresh
    app.extensions["gpufs"].close()


class Clock:
    """Monotonic seconds that move only when a test moves them."""

    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def rendering(fail=None):
    """A render that numbers its bodies per scope (b"12:1", b"12:2", ...) and records its calls; it
    raises `fail` while that is set."""
    calls = []

    def render(scope):
        if fail:
            raise fail[0]
        calls.append(scope)
        return f"{scope}:{calls.count(scope)}".encode()
    return render, calls


def test_fleet_metrics_scope_is_rendered_on_its_first_scrape_then_ahead_of_the_next():
    clock, (render, calls) = Clock(), rendering()
    scrapes = Scrapes(30, render, clock=clock, background=False)
    assert scrapes.get("12") == b"12:1"  # the scope's first scrape waits for its render
    clock.now += 29
    assert scrapes.refresh() == pytest.approx(1)  # nothing due yet: the next render in a second
    assert scrapes.get("12") == b"12:1"
    clock.now += 1
    assert scrapes.refresh() == pytest.approx(30)
    assert calls == ["12", "12"]  # rendered again ahead of the scrape...
    assert scrapes.get("12") == b"12:2" and calls == ["12", "12"]  # ...which only reads it
    assert scrapes.get(None) == b"None:1"  # each scope its own
    assert calls == ["12", "12", None]


def test_fleet_metrics_scope_no_longer_scraped_is_no_longer_rendered():
    clock, (render, calls) = Clock(), rendering()
    scrapes = Scrapes(30, render, clock=clock, background=False)
    scrapes.get("12")
    for _ in range(IDLE_SECONDS // 30):
        clock.now += 30
        scrapes.refresh()
    clock.now += 30
    rendered = len(calls)
    assert scrapes.refresh() == 30  # forgotten: nothing left to render
    assert len(calls) == rendered
    assert scrapes.get("12") == f"12:{rendered + 1}".encode()  # scraped again: rendered on demand


def test_fleet_metrics_failed_render_keeps_the_last_body_until_it_is_stale():
    clock, fail = Clock(), []
    render, calls = rendering(fail)
    scrapes = Scrapes(30, render, clock=clock, background=False)
    scrapes.get("12")
    fail.append(RuntimeError("database away"))
    for _ in range(STALE - 1):
        clock.now += 30
        scrapes.refresh()  # logged, not raised
        assert scrapes.get("12") == b"12:1"
    clock.now += 30
    with pytest.raises(RuntimeError):  # too old to serve: the scrape renders, and the outage shows
        scrapes.get("12")
    fail.clear()
    assert scrapes.get("12") == b"12:2"


def test_fleet_metrics_without_a_period_render_every_scrape():
    render, calls = rendering()
    scrapes = Scrapes(0, render, clock=Clock())
    assert [scrapes.get("12"), scrapes.get("12")] == [b"12:1", b"12:2"]


def test_fleet_metrics_rendered_ahead_agree_with_a_scrape_rendered_at_once(app_config, db):
    ahead = create_app({**app_config, "FLEET_METRICS_CACHE_SECONDS": 30})
    plain = create_app({**app_config, "FLEET_METRICS_CACHE_SECONDS": 0})
    client = ahead.test_client()
    cid = register(client, name="ahead")
    send(client, report(cid, None, devices=[gpu(0, temp=50)]))
    now = ahead.extensions["gpufs"].clock()
    for app in (ahead, plain):
        app.extensions["gpufs"].clock = lambda: now
    first = scrape(client)
    scrapes = ahead.extensions["gpufs"].fleet_scrapes
    clock = Clock(scrapes.clock())
    scrapes.clock = clock  # the thread waits out its 30 s; this test moves the clock instead
    rows(db, "update device_info set device_temp = 81 where client_id = %s", bytes.fromhex(cid))
    clock.now += 30
    scrapes.refresh()  # as the thread does: outside any request, in the app's context
    text = scrape(client)
    assert value(text, "DCGM_FI_DEV_GPU_TEMP", client_id=cid) == 81 != value(first, "DCGM_FI_DEV_GPU_TEMP")
    assert text == scrape(plain.test_client())
    for app in (ahead, plain):
        app.extensions["gpufs"].close()


# ---- token mode ---------------------------------------------------------------------------------

def create_key(app, *args):
    result = app.test_cli_runner().invoke(args=["gpufs", "token", "create", *args])
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()[0].split(": ")[1]


def test_fleet_metrics_in_token_mode_need_a_key_and_show_only_its_user(app_config, db):
    app = create_app({**app_config, "AUTH_MODE": "token", "FLEET_METRICS_CACHE_SECONDS": 0})
    own, admin = create_key(app, "--user", "12"), create_key(app, "--user", "1", "--admin")
    client = app.test_client()
    as_admin = {"Authorization": f"Bearer {admin}"}
    mine = register_as(client, as_admin, "12")
    theirs = register_as(client, as_admin, "13")

    def up_clients(key, status=200, **params):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        resp = client.get("/metrics/fleet", query_string=params, headers=headers)
        assert resp.status_code == status, resp.get_data(as_text=True)
        return {s[0]["client_id"] for s in samples(resp.get_data(as_text=True), "gpufs_client_up")} \
            if status == 200 else resp.get_json()["message"]

    assert "authorization" in up_clients(None, 401)
    assert "authorization" in up_clients("x" * 48, 401)
    assert up_clients(admin) == {mine, theirs}
    assert up_clients(admin, user_id="13") == {theirs}
    assert up_clients(own) == {mine}
    assert up_clients(own, user_id="12") == {mine}
    assert "user_id" in up_clients(own, 403, user_id="13")
    app.extensions["gpufs"].close()


def register_as(client, headers, user_id):
    cid = new_client_id()
    resp = client.post("/api/user/insert_client", headers=headers, json={
        "user_id": user_id, "client_id": cid, "client_status": "online", "name": f"user-{user_id}"})
    assert resp.status_code == 200, resp.get_json()
    return cid


# ---- a real Prometheus and promtool, scraping the real server -----------------------------------

def post(server, path, body):
    req = urllib.request.Request(server + path, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def register_on(server, name, user_id="12"):
    cid = new_client_id()
    assert post(server, "/api/user/insert_client", {
        "user_id": user_id, "client_id": cid, "client_status": "online", "name": name, "os_type": "Linux"}) == 200
    return cid


@pytest.fixture(scope="module")
def prom(server, tmp_path_factory):
    """Prometheus scraping the test server every second, with deploy/prometheus.yml."""
    with prometheus(deploy_config(server.removeprefix("http://")), tmp_path_factory.mktemp("prometheus")) as p:
        yield p


def test_fleet_metrics_in_prometheus_show_reported_temp_and_drop_a_silent_client(server, prom, db):
    hot, quiet = register_on(server, "prom-hot"), register_on(server, "prom-quiet")
    rich = {**gpu(0, temp=77), "uuid": "GPU-0f0e0d0c", "mem_total_mb": 24564, "mem_used_mb": 1024}
    assert post(server, "/api/client/heartbeat", report(hot, None, devices=[rich, gpu(1, temp=40)])) == 200
    assert post(server, "/api/client/heartbeat", report(quiet, None, devices=[gpu(0, temp=66)])) == 200
    assert prom.targets_up() == {"gpufs", "gpufs_fleet"}

    temp = prom.poll('DCGM_FI_DEV_GPU_TEMP{Hostname="prom-hot",gpu="0"}', lambda r: r)
    assert [(r["metric"]["client_id"], r["metric"]["instance"], r["value"][1]) for r in temp] == [
        (hot, "prom-hot", "77")]
    assert prom.poll('DCGM_FI_DEV_GPU_TEMP{Hostname="prom-quiet"}', lambda r: r)[0]["value"][1] == "66"
    free = prom.query('DCGM_FI_DEV_FB_FREE{UUID="GPU-0f0e0d0c"}')
    assert [(r["metric"]["Hostname"], r["value"][1]) for r in free] == [("prom-hot", str(24564 - 1024))]

    make_silent(db, quiet)
    assert prom.poll('DCGM_FI_DEV_GPU_TEMP{Hostname="prom-quiet"}', lambda r: not r) == []
    assert prom.query('gpufs_client_up{Hostname="prom-quiet"}')[0]["value"][1] == "0"
    assert len(prom.query('DCGM_FI_DEV_GPU_TEMP{Hostname="prom-hot"}')) == 2  # the live one stays


def test_fleet_metrics_pass_promtool_check_but_for_dcgm_label_names(server, db):
    promtool = tool_or_skip("promtool", "apt-get install prometheus")
    for name in ('q"uote\\d', "new\nline", "rig"):
        cid = register_on(server, name)
        rich = {**gpu(1), "uuid": "GPU-1", "fan_speed": 30, "sm_clock_mhz": 1400, "mem_clock_mhz": 5000,
                "mem_total_mb": 8192, "mem_used_mb": 100, "xid": 13}
        assert post(server, "/api/client/heartbeat", report(cid, None, devices=[gpu(0), rich])) == 200
    register_on(server, "never-reported")
    deadline = time.monotonic() + 30
    while True:  # the server may still hold an answer from before these reports for a few seconds
        with urllib.request.urlopen(server + "/metrics/fleet", timeout=10) as resp:
            body = resp.read()
        if b'Hostname="never-reported"' in body or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert b"DCGM_FI_DEV_GPU_TEMP{" in body and b"DCGM_FI_DEV_XID_ERRORS{" in body
    check = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=60)
    complaints = (check.stdout + check.stderr).decode().splitlines()
    # dcgm-exporter's own camelCase label (modelName) is kept for its dashboards; nothing else.
    assert complaints and all(
        re.fullmatch(r"DCGM_FI_DEV_\w+ label names should be written in 'snake_case' not 'camelCase'", line)
        for line in complaints), complaints


# ---- the server's own /metrics, as the README describes it ---------------------------------------

def server_sample(client, name, **labels):
    """One sample of /metrics by its own name (a counter's `_total`), 0 when absent."""
    for family in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True)):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return 0.0


def test_single_report_refused_for_bad_figures_counts_as_rejected(fleet, db):
    cid = register(fleet, name="counted")
    before = server_sample(fleet, "gpufs_heartbeats_total", outcome="rejected")
    bad = report(cid, None, cpu=101)
    assert fleet.post("/api/client/heartbeat", json=bad).status_code == 400
    assert fleet.post("/api/client/heartbeat", json={**bad, "system": "none"}).status_code == 400
    assert server_sample(fleet, "gpufs_heartbeats_total", outcome="rejected") == before + 2
    # As the batch endpoint counts the same report.
    assert fleet.post("/api/client/heartbeats", json={"reports": [bad]}).status_code == 200
    assert server_sample(fleet, "gpufs_heartbeats_total", outcome="rejected") == before + 3


def readme_promql():
    """Every PromQL expression README.md offers: each line of its ```promql blocks and each alert
    rule's `expr:`."""
    text = (ROOT / "README.md").read_text()
    found = []
    for lang, block in re.findall(r"```(\w*)\n(.*?)```", text, re.S):
        if lang == "promql":
            found += [line.strip() for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        elif lang == "yaml":
            found += [m.strip() for m in re.findall(r"^\s*expr:\s*(.+?)\s*$", block, re.M)]
    return found


SELECTOR = re.compile(r"\b((?:gpufs|DCGM|up)\w*)(\{[^}]*\})?")


def test_every_promql_in_the_readme_runs_and_answers_where_there_is_data(server, prom, db):
    expressions = readme_promql()
    assert len(expressions) >= 10, expressions
    # Some data for every family: requests (cache misses, then hits), reports stored and rejected.
    cid = register_on(server, "readme")
    for minute in range(3):
        assert post(server, "/api/client/heartbeat", report(cid, None, devices=[gpu(0, temp=50 + minute)])) == 200
        with urllib.request.urlopen(f"{server}/api/user/client_list?user_id=12", timeout=10) as resp:
            assert resp.status == 200
    assert post(server, "/api/client/heartbeat", report(cid, None, cpu=101)) == 400
    assert post(server, "/api/client/heartbeats", {"reports": [report(cid, None, cpu=101)]}) == 200
    prom.targets_up()
    for expr in expressions:
        status, _, error = prom.api("query", query=expr)
        assert status == "success", f"{expr}: {error}"
        # An expression over series that all exist answers something (NaN included), unless it is
        # a filter (an alert's comparison) that may rightly answer nothing.
        selectors = ["".join(m) for m in SELECTOR.findall(expr)]
        filtering = re.search(r"[<>]|[=!]=", re.sub(r"\{[^}]*\}", "", expr))
        if filtering or not all(prom.query(f"count({s})") for s in selectors):
            continue
        assert prom.poll(expr, lambda r: r, seconds=30), f"no result: {expr}"


def test_process_metrics_describe_the_whole_server_not_the_answering_worker(server):
    master = next(p for p in psutil.Process().children() if "gunicorn" in " ".join(p.cmdline()))
    deadline = time.monotonic() + 30
    while len(master.children()) < 2 and time.monotonic() < deadline:  # the second may still be booting
        time.sleep(0.1)
    workers = master.children()
    assert len(workers) == 2
    scrapes = []
    for _ in range(12):  # a fresh connection each: both workers answer some of them
        with urllib.request.urlopen(server + "/metrics", timeout=10) as resp:
            scrapes.append(families(resp.read().decode()))
    cpu = [f["process_cpu_seconds"].samples[0].value for f in scrapes]
    assert cpu == sorted(cpu), cpu  # one counter, never one worker's total then the other's
    assert all(f["process_start_time_seconds"].samples[0].value == pytest.approx(master.create_time())
               for f in scrapes)
    rss = sum(p.memory_info().rss for p in [master, *workers])
    assert scrapes[-1]["process_resident_memory_bytes"].samples[0].value == pytest.approx(rss, rel=0.2)
    assert scrapes[-1]["python_info"].samples[0].labels["implementation"] == "CPython"


def test_readme_alert_rules_load_in_prometheus(tmp_path):
    promtool = tool_or_skip("promtool", "apt-get install prometheus")
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
              if re.search(r"^groups:", b, re.M) and "rules:" in b]
    assert blocks
    for n, block in enumerate(blocks):
        (tmp_path / f"rules{n}.yml").write_text(block)
        check = subprocess.run([promtool, "check", "rules", str(tmp_path / f"rules{n}.yml")], capture_output=True,
                               timeout=60)
        assert check.returncode == 0, (check.stdout + check.stderr).decode()


def test_fleet_metrics_in_token_mode_scraped_with_the_deploy_configs_key(urls, db, tmp_path):
    app = create_app({"DATABASE_URL": urls["DATABASE_URL"], "REDIS_URL": "", "MIGRATE_ON_START": False,
                      "BACKGROUND_TASKS": False})
    own = create_key(app, "--user", "12")
    app.extensions["gpufs"].close()
    (tmp_path / "gpufs.key").write_text(own + "\n")
    with gunicorn(urls, tmp_path, AUTH_MODE="token", FLEET_METRICS_CACHE_SECONDS="1") as base:
        headers = {"Authorization": f"Bearer {own}", "Content-Type": "application/json"}
        target = urllib.parse.urlsplit(base).netloc
        mine = new_client_id()
        for path, body in (("/api/user/insert_client", {"user_id": "12", "client_id": mine, "client_status": "online",
                                                        "name": "token-rig"}),
                           ("/api/client/heartbeat", report(mine, None, devices=[gpu(0, temp=58)]))):
            req = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers=headers)
            with urllib.request.urlopen(req, timeout=10) as resp:
                assert resp.status == 200
        with pytest.raises(urllib.error.HTTPError) as refused:  # the same scrape without the key
            urllib.request.urlopen(base + "/metrics/fleet", timeout=10)
        assert refused.value.code == 401
        config = deploy_config(target, key_file=tmp_path / "gpufs.key")
        with prometheus(config, tmp_path / "prometheus") as prom:
            assert prom.targets_up() == {"gpufs", "gpufs_fleet"}
            temp = prom.poll('DCGM_FI_DEV_GPU_TEMP{Hostname="token-rig"}', lambda r: r)
            assert [(r["metric"]["user_id"], r["value"][1]) for r in temp] == [("12", "58")]
