"""Alerts: each condition fires at its threshold and not below, waits as the contract says, resolves,
survives a restart, never fires twice; GET /api/user/alerts and the alert settings endpoints."""
import threading
from datetime import datetime, timedelta, timezone

import psycopg2
import pytest

from gpufs import create_app
from gpufs.alerts import DEFAULTS, Lead, evaluate
from gpufs.db import queries
from gpufs.tasks import Leader, Task

from .conftest import assert_envelope, new_client_id, register
from .reports import gpu, one, report, rows, send, send_batch
from .test_auth import create_key

MINUTE = timedelta(minutes=1)
pytestmark = pytest.mark.usefixtures("db")  # every test starts with no alert, setting or notification


@pytest.fixture
def leader_conn(urls):
    """A connection like the background-task leader's: plain psycopg2, not in autocommit."""
    conn = psycopg2.connect(urls["DATABASE_URL"])
    yield conn
    conn.close()


@pytest.fixture
def at(leader_conn):
    """Evaluate every condition at the given time; return {condition: (opened, refreshed, resolved, queued)}."""
    return lambda now: evaluate(leader_conn, now)


def alerts(db, condition=None):
    return rows(db, """select condition, device_index, state, starts_at, ends_at, value, threshold
                         from gpufs_alerts where (%s::text is null or condition = %s) order by alert_id""",
                condition, condition)


def created_at(db, cid):
    return one(db, "select created_at at time zone 'UTC' from gpu_assets where client_id = %s", bytes.fromhex(cid))[0]


def now():
    return datetime.now(timezone.utc)


def hot(client, cid, ts, *temps):
    """A report at `ts` whose GPUs 0, 1, ... have these temperatures."""
    send(client, report(cid, ts, devices=[gpu(i, temp=t) for i, t in enumerate(temps)]))


# ---- offline ------------------------------------------------------------------------------------

def test_offline_fires_at_offline_minutes_after_registration_not_before(client, db, at):
    cid = register(client, status="online")
    t0 = created_at(db, cid)
    assert at(t0 + 5 * MINUTE - timedelta(microseconds=1))["offline"][0] == 0
    assert at(t0 + 5 * MINUTE)["offline"][0] == 1
    assert alerts(db) == [("offline", None, "firing", t0 + 5 * MINUTE, None, 5.0, 5.0)]


def test_offline_counts_from_the_last_heartbeat_and_resolves_on_recovery(client, db, at):
    cid = register(client, status="active")
    send(client, report(cid, None))
    seen = one(db, "select last_seen_at from system_info")[0]
    assert at(seen + 5 * MINUTE - timedelta(seconds=1))["offline"][0] == 0
    assert at(seen + 7 * MINUTE)["offline"][0] == 1
    assert alerts(db)[0][5] == 7.0  # value: minutes since the last heartbeat
    rows(db, "update system_info set last_seen_at = %s", seen + 8 * MINUTE)  # a heartbeat arrives
    assert at(seen + 9 * MINUTE)["offline"][2] == 1
    assert alerts(db) == [("offline", None, "resolved", seen + 7 * MINUTE, seen + 9 * MINUTE, 7.0, 5.0)]


def test_offline_after_the_evaluator_starts_waits_offline_minutes_but_keeps_what_fires(client, db, leader_conn):
    """Silence while no server listened is not the client's: it gets offline_minutes to report."""
    old, new = register(client, status="online"), register(client, status="online")
    rows(db, "update gpu_assets set created_at = created_at - interval '1 hour' where client_id = %s",
         bytes.fromhex(old))
    t0 = now()
    assert evaluate(leader_conn, t0)["offline"][0] == 1  # old: silent for an hour
    rows(db, "update gpu_assets set created_at = created_at - interval '1 hour' where client_id = %s",
         bytes.fromhex(new))
    restart = t0 + MINUTE
    assert evaluate(leader_conn, restart, since=restart)["offline"][:3] == (0, 1, 0)  # kept, none opened
    assert evaluate(leader_conn, restart + 5 * MINUTE - timedelta(seconds=1), since=restart)["offline"][0] == 0
    assert evaluate(leader_conn, restart + 5 * MINUTE, since=restart)["offline"][0] == 1


