"""Alert notifications: a local webhook receiver (payload, key, retries, no repeat, refusals), a real
Alertmanager, and two gunicorn servers on one database sending each notification once."""
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg2
import pytest
from prometheus_client import REGISTRY

from gpufs import create_app
from gpufs.alerts import evaluate
from gpufs.alerts.outbox import deliver, refresh_alertmanagers, webhook_body

from .conftest import ROOT, assert_envelope, free_port, register, tool_or_skip
from .reports import gpu, one, report, rows, send

SECOND = timedelta(seconds=1)


pytestmark = pytest.mark.usefixtures("db")  # every test starts with no alert, setting or notification


class Receiver:
    """A webhook receiver on loopback: records every POST and answers with the statuses queued in
    `answers` (then 200)."""

    def __init__(self):
        self.requests, self.answers = [], []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((self.path, dict(self.headers), json.loads(body)))
                status = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(status)
                if status == 302:
                    self.send_header("Location", f"{receiver.url}/elsewhere")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def keys(self):
        return [headers["Idempotency-Key"] for _path, headers, _body in self.requests]


@pytest.fixture
def receiver():
    found = Receiver()
    yield found
    found.server.shutdown()
    found.server.server_close()


@pytest.fixture
def app(db, app_config):
    """The app with alert targets on loopback allowed (the receiver and Alertmanager run here)."""
    app = create_app({**app_config, "ALERT_ALLOW_PRIVATE_TARGETS": True})
    yield app
    app.extensions["gpufs"].close()


@pytest.fixture
def at(urls):
    conn = psycopg2.connect(urls["DATABASE_URL"])
    yield lambda now: evaluate(conn, now)
    conn.close()


@pytest.fixture
def send_due(app):
    """Send what is due at `now`, as the sender thread does; return the results' counts."""
    def send_due(now, allow_private=True):
        with app.extensions["gpufs"].pool.connection() as conn:
            return deliver(conn, now, allow_private)
    return send_due


def settings(client, **targets):
    assert_envelope(client.post("/api/user/alert_settings", json={"user_id": "12", **targets}), 200)


def now():
    return datetime.now(timezone.utc)


# ---- webhook ------------------------------------------------------------------------------------

def test_webhook_gets_each_transition_once_with_its_payload_and_key(client, db, receiver, at, send_due):
    settings(client, webhook_url=receiver.url + "/hook?team=gpu")
    cid = register(client, status="error")
    t0 = now()
    at(t0)
    assert send_due(t0) == {"delivered": 1}
    (alert,) = assert_envelope(client.get("/api/user/alerts?user_id=12"), 200)["data"]
    path, headers, body = receiver.requests[0]
    assert path == "/hook?team=gpu" and headers["Content-Type"] == "application/json"
    assert headers["Idempotency-Key"] == f"{alert['alert_id']}:firing"
    assert body == {"status": "firing", "alert": alert}
    assert send_due(t0 + 2 * timedelta(hours=1)) == {}  # a 2xx ends it

    rows(db, "update gpu_assets set client_status = 'active' where client_id = %s", bytes.fromhex(cid))
    at(t0 + 10 * SECOND)
    assert send_due(t0 + 10 * SECOND) == {"delivered": 1}
    assert receiver.keys() == [f"{alert['alert_id']}:firing", f"{alert['alert_id']}:resolved"]
    resolved = receiver.requests[1][2]
    assert resolved["status"] == "resolved" and resolved["alert"]["ends_at"] is not None


def test_webhook_is_retried_after_a_500_with_backoff_then_not_repeated(client, receiver, at, send_due):
    settings(client, webhook_url=receiver.url)
    register(client, status="error")
    receiver.answers = [500, 503]
    t0 = now()
    at(t0)
    assert send_due(t0) == {"retry": 1}
    assert send_due(t0 + 14 * SECOND) == {}  # not due yet: 15 s after the first failure
    assert send_due(t0 + 15 * SECOND) == {"retry": 1}
    assert send_due(t0 + 44 * SECOND) == {}  # then 30 s
    assert send_due(t0 + 45 * SECOND) == {"delivered": 1}
    assert send_due(t0 + 3 * timedelta(hours=1)) == {}
    assert len(set(receiver.keys())) == 1 and len(receiver.requests) == 3


