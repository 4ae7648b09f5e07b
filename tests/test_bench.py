"""The benchmark's own machinery (bench/): what it prints, where it runs, how it searches and loads.
The benchmark itself is not run here: its figures depend on the machine."""
import asyncio
import hashlib
import secrets
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import orjson
import psycopg2
import pytest
from psycopg2 import sql

from bench import __main__ as bench_main
from bench import scenario
from bench.live import Generator, Stream, fetch, raw_request
from bench.report import Results
from bench.server import Server
from tests.conftest import register


@pytest.mark.parametrize("ratio, printed, met", [
    (0.8457, "0.846 × R", "**no**"),  # printed "0.85" it looked as if it met "≥ 0.85"
    (0.8497, "0.8497 × R", "**no**"),
    (0.8503, "0.85 × R", "yes"),
    (0.91, "0.91 × R", "yes"),
])
def test_bench_ratio_is_printed_with_the_digits_its_verdict_needs(ratio, printed, met):
    results = Results()
    results.add(2, "client_list, cached", 1000, "req/s", ratio, "R", 0.85)
    assert f"| {printed} | ≥ 0.85 | {met} |" in results.table()


def test_bench_figures_are_shown_as_they_are_measured():
    lines = []
    results = Results(show=lines.append)
    results.add(6, "single-report endpoint", 361.2, "reports/s")
    assert lines == ["| 6 | single-report endpoint | 361 reports/s |  |  |  |"]


def test_bench_port_comes_from_the_option_else_bench_port(monkeypatch, tmp_path):
    monkeypatch.delenv("BENCH_PORT", raising=False)
    assert bench_main.parse_args([]).port is None
    assert bench_main.parse_args(["--port", "18555"]).port == 18555
    monkeypatch.setenv("BENCH_PORT", "18556")
    assert bench_main.parse_args([]).port == 18556
    srv = Server("cached", {}, tmp_path, port=18556)
    assert srv.base == "http://127.0.0.1:18556" and srv.env["GPUFS_BIND"] == "127.0.0.1:18556"


def test_bench_quick_shortens_what_was_not_given():
    args = bench_main.parse_args(["--quick", "--fleet-window", "30"])
    assert args.fleet_window == 30 and args.fleet_warmup == bench_main.QUICK["fleet_warmup"]
    assert bench_main.parse_args([]).fleet_window == 60


def test_bench_database_is_created_when_database_url_names_a_missing_one(urls):
    params = psycopg2.extensions.parse_dsn(urls["DATABASE_URL"])
    missing = psycopg2.extensions.make_dsn(**{**params, "dbname": f"gpufs_missing_{secrets.token_hex(4)}"})
    name = f"gpufs_benchtest_{secrets.token_hex(4)}"
    dsn = bench_main.bench_database(missing, name)
    try:
        conn = psycopg2.connect(dsn)
        with conn.cursor() as cur:
            cur.execute("select current_database()")
            assert cur.fetchone()[0] == name
        conn.close()
        assert bench_main.bench_database(missing, name) == dsn  # a second run finds it
    finally:
        conn = psycopg2.connect(urls["DATABASE_URL"])
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql.SQL("drop database if exists {}").format(sql.Identifier(name)))
        conn.close()


def test_bench_search_doubles_until_a_step_fails_then_bisects():
    tried = []

    def passes(n):
        tried.append(n)
        return n <= 13_000

    assert scenario.search(passes, 4000, 0.2, 10, 100) == (12_000, 14_000)
    assert tried == [4000, 8000, 16_000, 12_000, 14_000]


def test_bench_search_halves_while_no_step_passes():
    tried = []

    def passes(n):
        tried.append(n)
        return n <= 3000

    assert scenario.search(passes, 11_000, 0.2, 4, 100) == (2800, 4200)
    assert tried == [11_000, 5500, 2800, 4200]  # the fourth step is the last one allowed


def test_bench_search_starts_no_step_once_time_is_up():
    tried, budget = [], [2]

    def passes(n):
        tried.append(n)
        return True

    def may_go_on():
        budget[0] -= 1
        return budget[0] >= 0

    assert scenario.search(passes, 1000, 0.2, 10, 100, may_go_on) == (4000, None)
    assert tried == [1000, 2000, 4000]


def test_bench_search_stops_at_the_smallest_fleet():
    assert scenario.search(lambda n: False, 400, 0.2, 10, 100) == (None, 100)


class _Holding(BaseHTTPRequestHandler):
    """Answers nothing until `expected` requests have arrived, then answers them all."""

    def do_GET(self):
        server = self.server
        with server.lock:
            server.arrived += 1
            if server.arrived == server.expected:
                server.all_in.set()
        held = server.all_in.wait(30)
        body = b"ok" if held else b"not all requests arrived"
        self.send_response(200 if held else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_live_generator_sends_every_request_due_while_the_server_holds_its_answers():
    """Open loop: a sender never waits for an earlier answer, so a stalled server sees every request
    that fell due (a closed loop of a few connections would deadlock here and get 503s)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Holding)
    httpd.lock, httpd.arrived, httpd.expected, httpd.all_in = threading.Lock(), 0, 10, threading.Event()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        stream = Stream("poll", 10, 1.0, lambda i, _wall: raw_request("GET", f"/{i}"))
        step = Generator("127.0.0.1", httpd.server_address[1]).run([stream], 0, 1)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert step.scheduled == {"poll": 10}
    assert [o.status for o in step.outcomes] == [200] * 10
    assert not step.aborted


def test_live_fleet_report_is_stored_by_the_server(client, db):
    layout = SimpleNamespace(run="t", main="fleet-user", start=datetime.now(timezone.utc))
    fleet = scenario.Fleet("unused: no machine beyond the main user's is registered", layout, 1)
    client_id = register(client, user_id="fleet-user", client_id=hashlib.md5(b"fleet-user:1").hexdigest())
    fleet.grow(1)
    fleet.spread(1)
    raw = fleet.report(0, time.time())
    head, body = raw.split(b"\r\n\r\n", 1)
    assert head.startswith(b"POST /api/client/heartbeat HTTP/1.1")
    resp = client.post("/api/client/heartbeat", data=body, content_type="application/json")
    assert resp.status_code == 200, resp.get_json()
    report = orjson.loads(body)
    assert report["client_id"] == client_id and len(report["devices"]) == scenario.GPUS
    with db.cursor() as cur:
        cur.execute("select count(*) from heartbeat where client_id = %(id)s", {"id": bytes.fromhex(client_id)})
        assert cur.fetchone()[0] == 1


def test_live_fleet_spreads_the_main_users_machines_over_the_period():
    fleet = scenario.Fleet("unused", SimpleNamespace(run="t", main="u", start=datetime.now(timezone.utc)), 100)
    fleet.spread(1000)
    assert sorted(fleet.order) == list(range(1000))
    positions = [i for i, machine in enumerate(fleet.order) if machine < 100]
    assert positions == [10 * k for k in range(100)]


class _Chunked(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for part in (b"# HELP ", b"gpufs_client_up 1\n"):
            self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
        self.wfile.write(b"0\r\n\r\n")
        self.close_connection = True

    def log_message(self, *args):
        pass


def test_live_fetch_reads_a_chunked_answer_whole():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Chunked)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        status, body = asyncio.run(fetch("127.0.0.1", httpd.server_address[1], raw_request("GET", "/metrics/fleet")))
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert (status, body) == (200, b"# HELP gpufs_client_up 1\n")