def test_a_missed_evaluation_starts_a_new_lead():
    lead, t0 = Lead(15), now()
    assert [lead.since(t0 + k * 15 * timedelta(seconds=1)) for k in range(4)] == [t0] * 4
    assert lead.since(t0 + 45 * timedelta(seconds=1) + MINUTE) == t0 + 45 * timedelta(seconds=1) + MINUTE


def test_offline_is_not_for_clients_in_maintenance(client, db, at):
    cid = register(client, status="maintenance")
    assert at(created_at(db, cid) + 60 * MINUTE)["offline"][0] == 0


def test_offline_minutes_is_the_users_own(client, db, at):
    cid = register(client, status="online")
    assert_envelope(client.post("/api/user/alert_settings", json={"user_id": "12", "offline_minutes": 30}), 200)
    t0 = created_at(db, cid)
    assert at(t0 + 29 * MINUTE)["offline"][0] == 0
    assert at(t0 + 30 * MINUTE)["offline"][0] == 1


# ---- error_status and disk_full -----------------------------------------------------------------

def test_error_status_fires_and_resolves_with_the_registered_status(client, db, at):
    cid = register(client, status="error")
    t0 = now()
    assert at(t0)["error_status"][0] == 1
    assert alerts(db) == [("error_status", None, "firing", t0, None, None, None)]
    assert_envelope(client.post("/api/user/edit_client_info", json={"user_id": "12", "client_id": cid,
                                                                    "client_status": "active"}), 200)
    assert at(t0 + MINUTE)["error_status"][2] == 1
    assert alerts(db)[0][2:5] == ("resolved", t0, t0 + MINUTE)


def test_disk_full_fires_at_disk_percent_not_below_and_resolves(client, db, at):
    cid = register(client)
    t0 = now() - 10 * MINUTE
    send(client, report(cid, t0, disk=94))
    assert at(t0)["disk_full"][0] == 0
    send(client, report(cid, t0 + MINUTE, disk=95))
    assert at(t0 + MINUTE)["disk_full"][0] == 1
    assert alerts(db, "disk_full") == [("disk_full", None, "firing", t0 + MINUTE, None, 95.0, 95.0)]
    send(client, report(cid, t0 + 2 * MINUTE, disk=60))
    assert at(t0 + 2 * MINUTE)["disk_full"][2] == 1


# ---- gpu_hot: a window of samples, at least two ------------------------------------------------

def test_gpu_hot_needs_two_samples_at_or_above_temp_c(client, db, at):
    cid = register(client)
    t0 = now() - 60 * MINUTE
    hot(client, cid, t0, 85, 90)
    assert at(t0)["gpu_hot"][0] == 0  # one sample is not enough
    hot(client, cid, t0 + MINUTE, 85, 84)
    assert at(t0 + MINUTE)["gpu_hot"][0] == 1  # GPU 0 twice at 85; GPU 1's latest is below
    assert alerts(db, "gpu_hot") == [("gpu_hot", 0, "firing", t0 + MINUTE, None, 85.0, 85.0)]


def test_gpu_hot_counts_every_stored_report_not_only_those_an_evaluation_saw(client, db, at):
    cid = register(client)
    t0 = now() - 60 * MINUTE
    send_batch(client, [report(cid, t0 + i * MINUTE, devices=[gpu(0, temp=88)]) for i in range(2)])
    assert at(t0 + MINUTE)["gpu_hot"][0] == 1


def test_gpu_hot_below_temp_c_never_fires(client, db, at):
    cid = register(client)
    t0 = now() - 60 * MINUTE
    for i in range(5):
        hot(client, cid, t0 + i * MINUTE, 84)
        assert at(t0 + i * MINUTE)["gpu_hot"][0] == 0


def test_gpu_hot_waits_until_a_cool_sample_leaves_the_window(client, db, at):
    cid = register(client)
    t0 = now() - 60 * MINUTE
    for i, temp in enumerate((90, 70, 90, 90)):  # one a minute; the cool one at t0 + 1 min
        hot(client, cid, t0 + i * MINUTE, temp)
        assert at(t0 + i * MINUTE)["gpu_hot"][0] == 0
    assert at(t0 + 6 * MINUTE - timedelta(seconds=1))["gpu_hot"][0] == 0  # still within for_minutes
    assert at(t0 + 6 * MINUTE)["gpu_hot"][0] == 1  # the window is (t0+1min, t0+6min]: two hot samples


