"""Operations: /healthz, /readyz, /metrics (in-process and merged over gunicorn workers), request
ids and log lines, the gunicorn settings, and a graceful SIGTERM under a streaming request."""
import json
import logging
import os
import re
import runpy
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from flask import Flask
from prometheus_client import REGISTRY

from gpufs import create_app, init_app, logs, metrics

from .conftest import ROOT, assert_envelope, free_port, register


@pytest.fixture
def quick(app_config):
    """A client of a fresh app over the shared database, without emptying tables first: these tests
    only read their own rows or none, and skipping the truncation keeps the module fast."""
    app = create_app(app_config)
    yield app.test_client()
    app.extensions["gpufs"].close()


def get(client, path, **kwargs):
    """A request whose response is closed at once, as gunicorn closes it: that is when it is logged."""
    return client.get(path, buffered=True, **kwargs)


def scrape(client_or_url):
    if isinstance(client_or_url, str):
        with urllib.request.urlopen(client_or_url + "/metrics", timeout=10) as resp:
            assert resp.headers["Content-Type"].startswith("text/plain")
            return resp.read().decode()
    resp = get(client_or_url, "/metrics")
    assert resp.status_code == 200 and resp.mimetype == "text/plain"
    return resp.get_data(as_text=True)


def grew(before, after, name, **labels):
    """How much one sample went up between two expositions."""
    return sample(after, name, **labels) - sample(before, name, **labels)


