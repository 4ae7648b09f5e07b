"""deploy/nginx.conf in front of the real gunicorn: the seed's curl workflow through Debian's nginx,
forwarded headers, request ids, the 1 MiB body limit and an upstream outage, all as envelopes."""
import gzip
import http.server
import json
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from .conftest import ROOT, free_port
from .reports import UNKNOWN_READINGS

NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                        if Path(p).exists()), None)
pytestmark = pytest.mark.skipif(NGINX is None, reason="no nginx binary: apt-get install nginx (CI does)")
ENVELOPE = {"success", "data", "message", "timestamp"}
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never an http_proxy from the env


def site_for(upstream_port, listen_port):
    """The shipped site with only its two addresses changed."""
    site = (ROOT / "deploy" / "nginx.conf").read_text()
    site, n = re.subn(r"server 127\.0\.0\.1:18081;", f"server 127.0.0.1:{upstream_port};", site)
    assert n == 1, "deploy/nginx.conf: upstream address not found"
    site = re.sub(r"^\s*listen \[::\]:80;\n", "", site, flags=re.M)
    site, n = re.subn(r"listen 80;", f"listen 127.0.0.1:{listen_port};", site)
    assert n == 1, "deploy/nginx.conf: listen 80 not found"
    return site


def start_nginx(prefix, upstream_port):
    """nginx in the foreground under a private prefix; returns (process, base URL)."""
    prefix.mkdir(parents=True, exist_ok=True)
    prefix.chmod(0o755)
    temp = prefix / "temp"
    temp.mkdir(exist_ok=True)
    temp.chmod(0o777)  # workers run as nobody when the test runs as root
    port = free_port()
    (prefix / "gpufs.conf").write_text(site_for(upstream_port, port))
    (prefix / "nginx.conf").write_text(f"""
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {prefix}/gpufs.conf;
}}
""")
    proc = subprocess.Popen([NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", "stderr"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                _, err = proc.communicate()
                raise RuntimeError("nginx did not start:\n" + err.decode()) from None
            time.sleep(0.05)


def stop_nginx(proc):
    proc.send_signal(signal.SIGQUIT)  # graceful: finish open requests, then exit
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.stderr.close()


@pytest.fixture
def prefix():
    """nginx's directory: under /tmp itself, since workers run as nobody when tests run as root and
    pytest's own temporary directories are closed to other users."""
    path = Path(tempfile.mkdtemp(prefix="gpufs-nginx-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def proxied(server):
    upstream_port = int(server.rsplit(":", 1)[1])
    path = Path(tempfile.mkdtemp(prefix="gpufs-nginx-"))
    proc, base = start_nginx(path, upstream_port)
    yield base
    stop_nginx(proc)
    shutil.rmtree(path, ignore_errors=True)


def call(base, path, body=None, headers=None, method=None):
    """(status, headers, parsed JSON body) of one request; error statuses are answers too."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    req = urllib.request.Request(base + path, data=data, method=method or ("POST" if data is not None else "GET"),
                                 headers={**({"Content-Type": "application/json"} if data is not None else {}),
                                          **(headers or {})})
    try:
        with OPENER.open(req, timeout=15) as resp:
            return resp.status, resp.headers, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers, json.loads(err.read())


def ok(result):
    status, _headers, body = result
    assert status == 200, body
    assert set(body) == ENVELOPE and body["success"] is True and body["message"] == "Operation successful"
    assert TIMESTAMP.match(body["timestamp"])
    return body["data"]


def test_seed_curl_workflow_through_nginx(proxied):
    user = "ngx" + uuid.uuid4().hex[:12]
    cid = uuid.uuid4().hex
    # 1. Create client
    assert ok(call(proxied, "/api/user/insert_client", {
        "user_id": user, "client_id": cid, "client_status": "online", "os_type": "Linux",
        "name": "GPU Server 1"})) == []
    # A heartbeat, so that the monitoring steps have figures to show.
    reported = ok(call(proxied, "/api/client/heartbeat", {
        "client_id": cid, "system": {"cpu_usage": 45, "memory_usage": 60, "disk_usage": 30,
                                     "network_rx": 2048, "network_tx": 1024},
        "device_memsize": 24576, "total_tflops": 83,
        "devices": [{"index": 0, "name": "NVIDIA GeForce RTX 4090", "temp": 72, "usage": 85, "mem_usage": 75,
                     "power_usage": 350}]}))
    assert reported["status"] == "stored"

    # 2. Get client list
    listing = ok(call(proxied, f"/api/user/client_list?user_id={user}"))
    assert listing["total"] == 1
    device = listing["devices"][0]
    assert {"client_id", "client_name", "client_status", "os_type", "device_name", "tflops", "cpu_usage",
            "memory_usage", "storage_usage", "health", "last_online", "created_at", "uptime_days"} <= set(device)
    assert (device["client_id"], device["client_name"], device["client_status"], device["os_type"]) == \
        (cid, "GPU Server 1", "online", "Linux")
    assert (device["device_name"], device["tflops"], device["cpu_usage"]) == ("NVIDIA GeForce RTX 4090", 83, 45)
    assert TIMESTAMP.match(device["last_online"]) and TIMESTAMP.match(device["created_at"])

    # 3. Get client details
    detail = ok(call(proxied, f"/api/user/client_device_detail?user_id={user}&client_id={cid}"))
    assert set(detail["system_info"]) >= {"health", "cpu_usage", "memory_usage", "storage_usage",
                                          "device_memsize", "uptime_days"}
    assert detail["system_info"]["device_memsize"] == 24576
    assert detail["device_info"] == [{"device_index": 0, "name": "NVIDIA GeForce RTX 4090", "temp": 72,
                                      "usage": 85, "mem_usage": 75, "power_usage": 350, **UNKNOWN_READINGS}]

    # 4. Update client information
    assert ok(call(proxied, "/api/user/edit_client_info", {
        "user_id": user, "client_id": cid, "name": "Updated GPU Server 1", "client_status": "maintenance"})) is None
    renamed = ok(call(proxied, f"/api/user/client_list?user_id={user}"))["devices"][0]
    assert (renamed["client_name"], renamed["client_status"]) == ("Updated GPU Server 1", "maintenance")

    # 5. Get client statistics
    stat = ok(call(proxied, f"/api/user/client_stat?user_id={user}"))
    assert stat["systems_total_number"] == 1 and stat["systems_maintenance_number"] == 1
    assert set(stat) == {"systems_total_number", "systems_online_number", "systems_maintenance_number",
                         "systems_warnings_number", "total_tflops", "uptime_rate"}
    assert stat["total_tflops"] == 83

    # 6. Get monitoring data
    monitor = ok(call(proxied, f"/api/user/client_monitor?user_id={user}"))
    assert len(monitor) == 1
    assert {"client_id", "client_name", "created_at", "updated_at", "date", "avg_cpu_usage", "avg_memory_usage",
            "avg_disk_usage", "total_network_in_bytes", "total_network_out_bytes", "total_heartbeats",
            "last_heartbeat", "avg_network_in_bytes", "avg_network_out_bytes"} <= set(monitor[0])
    assert (monitor[0]["total_heartbeats"], monitor[0]["total_network_in_bytes"]) == (1, 2048)

    # 7. Get health information
    health = ok(call(proxied, f"/api/user/client_health?user_id={user}"))
    assert len(health) == 1
    assert {"client_id", "client_name", "timestamp", "cpu_usage", "mem_usage", "disk_usage", "network_up",
            "network_down"} <= set(health[0])
    assert (health[0]["network_up"], health[0]["network_down"], health[0]["cpu_usage"]) == (1024, 2048, 45)


def test_probes_pass_through_and_metrics_stay_private(proxied):
    assert ok(call(proxied, "/healthz")) == {"status": "ok"}
    assert ok(call(proxied, "/readyz")) == {"database": "ok", "redis": "ok"}
    with pytest.raises(urllib.error.HTTPError) as err:
        OPENER.open(proxied + "/metrics", timeout=5)
    assert err.value.code == 404
    err.value.close()


def test_request_id_is_forwarded_or_made_by_nginx_and_echoed(proxied):
    _status, headers, _body = call(proxied, "/healthz", headers={"X-Request-ID": "portal-7f3a"})
    assert headers.get_all("X-Request-ID") == ["portal-7f3a"]
    _status, headers, _body = call(proxied, "/healthz")
    assert re.fullmatch(r"[0-9a-f]{32}", headers["X-Request-ID"])  # nginx's $request_id, kept by gpufs


def test_api_errors_pass_through_as_envelopes(proxied):
    status, _headers, body = call(proxied, "/api/user/client_list")
    assert status == 400 and set(body) == ENVELOPE and body["message"].startswith("user_id")
    status, _headers, body = call(proxied, "/api/no/such/route")
    assert status == 404 and body["success"] is False
    status, _headers, body = call(proxied, "/api/user/insert_client", b"x=1",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415 and body["success"] is False


def test_body_over_one_mebibyte_is_refused_by_nginx_as_an_envelope(proxied):
    padding = "x" * (1024 * 1024)
    status, headers, body = call(proxied, "/api/user/insert_client", {"user_id": "1", "pad": padding})
    assert status == 413 and set(body) == ENVELOPE and body["success"] is False and body["data"] is None
    utc = time.localtime().tm_gmtoff == 0  # nginx writes its local time: UTC on a server set up as documented
    assert (TIMESTAMP if utc else re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")).match(body["timestamp"])
    assert headers["X-Request-ID"]
    # Just under the limit reaches gpufs, which judges the fields instead.
    small = "x" * (1024 * 1024 - 200)
    status, _headers, body = call(proxied, "/api/user/insert_client", {"user_id": "1", "pad": small})
    assert status == 400 and "client_id" in body["message"]


class _Echo(http.server.BaseHTTPRequestHandler):
    """An upstream that answers with the request headers it was given."""

    def do_GET(self):
        body = json.dumps({"success": True, "data": dict(self.headers), "message": "Operation successful",
                           "timestamp": "2025-07-29T17:55:48.826362Z"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_nginx_forwards_client_address_scheme_host_and_request_id(prefix):
    echo = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=echo.serve_forever, daemon=True)
    thread.start()
    proc, base = start_nginx(prefix, echo.server_address[1])
    try:
        _status, _headers, body = call(base, "/api/user/client_list?user_id=1",
                                       headers={"X-Request-ID": "abc-1", "X-Forwarded-For": "203.0.113.9"})
    finally:
        stop_nginx(proc)
        echo.shutdown()
        echo.server_close()
    seen = {k.lower(): v for k, v in body["data"].items()}
    assert seen["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"  # the client's claim, then the real peer
    assert seen["x-real-ip"] == "127.0.0.1" and seen["x-forwarded-proto"] == "http"
    assert seen["x-request-id"] == "abc-1" and seen["host"] == base.removeprefix("http://").split(":")[0]


def test_upstream_down_is_a_503_envelope(prefix):
    proc, base = start_nginx(prefix, free_port())  # nothing listens upstream
    try:
        status, headers, body = call(base, "/api/user/client_list?user_id=1")
    finally:
        stop_nginx(proc)
    assert status == 503 and set(body) == ENVELOPE and body["success"] is False
    assert headers["Retry-After"] == "5"


def raw(base, data):
    """The status line and the body of the answer to `data` sent as is."""
    with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])), timeout=15) as sock:
        sock.sendall(data)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.split(b"\r\n"), body


@pytest.mark.parametrize("request_bytes, status", [
    (b"GET /api/models/get?" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET /api/models/get HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 5000 + b"\r\n\r\n", 431),
    (b"GET /api/models/get HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n", 431),
    (b"NOT A REQUEST LINE\r\n\r\n", 400),
    (b"GET /api/models/get\x01 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    (b"GET /api/models/get HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", 400),
], ids=["request-line-too-long", "header-line-too-long", "header-line-over-gunicorns-limit", "bad-request-line",
        "control-character", "bad-header-line"])
def test_malformed_or_oversized_requests_are_refused_by_nginx_as_envelopes(proxied, request_bytes, status):
    head, body = raw(proxied, request_bytes)
    assert head[0].startswith(f"HTTP/1.1 {status}".encode()), head
    assert b"content-type: application/json" in [line.lower() for line in head]
    envelope = json.loads(body)
    assert set(envelope) == ENVELOPE and envelope["success"] is False and envelope["data"] is None


def test_requests_just_inside_nginxs_limits_reach_gpufs(proxied):
    """gunicorn's limits are looser than nginx's, so it never answers in its own plain text: a long
    query string, a long header line (X-Forwarded-For grows as nginx adds the peer) and more
    headers than gunicorn's default of 100 all reach the app."""
    many = {f"X-Extra-{i}": "1" for i in range(150)}
    for path, headers in ((f"/api/models/get?pad={'a' * 3900}", {}),
                          ("/api/models/get", {"X-Forwarded-For": "203.0.113.9," * 320}),
                          ("/api/models/get", many)):
        status, answer_headers, body = call(proxied, path, headers=headers)
        assert status == 200 and set(body) == ENVELOPE and answer_headers["X-Request-ID"]


def test_slow_clients_are_held_by_nginx_while_other_requests_answer(proxied):
    """50 connections sending a header line a second (straight to gunicorn, 8 such stall every
    worker thread): nginx reads them itself, and other requests still answer."""
    host, port = "127.0.0.1", int(proxied.rsplit(":", 1)[1])
    slow = [socket.create_connection((host, port), timeout=15) for _ in range(50)]
    stop, rounds = threading.Event(), []

    def drip():
        while not stop.wait(1):
            for sock in slow:
                sock.sendall(b"X-Slow: 1\r\n")
            rounds.append(1)

    for sock in slow:
        sock.sendall(b"GET /api/models/get HTTP/1.1\r\nHost: slow\r\n")
    dripping = threading.Thread(target=drip)
    dripping.start()
    try:
        deadline = time.monotonic() + 30
        while len(rounds) < 2 and time.monotonic() < deadline:  # well into their slow sending
            time.sleep(0.1)
        answered = [call(proxied, "/api/models/get")[0] for _ in range(20)]
        still_dripping = dripping.is_alive()
    finally:
        stop.set()
        dripping.join()
    assert answered == [200] * 20 and still_dripping
    for sock in slow:  # each was a real request all along, held whole by nginx
        sock.sendall(b"Connection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        sock.close()
        assert answer.startswith(b"HTTP/1.1 200 ")


def test_json_is_gzipped_by_nginx_for_a_client_that_accepts_it(proxied):
    # The dashboard's refresh is mostly JSON (README "Dashboard"): the shipped site compresses it.
    req = urllib.request.Request(proxied + "/api/models/get", headers={"Accept-Encoding": "gzip"})
    with OPENER.open(req, timeout=15) as resp:
        assert resp.headers["Content-Encoding"] == "gzip"
        body = json.loads(gzip.decompress(resp.read()))
    assert body["success"] is True and isinstance(body["data"], list)
    plain = call(proxied, "/api/models/get")  # no Accept-Encoding: sent as it is
    assert plain[1]["Content-Encoding"] is None and plain[2]["success"] is True