def test_gpu_hot_judges_the_samples_up_to_now_even_when_a_later_report_is_cool(client, db, at):
    """The evaluation looks only at GPUs whose snapshot is hot, unless the snapshot is of a report
    stamped after the evaluation time: then the samples up to that time decide, as always."""
    cid = register(client)
    t0 = now() - 60 * MINUTE
    hot(client, cid, t0, 90)
    hot(client, cid, t0 + MINUTE, 91)
    hot(client, cid, t0 + 2 * MINUTE, 40)  # the snapshot now: cool
    assert at(t0 + MINUTE)["gpu_hot"][0] == 1
    assert alerts(db, "gpu_hot") == [("gpu_hot", 0, "firing", t0 + MINUTE, None, 91.0, 85.0)]
    assert at(t0 + 2 * MINUTE)["gpu_hot"][2] == 1


def test_gpu_hot_a_sample_just_over_temp_c_fires_though_the_snapshot_rounds_it(client, db, at):
    cid = register(client)
    t0 = now() - 60 * MINUTE
    hot(client, cid, t0, 85.4)
    hot(client, cid, t0 + MINUTE, 85.4)  # device_info keeps 85; the samples keep 85.4
    assert at(t0 + MINUTE)["gpu_hot"][0] == 1
    hot(client, cid, t0 + 2 * MINUTE, 84.6)  # the snapshot says 85, the sample is below temp_c
    assert at(t0 + 2 * MINUTE)["gpu_hot"][2] == 1


def test_gpu_hot_window_is_the_users_for_minutes(client, db, at):
    cid = register(client)
    assert_envelope(client.post("/api/user/alert_settings", json={"user_id": "12", "for_minutes": 1,
                                                                  "temp_c": 80}), 200)
    t0 = now() - 60 * MINUTE
    hot(client, cid, t0, 81)
    at(t0)
    hot(client, cid, t0 + 90 * timedelta(seconds=1), 81)
    assert at(t0 + 90 * timedelta(seconds=1))["gpu_hot"][0] == 0  # 90 s apart: one sample per minute
    hot(client, cid, t0 + 120 * timedelta(seconds=1), 82)
    assert at(t0 + 120 * timedelta(seconds=1))["gpu_hot"][0] == 1
    assert alerts(db, "gpu_hot")[0][5:] == (82.0, 80.0)


def test_gpu_hot_resolves_when_a_newer_sample_is_below(client, db, at):
    cid = register(client)
    t0 = now() - 60 * MINUTE
    hot(client, cid, t0, 90)
    at(t0)
    hot(client, cid, t0 + MINUTE, 95)
    assert at(t0 + MINUTE)["gpu_hot"][0] == 1
    assert at(t0 + 30 * MINUTE)["gpu_hot"][2] == 0  # no newer sample: still firing
    hot(client, cid, t0 + 31 * MINUTE, 84)
    assert at(t0 + 31 * MINUTE)["gpu_hot"][2] == 1
    assert alerts(db, "gpu_hot") == [("gpu_hot", 0, "resolved", t0 + MINUTE, t0 + 31 * MINUTE, 95.0, 85.0)]


def test_gpu_hot_resolves_when_the_gpu_leaves_the_clients_reports(client, db, at):
    cid = register(client)
    t0 = now() - 60 * MINUTE
    send_batch(client, [report(cid, t0 + i * MINUTE, devices=[gpu(0, temp=40), gpu(1, temp=95)]) for i in range(2)])
    assert at(t0 + MINUTE)["gpu_hot"][0] == 1
    send(client, report(cid, t0 + 2 * MINUTE, devices=[gpu(0, temp=40)]))
    assert at(t0 + 2 * MINUTE)["gpu_hot"][2] == 1


# ---- state: invalid and deleted clients, restarts, two evaluators -------------------------------

def test_a_client_turned_invalid_or_deleted_resolves_its_alerts(client, db, at):
    first, second = register(client, status="error"), register(client, status="error")
    t0 = now()
    assert at(t0)["error_status"][0] == 2
    assert_envelope(client.post("/api/user/edit_client_info", json={"user_id": "12", "client_id": first,
                                                                    "valid_status": "invalid"}), 200)
    rows(db, "delete from gpu_assets where client_id = %s", bytes.fromhex(second))
    assert at(t0 + MINUTE)["error_status"][2] == 2
    assert [a[2] for a in alerts(db)] == ["resolved", "resolved"]