def sample(text, name, **labels):
    """The value of one sample in a Prometheus exposition, 0 when absent."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        metric, _, label_text = key.partition("{")
        if metric == name and ",".join(sorted(label_text.rstrip("}").split(","))) == want:
            return float(value)
    return 0.0


# ---- /healthz and /readyz --------------------------------------------------------------------

def test_healthz_answers_without_touching_the_database(app_config):
    app = create_app({**app_config, "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/x"})
    body = assert_envelope(get(app.test_client(), "/healthz"), 200)
    assert body["data"] == {"status": "ok"}
    assert app.extensions["gpufs"].pool.in_use == 0


def test_readyz_reports_database_and_redis_ok(quick):
    body = assert_envelope(get(quick, "/readyz"), 200)
    assert body["data"] == {"database": "ok", "redis": "ok"}


def test_readyz_with_redis_down_is_still_ready(db, app_config):
    app = create_app({**app_config, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    body = assert_envelope(get(app.test_client(), "/readyz"), 200)
    assert body["data"] == {"database": "ok", "redis": "down"}
    app.extensions["gpufs"].close()


def test_readyz_without_redis_reports_it_disabled(db, app_config):
    app = create_app({**app_config, "REDIS_URL": ""})
    assert assert_envelope(get(app.test_client(), "/readyz"), 200)["data"]["redis"] == "disabled"
    app.extensions["gpufs"].close()


def test_readyz_with_database_silent_is_503_within_connect_timeout(app_config):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts at the TCP level, never speaks: the worst kind of outage
    app = create_app({**app_config, "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{silent.getsockname()[1]}/x",
                      "DB_CONNECT_TIMEOUT": 1})
    started = time.monotonic()
    resp = get(app.test_client(), "/readyz")
    assert time.monotonic() - started < 2.5
    body = resp.get_json()
    assert resp.status_code == 503 and body["success"] is False
    assert body["data"] == {"database": "down", "redis": "ok"}
    silent.close()


def test_readyz_with_database_refusing_is_503(app_config):
    app = create_app({**app_config, "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/x"})
    resp = get(app.test_client(), "/readyz")
    assert resp.status_code == 503 and resp.get_json()["data"]["database"] == "down"


def test_readyz_recovers_on_a_fresh_connection_when_the_pooled_one_died(app, client, db):
    assert get(client, "/readyz").status_code == 200
    pool = app.extensions["gpufs"].pool
    conn = pool.getconn()
    backend = conn.get_backend_pid()
    pool.putconn(conn)
    with db.cursor() as cur:  # what a PostgreSQL restart does to the connections a worker keeps
        cur.execute("select pg_terminate_backend(%(pid)s)", {"pid": backend})
    assert assert_envelope(get(client, "/readyz"), 200)["data"]["database"] == "ok"


def test_host_app_gets_none_of_the_operational_routes(app_config):
    host = Flask("portal")
    init_app(host, url_prefix="/fleet", config=app_config)
    c = host.test_client()
    for path in ("/healthz", "/readyz", "/metrics"):
        resp = c.get(path)
        assert resp.status_code == 404 and resp.mimetype == "text/html", path
        assert "X-Request-ID" not in resp.headers  # nor our request logging
    assert c.get("/fleet/openapi.json").status_code == 200


# ---- /metrics --------------------------------------------------------------------------------

def test_metrics_count_requests_by_route_and_status_never_by_raw_path(quick):
    before = scrape(quick)
    for user in ("a", "b", "c"):
        assert get(quick, f"/api/user/client_list?user_id={user}").status_code == 200
    assert get(quick, "/api/user/client_list").status_code == 400
    probe = uuid.uuid4().hex
    assert get(quick, f"/api/{probe}/x").status_code == 404
    after = scrape(quick)

    route = {"endpoint": "/api/user/client_list", "method": "GET"}
    assert grew(before, after, "gpufs_http_requests_total", **route, status="200") == 3
    assert grew(before, after, "gpufs_http_requests_total", **route, status="400") == 1
    assert grew(before, after, "gpufs_http_request_duration_seconds_count", **route, status="200") == 3
    assert sample(after, "gpufs_http_request_duration_seconds_bucket", **route, status="200", le="+Inf") >= 3
    unmatched = {"endpoint": metrics.UNMATCHED, "method": "GET", "status": "404"}
    assert grew(before, after, "gpufs_http_requests_total", **unmatched) == 1
    assert probe not in after


def test_an_unknown_method_is_counted_as_other_never_by_its_name(quick):
    before = scrape(quick)
    method = "BREW" + uuid.uuid4().hex[:8].upper()
    assert quick.open("/healthz", method=method, buffered=True).status_code == 405
    after = scrape(quick)
    labels = {"endpoint": metrics.UNMATCHED, "method": "OTHER", "status": "405"}
    assert grew(before, after, "gpufs_http_requests_total", **labels) == 1
    assert method not in after


def test_pool_usage_is_published_as_it_changes(app_config):
    app = create_app(app_config)
    pool = app.extensions["gpufs"].pool
    with app.app_context():
        conn = pool.getconn()
        try:
            assert REGISTRY.get_sample_value("gpufs_db_pool_connections_in_use") == 1
        finally:
            pool.putconn(conn)
    assert REGISTRY.get_sample_value("gpufs_db_pool_connections_in_use") == 0


def test_metrics_count_cache_hits_and_misses(quick):
    user = uuid.uuid4().hex[:16]
    register(quick, user_id=user)
    before = scrape(quick)
    get(quick, f"/api/user/client_list?user_id={user}")
    get(quick, f"/api/user/client_list?user_id={user}")
    after = scrape(quick)
    assert grew(before, after, "gpufs_cache_misses_total") == 1
    assert grew(before, after, "gpufs_cache_hits_total") == 1


def test_metrics_count_cache_errors_when_redis_is_down(db, app_config):
    app = create_app({**app_config, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
    c = app.test_client()
    before = scrape(c)
    assert get(c, "/api/models/get").status_code == 200
    after = scrape(c)
    assert grew(before, after, "gpufs_cache_errors_total") > 0
    app.extensions["gpufs"].close()


def test_metrics_count_heartbeats_by_outcome(quick):
    before = scrape(quick)
    metrics.count_heartbeats(stored=3, duplicates=1, rejected=2)
    metrics.count_heartbeats(rejected=1)
    after = scrape(quick)
    for outcome, n in (("stored", 3), ("duplicate", 1), ("rejected", 3)):
        assert grew(before, after, "gpufs_heartbeats_total", outcome=outcome) == n


def test_metrics_report_the_connection_pool(app_config):
    app = create_app(app_config)
    text = scrape(app.test_client())
    assert sample(text, "gpufs_db_pool_connections_in_use") == 0
    assert sample(text, "gpufs_db_pool_connections_max") == app.extensions["gpufs"].config["DB_POOL_MAX"]
    # Names follow the Prometheus conventions: base units, counters end in _total.
    names = set(re.findall(r"^# TYPE (gpufs_\S+) (\w+)", text, re.M))
    assert ("gpufs_http_request_duration_seconds", "histogram") in names
    assert all(name.endswith("_total") for name, kind in names if kind == "counter")


def test_metrics_are_merged_over_every_gunicorn_worker(server):
    before = scrape(server)
    for _ in range(24):  # a fresh connection each: both workers answer some of them
        with urllib.request.urlopen(server + "/healthz", timeout=10) as resp:
            assert resp.status == 200
    labels = {"endpoint": "/healthz", "method": "GET", "status": "200"}
    pool_max = 2 * int(os.environ.get("DB_POOL_MAX", 8))  # two live workers, DB_POOL_MAX each

    def settled(text):
        # A request is counted when its last byte has been sent, so the other worker may still be
        # counting the final one when the scrape arrives; and the second worker may still be booting.
        return grew(before, text, "gpufs_http_requests_total", **labels) >= 24 and \
            sample(text, "gpufs_db_pool_connections_max") == pool_max

    after = scrape(server)
    deadline = time.monotonic() + 10
    while not settled(after) and time.monotonic() < deadline:
        time.sleep(0.2)
        after = scrape(server)
    assert grew(before, after, "gpufs_http_requests_total", **labels) == 24
    assert sample(after, "gpufs_db_pool_connections_max") == pool_max


# ---- request ids and logs ----------------------------------------------------------------------

@pytest.mark.parametrize("given", ["abc-123", "x" * 128, "4f1c2b3a-0000-4000-8000-000000000000"])
def test_sane_request_id_is_echoed(quick, given):
    assert get(quick, "/healthz", headers={"X-Request-ID": given}).headers["X-Request-ID"] == given


@pytest.mark.parametrize("given", ["", "x" * 129, "two words", "tab\there", 'quote"d', "back\\slash", "é"])
def test_missing_or_unsafe_request_id_is_replaced(quick, given):
    echoed = get(quick, "/healthz", headers={"X-Request-ID": given}).headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", echoed)


def test_request_refused_by_token_auth_keeps_its_request_id(app_config):
    c = create_app({**app_config, "AUTH_MODE": "token"}).test_client()
    resp = get(c, "/api/models/get", headers={"X-Request-ID": "no-key-1"})
    assert resp.status_code == 401 and resp.headers["X-Request-ID"] == "no-key-1"


def test_request_id_with_control_characters_is_replaced():
    assert logs.request_id_from("ok\r\nX-Injected: 1") != "ok\r\nX-Injected: 1"
    assert re.fullmatch(r"[0-9a-f]{32}", logs.request_id_from("a\x00b"))


def test_one_log_line_per_request_with_method_path_status_duration_and_id(quick, caplog):
    caplog.set_level(logging.INFO, logger="gpufs.request")
    resp = get(quick, "/api/user/client_list?user_id=12", headers={"X-Request-ID": "trace-me"})
    lines = [r for r in caplog.records if r.name == "gpufs.request"]
    assert len(lines) == 1
    record = lines[0]
    assert (record.method, record.path, record.status, record.request_id) == \
        ("GET", "/api/user/client_list?user_id=12", 200, "trace-me")
    assert record.duration_ms >= 0 and resp.headers["X-Request-ID"] == "trace-me"
    assert record.client == "127.0.0.1"
    text = logs.TextFormatter().format(record)
    assert "GET /api/user/client_list?user_id=12 200" in text and "[trace-me]" in text and "ms" in text


def test_json_log_lines_carry_the_request_fields(quick, caplog):
    caplog.set_level(logging.INFO, logger="gpufs.request")
    get(quick, "/api/nowhere", headers={"X-Request-ID": "json-1"})
    record = next(r for r in caplog.records if r.name == "gpufs.request")
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["request_id"] == "json-1" and line["method"] == "GET" and line["status"] == 404
    assert line["path"] == "/api/nowhere" and line["level"] == "INFO" and line["time"].endswith("Z")
    assert isinstance(line["duration_ms"], float)


def test_files_sent_whole_are_logged_too(quick, caplog):
    caplog.set_level(logging.INFO, logger="gpufs.request")
    assert get(quick, "/api/docs/swagger-ui.css").status_code == 200
    assert [(r.path, r.status) for r in caplog.records if r.name == "gpufs.request"] == \
        [("/api/docs/swagger-ui.css", 200)]


def test_a_failed_request_is_logged_and_counted_by_its_route(app_config, caplog):
    app = create_app(app_config)

    @app.get("/boom")
    def boom():
        raise RuntimeError("boom")

    caplog.set_level(logging.INFO, logger="gpufs.request")
    c = app.test_client()
    before = scrape(c)
    assert get(c, "/boom").status_code == 500
    assert grew(before, scrape(c), "gpufs_http_requests_total", endpoint="/boom", method="GET", status="500") == 1
    # Testing mode hands the exception to the WSGI server instead of a 500 page: still one log line.
    app.testing = True
    with pytest.raises(RuntimeError):
        c.get("/boom", headers={"X-Request-ID": "raised-1"})
    assert [(r.path, r.status, r.request_id) for r in caplog.records if r.name == "gpufs.request"][-1] == \
        ("/boom", 500, "raised-1")
    app.extensions["gpufs"].close()


def test_a_host_that_refuses_a_request_before_the_log_hooks_still_logs_it_with_an_id(app_config, caplog):
    from flask import abort
    host = Flask("portal")

    @host.before_request
    def members_only():  # the host's own check, registered before gpufs.logs.install
        abort(403)

    init_app(host, url_prefix="/fleet", config=app_config)
    logs.install(host)
    caplog.set_level(logging.INFO, logger="gpufs.request")
    resp = get(host.test_client(), "/fleet/models/get", headers={"X-Request-ID": "host-1"})
    assert resp.status_code == 403 and resp.headers["X-Request-ID"] == "host-1"
    assert [(r.path, r.status, r.request_id) for r in caplog.records if r.name == "gpufs.request"] == \
        [("/fleet/models/get", 403, "host-1")]
    host.extensions["gpufs"].close()


def test_client_address_is_nginx_last_hop_only_when_nginx_sent_it(quick, caplog):
    caplog.set_level(logging.INFO, logger="gpufs.request")
    get(quick, "/healthz", headers={"X-Forwarded-For": "198.51.100.1, 203.0.113.9"})
    get(quick, "/healthz", headers={"X-Forwarded-For": "203.0.113.9"}, environ_base={"REMOTE_ADDR": "192.0.2.5"})
    clients = [r.client for r in caplog.records if r.name == "gpufs.request"]
    assert clients == ["203.0.113.9", "192.0.2.5"]  # a forged header from a remote peer is ignored


def test_text_log_line_cannot_be_split_by_a_decoded_newline(quick, caplog):
    caplog.set_level(logging.INFO, logger="gpufs.request")
    get(quick, "/api/x%0aFAKE%20200")
    record = next(r for r in caplog.records if r.name == "gpufs.request")
    assert "\n" not in logs.TextFormatter().format(record)


def test_log_format_json_makes_every_line_json(app_config, capfd):
    create_app({**app_config, "LOG_FORMAT": "json"})
    logging.getLogger("gpufs.test").warning("something %s", "happened")
    line = capfd.readouterr().err.strip().splitlines()[-1]
    assert json.loads(line)["message"] == "something happened"
    create_app(app_config)  # back to text for the tests that follow


# ---- gunicorn ----------------------------------------------------------------------------------

def test_gunicorn_settings_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    for key in ("GPUFS_BIND", "GUNICORN_WORKERS", "GUNICORN_THREADS"):
        monkeypatch.delenv(key, raising=False)
    conf = runpy.run_path(str(ROOT / "deploy" / "gunicorn.conf.py"))
    assert (conf["bind"], conf["workers"], conf["threads"], conf["worker_class"]) == \
        ("127.0.0.1:18081", 2, 4, "gthread")
    assert conf["accesslog"] is None and conf["graceful_timeout"] > 0
    assert conf["control_socket_disable"] is True  # one gunicorn must not take over another's socket
    monkeypatch.setenv("GPUFS_BIND", "0.0.0.0:9000")
    monkeypatch.setenv("GUNICORN_WORKERS", "3")
    monkeypatch.setenv("GUNICORN_THREADS", "8")
    conf = runpy.run_path(str(ROOT / "deploy" / "gunicorn.conf.py"))
    assert (conf["bind"], conf["workers"], conf["threads"]) == ("0.0.0.0:9000", 3, 8)


ROWS = 50_000  # ≈10 MB of JSON: more than the socket buffers hold, so the answer is still being sent


def test_sigterm_lets_an_in_flight_stream_finish_then_exits(db, urls, tmp_path):
    client_id = bytes.fromhex(uuid.uuid4().hex)
    with db.cursor() as cur:
        cur.execute("insert into gpu_assets (user_id, client_id, client_name, client_status, valid_status)"
                    " values ('graceful', %(cid)s, 'slow', 'online', 'valid')", {"cid": client_id})
        cur.execute("insert into heartbeat (client_id, cpu_usage, mem_usage, disk_usage, network_up, network_down,"
                    " timestamp) select %(cid)s, 1, 2, 3, 4, 5, now() - make_interval(secs => g)"
                    " from generate_series(1, %(n)s) g", {"cid": client_id, "n": ROWS})
    proc, port = _start_gunicorn(urls, tmp_path, GUNICORN_WORKERS="1", GUNICORN_THREADS="2")
    try:
        _wait_healthy(proc, port, tmp_path / "stderr.log")
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # a slow reader: the worker must wait
        sock.settimeout(20)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /api/user/client_health?user_id=graceful HTTP/1.0\r\nHost: test\r\n\r\n")
        received = [sock.recv(65536)]
        assert re.match(rb"HTTP/1\.[01] 200 ", received[0])

        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert proc.poll() is None, "gunicorn exited with a request in flight"
        while chunk := sock.recv(1 << 20):
            received.append(chunk)
        sock.close()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    head, _, body = b"".join(received).partition(b"\r\n\r\n")
    envelope = json.loads(body)
    assert envelope["success"] is True and len(envelope["data"]) == ROWS
    assert envelope["data"][0]["client_id"] == client_id.hex()
    log = (tmp_path / "stderr.log").read_text()
    assert "GET /api/user/client_health?user_id=graceful 200" in log


def _start_gunicorn(urls, tmp_path, app="app:app", **settings):
    """gunicorn as deployed, on a port of its own, its stderr in tmp_path/stderr.log: (process, port)."""
    port = free_port()
    env = dict(os.environ, DATABASE_URL=urls["DATABASE_URL"], REDIS_URL=urls["REDIS_URL"],
               GPUFS_BIND=f"127.0.0.1:{port}", **{"MIGRATE_ON_START": "false", **settings})
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    gunicorn = Path(sys.executable).with_name("gunicorn")
    with open(tmp_path / "stderr.log", "wb") as err:
        proc = subprocess.Popen([str(gunicorn), "-c", "deploy/gunicorn.conf.py", app], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
    return proc, port


def _wait_healthy(proc, port, log_path):
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("gunicorn did not start:\n" + log_path.read_text())
        time.sleep(0.1)


def _stop(proc):
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def fresh_db(urls):
    """An empty database of its own, dropped afterwards."""
    import psycopg2
    from psycopg2 import sql

    from gpufs.devenv import ensure_database
    name = f"gpufs_ops_{uuid.uuid4().hex[:8]}"
    yield ensure_database(urls["DATABASE_URL"], name)
    admin = psycopg2.connect(urls["DATABASE_URL"])
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
    admin.close()


def test_gunicorn_start_up_migrates_and_with_log_format_json_every_line_is_json(urls, fresh_db, tmp_path):
    proc, port = _start_gunicorn({**urls, "DATABASE_URL": fresh_db}, tmp_path, MIGRATE_ON_START="true",
                                 LOG_FORMAT="json", GUNICORN_WORKERS="1")
    try:
        _wait_healthy(proc, port, tmp_path / "stderr.log")
        assert_envelope(_http(port, "/api/user/client_list?user_id=12"), 200)  # the master made the tables
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"NOT A REQUEST LINE\r\n\r\n")  # gunicorn refuses it itself, and logs it
            assert sock.recv(1024).startswith(b"HTTP/1.1 400")
    finally:
        _stop(proc)
    lines = (tmp_path / "stderr.log").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line, gunicorn's own included
    messages = [r["message"] for r in records]
    assert any(m.startswith("Starting gunicorn") for m in messages)
    assert any(m.startswith("Booting worker") for m in messages)
    assert any(m.startswith("migrations: 0001_upstream") for m in messages)
    assert any(m.startswith("Invalid request from ip=127.0.0.1") for m in messages)
    assert any(r.get("path") == "/api/user/client_list?user_id=12" and r.get("status") == 200 for r in records)


def test_gunicorn_tracebacks_are_json_with_log_format_json(urls, tmp_path):
    # One worker: when two fail to boot at once, gunicorn's arbiter can reap the second while it
    # halts for the first and print that error as a plain traceback (seen 2 times in 40 runs).
    proc, _port = _start_gunicorn(urls, tmp_path, app="gpufs_no_such_module:app", LOG_FORMAT="json",
                                  GUNICORN_WORKERS="1")
    try:
        proc.wait(timeout=30)  # the worker cannot boot, so the master stops
    finally:
        _stop(proc)
    # gunicorn logs the traceback, then also prints the exception's message on its own (a bare
    # print in its arbiter, which no logging setting reaches): that one line is the exception.
    printed = "No module named 'gpufs_no_such_module'"
    text = (tmp_path / "stderr.log").read_text()
    plain = [line for line in text.splitlines() if line != printed and not line.startswith("{")]
    assert not plain, text  # the whole log, so a rare plain line shows where it came from
    records = [json.loads(line) for line in text.splitlines() if line != printed]
    failed = [r for r in records if "exception" in r]
    assert failed and failed[0]["message"] == "Exception in worker process"
    assert failed[0]["exception"].startswith("Traceback") and printed in failed[0]["exception"]
    assert records[-1]["message"] == "Reason: Worker failed to boot."


def test_flask_commands_never_migrate_nor_log_an_error_with_the_database_down():
    env = dict(os.environ, DATABASE_URL=f"postgresql://postgres@127.0.0.1:{free_port()}/x", MIGRATE_ON_START="true")
    flask = Path(sys.executable).with_name("flask")
    done = subprocess.run([str(flask), "--app", "app", "--help"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and "gpufs" in done.stdout
    assert "ERROR" not in done.stderr and "migrat" not in done.stderr, done.stderr


def _http(port, path):
    """A urllib response (errors included) that assert_envelope can read."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return _Answer(resp.status, resp.read())
    except urllib.error.HTTPError as err:
        with err:
            return _Answer(err.code, err.read())


class _Answer:
    def __init__(self, status_code, body):
        self.status_code, self.body = status_code, body

    def get_json(self):
        return json.loads(self.body)


# ---- docs --------------------------------------------------------------------------------------

def test_readme_lists_every_setting_with_its_default():
    from gpufs.config import DEFAULTS
    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        if m := re.match(r"\| `([A-Z_]+)` \| ([^|]+) \|", line):
            rows[m.group(1)] = m.group(2)
    for key, default in DEFAULTS.items():
        assert key in rows, f"README.md: {key} missing from the configuration table"
        text = "true" if default is True else "false" if default is False else str(default)
        if text:
            assert f"`{text}`" in rows[key] or key == "DATABASE_URL" and text in rows[key], (key, rows[key])
        else:
            assert rows[key].startswith("empty"), (key, rows[key])