def test_webhook_without_answer_is_given_up_after_an_hour(client, db, at, send_due):
    settings(client, webhook_url=f"http://127.0.0.1:{free_port()}/")  # nothing listens there
    register(client, status="error")
    t0 = now()
    at(t0)
    assert send_due(t0) == {"retry": 1}
    assert send_due(t0 + 59 * timedelta(minutes=1)) == {"retry": 1}
    assert send_due(t0 + 61 * timedelta(minutes=1)) == {"failed": 1}
    assert send_due(t0 + 5 * timedelta(hours=1)) == {}
    assert one(db, "select attempts, given_up_at is not null from gpufs_alert_outbox") == (3, True)


def test_resolved_is_sent_only_after_its_firing(client, db, receiver, at, send_due):
    settings(client, webhook_url=receiver.url)
    cid = register(client, status="error")
    receiver.answers = [500]
    t0 = now()
    at(t0)
    assert send_due(t0) == {"retry": 1}
    rows(db, "update gpu_assets set client_status = 'active' where client_id = %s", bytes.fromhex(cid))
    at(t0 + 5 * SECOND)
    assert send_due(t0 + 20 * SECOND) == {"delivered": 1}
    assert send_due(t0 + 20 * SECOND) == {"delivered": 1}
    assert [key.split(":")[1] for key in receiver.keys()] == ["firing", "firing", "resolved"]


def test_settled_notifications_are_kept_a_week(client, db, receiver, at, send_due):
    settings(client, webhook_url=receiver.url)
    register(client, status="error")
    t0 = now()
    at(t0)
    send_due(t0)
    send_due(t0 + timedelta(days=7) - SECOND)
    assert one(db, "select count(*) from gpufs_alert_outbox")[0] == 1
    send_due(t0 + timedelta(days=7, seconds=1))
    assert one(db, "select count(*) from gpufs_alert_outbox")[0] == 0
    assert one(db, "select count(*) from gpufs_alerts")[0] == 1


def test_webhook_redirect_is_not_followed(client, receiver, at, send_due):
    settings(client, webhook_url=receiver.url + "/hook")
    register(client, status="error")
    receiver.answers = [302]
    at(now())
    assert send_due(now()) == {"failed": 1}
    assert [path for path, _headers, _body in receiver.requests] == ["/hook"]


def test_private_target_is_refused_at_send_time_without_the_setting(client, receiver, at, send_due):
    settings(client, webhook_url=receiver.url)  # saved while allowed; the setting is off when sending
    register(client, status="error")
    at(now())
    assert send_due(now(), allow_private=False) == {"refused": 1}
    assert receiver.requests == []


def test_notifications_are_counted_by_channel_and_result(client, receiver, at, send_due):
    def count(result):
        return REGISTRY.get_sample_value("gpufs_alert_notifications_total",
                                         {"channel": "webhook", "result": result}) or 0

    settings(client, webhook_url=receiver.url)
    register(client, status="error")
    receiver.answers = [500]
    before = count("retry"), count("delivered")
    t0 = now()
    at(t0)
    send_due(t0)
    send_due(t0 + timedelta(minutes=1))
    assert (count("retry"), count("delivered")) == (before[0] + 1, before[1] + 1)
    assert 'gpufs_alert_notifications_total{channel="webhook",result="delivered"}' in \
        client.get("/metrics").get_data(as_text=True)


def test_slack_incoming_webhook_gets_text():
    row = {"url": "https://hooks.slack.com/services/T000/B000/XXXX", "status": "firing",
           "message": "box: registered status is error"}
    assert json.loads(webhook_body(row)) == {"text": "[FIRING] box: registered status is error"}


# ---- a real Alertmanager ------------------------------------------------------------------------