def test_restart_keeps_a_firing_alert_and_opens_no_second_one(client, db, urls):
    register(client, status="error")
    rows(db, "insert into gpufs_alert_settings (user_id, webhook_url, updated_at) "
             "values ('12', 'http://x.test/', now())")
    t0 = now()
    first = psycopg2.connect(urls["DATABASE_URL"])
    assert evaluate(first, t0)["error_status"] == (1, 0, 0, 1)
    first.close()  # the server stops; a new process takes over
    again = psycopg2.connect(urls["DATABASE_URL"])
    try:
        assert evaluate(again, t0 + MINUTE)["error_status"] == (0, 1, 0, 0)
    finally:
        again.close()
    assert alerts(db) == [("error_status", None, "firing", t0, None, None, None)]
    assert one(db, "select count(*) from gpufs_alert_outbox")[0] == 1


def test_two_leaders_never_both_evaluate(client, db, urls):
    register(client, status="error")
    t0 = now()
    runs = []

    def task(name):
        return Task("alerts", 3600, lambda conn, when: runs.append((name, evaluate(conn, t0)["error_status"])))

    first, second = Leader(urls["DATABASE_URL"], [task("first")]), Leader(urls["DATABASE_URL"], [task("second")])
    try:
        assert [first.step(), second.step()] == [True, False]
        first.stop()  # the leader goes: the other takes over, and finds the alert already firing
        assert second.step() is True
    finally:
        first.stop()
        second.stop()
    assert runs == [("first", (1, 0, 0, 0)), ("second", (0, 1, 0, 0))]
    assert len(alerts(db)) == 1


def test_two_evaluators_at_the_same_moment_open_one_alert(client, db, urls):
    """Without the leader lock too (a second server misconfigured): the unique index decides."""
    register(client, status="error")
    t0 = now()
    first, second = psycopg2.connect(urls["DATABASE_URL"]), psycopg2.connect(urls["DATABASE_URL"])
    try:
        # not committed yet:
        opened = queries.alerts_evaluate(first, condition="error_status", now=t0, since=None, **DEFAULTS)
        assert opened[0] == 1
        result = {}
        other = threading.Thread(target=lambda: result.update(evaluate(second, t0)))
        other.start()
        other.join(0.5)
        assert other.is_alive()  # waits on the first one's row in the unique index
        first.commit()
        other.join(10)
        assert result["error_status"][0] == 0
    finally:
        first.close()
        second.close()
    assert len(alerts(db)) == 1


# ---- client_stat's warnings and the alerts ------------------------------------------------------

def test_every_firing_alert_but_disk_full_is_among_client_stat_warnings(client, db, at):
    register(client, status="error")
    register(client, status="online")  # never reported: offline
    hot_one = register(client, status="online")
    t0 = now() - 2 * MINUTE
    hot(client, hot_one, t0, 90)
    hot(client, hot_one, t0 + MINUTE, 90)
    rows(db, "update gpu_assets set created_at = created_at - interval '1 hour'")
    at(now())
    firing = rows(db, "select distinct client_id from gpufs_alerts where state = 'firing'")
    assert len(firing) == 3
    stat = assert_envelope(client.get("/api/user/client_stat?user_id=12"), 200)["data"]
    assert stat["systems_warnings_number"] == 3


# ---- GET /api/user/alerts -----------------------------------------------------------------------

def test_alerts_lists_firing_by_default_newest_first(client, db, at):
    older, newer = register(client, status="error", name="a"), register(client, status="error", name="b")
    t0 = now()
    rows(db, "update gpu_assets set client_status = 'active' where client_id = %s", bytes.fromhex(newer))
    at(t0)
    rows(db, "update gpu_assets set client_status = 'error' where client_id = %s", bytes.fromhex(newer))
    at(t0 + MINUTE)
    data = assert_envelope(client.get("/api/user/alerts?user_id=12"), 200)["data"]
    assert [(a["client_id"], a["client_name"]) for a in data] == [(newer, "b"), (older, "a")]
    assert set(data[0]) == {"alert_id", "client_id", "client_name", "condition", "device_index", "state",
                            "starts_at", "ends_at", "value", "threshold", "message"}
    assert data[0]["starts_at"].endswith("Z") and data[0]["ends_at"] is None and data[0]["condition"] == "error_status"


def test_alerts_filters_by_state_client_and_dates(client, db, at):
    cid = register(client, status="error")
    other = register(client, user_id="13", status="error")
    t0 = datetime(2026, 1, 10, 12, tzinfo=timezone.utc)
    at(t0)
    rows(db, "update gpu_assets set client_status = 'active'")
    at(t0 + timedelta(days=1))
    get = lambda q: assert_envelope(client.get(f"/api/user/alerts?user_id=12{q}"), 200)["data"]  # noqa: E731
    assert get("") == []
    assert [a["state"] for a in get("&state=resolved")] == ["resolved"]
    assert len(get("&state=all")) == 1
    assert len(get(f"&state=all&client_id={cid.upper()}")) == 1
    assert get(f"&state=all&client_id={other}") == []  # another user's client: nothing, never its alerts
    assert len(get("&state=all&start_date=2026-01-11&end_date=2026-01-11")) == 1  # firing into that day
    assert get("&state=all&start_date=2026-01-12") == []
    assert get("&state=all&end_date=2026-01-09") == []


@pytest.mark.parametrize("query, message", [
    ("", "user_id: is required"),
    ("user_id=12&state=open", "state: must be one of firing, resolved, all"),
    ("user_id=12&client_id=xyz", "client_id: must be 32 hexadecimal characters"),
    ("user_id=12&start_date=2026-02-01&end_date=2026-01-01", "start_date: must not be after end_date"),
])
def test_alerts_bad_query_is_400_naming_the_field(client, query, message):
    assert assert_envelope(client.get(f"/api/user/alerts?{query}"), 400)["message"] == message


# ---- alert settings -----------------------------------------------------------------------------

def test_alert_settings_default_then_partial_update(client, db):
    body = assert_envelope(client.get("/api/user/alert_settings?user_id=12"), 200)["data"]
    assert body == {"user_id": "12", **DEFAULTS, "webhook_url": None, "alertmanager_url": None}
    saved = assert_envelope(client.post("/api/user/alert_settings", json={"user_id": "12", "temp_c": 90}), 200)
    assert saved["data"] == {**body, "temp_c": 90}
    assert_envelope(client.post("/api/user/alert_settings", json={"user_id": "12", "disk_percent": 99}), 200)
    data = assert_envelope(client.get("/api/user/alert_settings?user_id=12"), 200)["data"]
    assert (data["temp_c"], data["disk_percent"], data["offline_minutes"]) == (90, 99, 5)


def test_alert_settings_url_is_set_and_cleared_with_null(app_config, db):
    app = create_app({**app_config, "ALERT_ALLOW_PRIVATE_TARGETS": True})
    try:
        client = app.test_client()
        set_ = {"user_id": "12", "webhook_url": "http://127.0.0.1:9/hook", "alertmanager_url": "http://[::1]:9093"}
        assert assert_envelope(client.post("/api/user/alert_settings", json=set_), 200)["data"]["webhook_url"] == \
            "http://127.0.0.1:9/hook"
        data = assert_envelope(client.post("/api/user/alert_settings", json={"user_id": "12", "webhook_url": None}),
                               200)["data"]
        assert (data["webhook_url"], data["alertmanager_url"]) == (None, "http://[::1]:9093")
    finally:
        app.extensions["gpufs"].close()