@pytest.fixture
def alertmanager(tmp_path):
    binary = tool_or_skip("prometheus-alertmanager", "apt-get install prometheus-alertmanager")
    port = free_port()
    config = tmp_path / "alertmanager.yml"
    config.write_text("route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n")
    with open(tmp_path / "alertmanager.log", "wb") as log:
        proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.path={tmp_path / 'data'}",
                                 f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
                                stdout=subprocess.DEVNULL, stderr=log)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(base + "/-/ready"), "alertmanager did not start")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _answers(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return json.loads(resp.read() or b"null")
    except (OSError, ValueError):
        return None


def wait_for(check, message, seconds=30):
    """Poll a real tool until `check()` holds."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, message
        time.sleep(0.1)


def am_alerts(base, cid):
    return [a for a in _get(base + "/api/v2/alerts") or [] if a["labels"].get("client_id") == cid]


def test_alertmanager_shows_a_firing_alert_with_our_labels_then_resolved(client, db, alertmanager, at, send_due):
    settings(client, alertmanager_url=alertmanager)
    cid = register(client, status="error", name="am-box")
    at(now())
    assert send_due(now()) == {"delivered": 1}
    wait_for(lambda: am_alerts(alertmanager, cid), "the alert never reached Alertmanager")
    (alert,) = am_alerts(alertmanager, cid)
    assert alert["labels"] == {"alertname": "error_status", "client_id": cid, "client_name": "am-box",
                               "user_id": "12"}
    assert alert["annotations"] == {"summary": "am-box: registered status is error"}
    assert alert["status"]["state"] == "active"

    rows(db, "update gpu_assets set client_status = 'active' where client_id = %s", bytes.fromhex(cid))
    at(now())
    assert send_due(now()) == {"delivered": 1}
    # Alertmanager lists only alerts that have not ended: a resolved one leaves the list.
    wait_for(lambda: am_alerts(alertmanager, cid) == [], "Alertmanager still shows the alert firing")


def test_alertmanager_gets_firing_gpu_alerts_again_with_their_gpu(client, alertmanager, at, app):
    settings(client, alertmanager_url=alertmanager)
    cid = register(client, name="hot-box")
    t0 = now() - timedelta(minutes=2)
    for i in range(2):
        send(client, report(cid, t0 + i * timedelta(minutes=1), devices=[gpu(0, temp=40), gpu(1, temp=95)]))
        at(t0 + i * timedelta(minutes=1))
    with app.extensions["gpufs"].pool.connection() as conn:
        refresh_alertmanagers(conn, allow_private=True)  # what follows each evaluation, outbox aside
    wait_for(lambda: am_alerts(alertmanager, cid), "the re-sent alert never reached Alertmanager")
    (alert,) = am_alerts(alertmanager, cid)
    assert alert["labels"]["alertname"] == "gpu_hot" and alert["labels"]["gpu"] == "1"


# ---- two servers on one database ----------------------------------------------------------------

def start_gunicorn(urls, log_path, **extra):
    port = free_port()
    env = dict(os.environ, DATABASE_URL=urls["DATABASE_URL"], REDIS_URL=urls["REDIS_URL"],
               GPUFS_BIND=f"127.0.0.1:{port}", GUNICORN_WORKERS="2", **extra)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # each server its own, as on two hosts
    gunicorn = os.path.join(os.path.dirname(sys.executable), "gunicorn")
    with open(log_path, "wb") as err:
        proc = subprocess.Popen([gunicorn, "-c", "deploy/gunicorn.conf.py", "app:app"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: proc.poll() is None and _answers(base + "/healthz"),
             f"gunicorn did not start: {log_path}")
    return proc, base


def _post(url, body):
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        return json.loads(resp.read())


def test_two_servers_on_one_database_fire_and_notify_once(urls, db, receiver, tmp_path):
    env = {"BACKGROUND_TASKS": "true", "ALERT_EVAL_SECONDS": "1", "ALERT_ALLOW_PRIVATE_TARGETS": "true"}
    servers = []
    try:
        for name in ("first", "second"):
            servers.append(start_gunicorn(urls, tmp_path / f"{name}.log", **env))
        (_, first), (_, second) = servers
        _post(first + "/api/user/alert_settings", {"user_id": "12", "webhook_url": receiver.url})
        _post(second + "/api/user/insert_client", {"user_id": "12", "client_id": "ab" * 16, "client_status": "error",
                                                   "name": "twice"})
        wait_for(lambda: receiver.requests, "no notification arrived")
        fired = one(db, "select updated_at from gpufs_alerts")[0]
        # Several evaluations later (each refreshes the firing alert), still one alert and one notification.
        wait_for(lambda: one(db, "select updated_at from gpufs_alerts")[0] >= fired + 3 * SECOND,
                 "the evaluations stopped")
        assert one(db, "select count(*), count(*) filter (where state = 'firing') from gpufs_alerts") == (1, 1)
        assert one(db, "select count(*), count(delivered_at) from gpufs_alert_outbox") == (1, 1)
        assert len(receiver.requests) == 1
        scrapes = [urllib.request.urlopen(base + "/metrics", timeout=5).read().decode() for _, base in servers]
        delivered = 'gpufs_alert_notifications_total{channel="webhook",result="delivered"} 1.0'
        assert sum(delivered in text for text in scrapes) == 1  # counted by the one leader's server
        assert any('gpufs_alerts_firing{condition="error_status"} 1.0' in text for text in scrapes)
    finally:
        for proc, _ in servers:
            proc.terminate()
        for proc, _ in servers:
            proc.wait(timeout=30)