@pytest.mark.parametrize("body, message", [
    ({"user_id": "12"}, "at least one of offline_minutes, temp_c, for_minutes, disk_percent, webhook_url, "
                        "alertmanager_url is required"),
    ({"user_id": "12", "offline_minutes": 0}, "offline_minutes: must be between 1 and 1440"),
    ({"user_id": "12", "for_minutes": 1441}, "for_minutes: must be between 1 and 1440"),
    ({"user_id": "12", "temp_c": 29}, "temp_c: must be between 30 and 150"),
    ({"user_id": "12", "disk_percent": 49}, "disk_percent: must be between 50 and 100"),
    ({"user_id": "12", "temp_c": "90"}, "temp_c: must be an integer"),
    ({"user_id": "12", "webhook_url": "ftp://example.org/x"}, "webhook_url: must be an http or https URL"),
    ({"user_id": "12", "webhook_url": "http://127.0.0.1:9/x"}, "webhook_url: resolves to a loopback, private or "
                                                               "link-local address (allowed only with "
                                                               "ALERT_ALLOW_PRIVATE_TARGETS=true)"),
    ({"user_id": "12", "alertmanager_url": "http://localhost:9093"}, "alertmanager_url: resolves to a loopback, "
                                                                     "private or link-local address (allowed only "
                                                                     "with ALERT_ALLOW_PRIVATE_TARGETS=true)"),
    ({"user_id": "12", "webhook_url": "http://169.254.169.254/latest"}, "webhook_url: resolves to a loopback, "
                                                                        "private or link-local address (allowed "
                                                                        "only with ALERT_ALLOW_PRIVATE_TARGETS=true)"),
    ({"user_id": "12", "webhook_url": "http://10.1.2.3/"}, "webhook_url: resolves to a loopback, private or "
                                                           "link-local address (allowed only with "
                                                           "ALERT_ALLOW_PRIVATE_TARGETS=true)"),
])
def test_save_alert_settings_bad_body_is_400_and_changes_nothing(client, db, body, message):
    assert assert_envelope(client.post("/api/user/alert_settings", json=body), 400)["message"] == message
    assert rows(db, "select user_id from gpufs_alert_settings") == []


def test_save_alert_settings_not_json_is_415(client):
    assert_envelope(client.post("/api/user/alert_settings", data="user_id=12"), 415)


def test_alert_endpoints_in_token_mode_act_for_the_keys_user_and_only_admins_set_urls(app_config, db):
    app = create_app({**app_config, "AUTH_MODE": "token", "ALERT_ALLOW_PRIVATE_TARGETS": True})
    try:
        _, own = create_key(app, "--user", "12")
        _, admin = create_key(app, "--user", "1", "--admin")
        client = app.test_client()

        def call(key, method, path, body=None):
            headers = {"Authorization": f"Bearer {key}"}
            return client.post(path, json=body, headers=headers) if method == "POST" else client.get(path,
                                                                                                  headers=headers)

        assert_envelope(client.get("/api/user/alerts?user_id=12"), 401)
        assert_envelope(call(own, "GET", "/api/user/alerts?user_id=12"), 200)
        assert_envelope(call(own, "GET", "/api/user/alerts?user_id=13"), 403)
        assert_envelope(call(own, "GET", "/api/user/alert_settings?user_id=13"), 403)
        assert_envelope(call(own, "POST", "/api/user/alert_settings", {"user_id": "13", "temp_c": 90}), 403)
        assert_envelope(call(own, "POST", "/api/user/alert_settings", {"user_id": "12", "temp_c": 90}), 200)
        hook = {"user_id": "12", "webhook_url": "http://127.0.0.1:9/hook"}
        assert call(own, "POST", "/api/user/alert_settings", hook).get_json()["message"] == \
            "webhook_url: only an admin key may set a URL"
        assert_envelope(call(admin, "POST", "/api/user/alert_settings", hook), 200)
        assert_envelope(call(own, "POST", "/api/user/alert_settings", {"user_id": "12", "webhook_url": None}), 200)
    finally:
        app.extensions["gpufs"].close()


# ---- metrics and the API document ---------------------------------------------------------------

def test_metrics_show_firing_alerts_by_condition(client, db, at):
    register(client, status="error")
    register(client, status="error")
    at(now())
    text = client.get("/metrics").get_data(as_text=True)
    assert 'gpufs_alerts_firing{condition="error_status"} 2.0' in text
    assert 'gpufs_alerts_firing{condition="gpu_hot"} 0.0' in text
    assert "# TYPE gpufs_alert_notifications_total counter" in text


def test_alert_endpoints_are_in_the_openapi_document(client):
    paths = client.get("/api/openapi.json").get_json()["paths"]
    assert set(paths["/api/user/alert_settings"]) == {"get", "post"}
    assert "state" in str(paths["/api/user/alerts"]["get"]["parameters"])


def test_unknown_client_id_in_alerts_is_an_empty_list(client):
    assert assert_envelope(client.get(f"/api/user/alerts?user_id=12&client_id={new_client_id()}"), 200)["data"] == []
