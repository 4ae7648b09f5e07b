"""The seven figures of issue 8, each measured against a server started for it (see bench/README.md)."""
import hashlib
import importlib.util
import os
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta
from statistics import median

import psycopg2
import redis

from gpufs import config

from . import VALUE_KEY, dataset, direct, load, scenario
from .server import Server, peak_rss_kb

READS = ("client_list", "client_stat", "client_device_detail", "models/get")
HISTORY_READS = ("client_list", "client_stat", "client_device_detail", "client_health page", "device_history 24 h",
                 "device_history 7 d")
# Issue 19: device_history of 8 GPUs uncached, p50 at most this many ms (and within 1.25 x with 10x history).
HISTORY_LIMITS_MS = {"device_history 24 h": 15, "device_history 7 d": 25}
HISTORY_REFERENCE = "models/get"  # reads no heartbeat: how far the machine itself moved in figure 4
FLASK_FLOOR = "/bench/flask/floor"  # bench/app.py: a constant from a bare Flask app
SCRAPED_CLIENTS = 1000  # contract section 11: one scrape of 1,000 machines of 8 GPUs under 200 ms
SCRAPE_LIMIT_MS = 200
SCRAPE_INTERVAL = 15  # deploy/prometheus.yml's scrape_interval


class Bench:
    """What every phase needs: where the data is, how long to measure, where results go."""

    def __init__(self, args, dsn, redis_url, layout, workdir, results, say, began):
        self.args, self.dsn, self.redis_url, self.layout = args, dsn, redis_url, layout
        self.workdir, self.results, self.say = workdir, results, say
        self.settings = config.from_env()
        self.dsn_name = psycopg2.extensions.parse_dsn(dsn)["dbname"]
        self.deadline = began + args.budget

    def time_left(self):
        """Seconds left of the run's --budget."""
        return self.deadline - time.monotonic()

    def server(self, name, **env):
        # Token auth off (the load carries no keys); a metrics directory of the server's own.
        base = {"DATABASE_URL": self.dsn, "REDIS_URL": self.redis_url, "AUTH_MODE": "none",
                "PROMETHEUS_MULTIPROC_DIR": None}
        return Server(name, {**base, **env}, self.workdir, self.args.port)

    def wrk(self, srv):
        return load.Wrk(srv.base, self.args.warmup, self.args.seconds, self.workdir, srv.cpu_seconds)

    def path(self, endpoint, user=None):
        user = user or self.layout.main
        first = hashlib.md5(f"{user}:1".encode()).hexdigest()  # dataset.sql's id of the user's client 1
        # The week of GPU samples the dataset gives that client, at 1800 s (the range fixed once built).
        week = (f"start_date={(self.layout.end - timedelta(days=7)).strftime('%Y-%m-%dT%H:%M:%SZ')}"
                f"&end_date={(self.layout.end + timedelta(minutes=1)).strftime('%Y-%m-%dT%H:%M:%SZ')}&step=1800")
        return {"client_list": f"/api/user/client_list?user_id={user}",
                "client_stat": f"/api/user/client_stat?user_id={user}",
                "client_device_detail": f"/api/user/client_device_detail?user_id={user}&client_id={first}",
                "models/get": "/api/models/get",
                "client_health": f"/api/user/client_health?user_id={user}",
                "client_health page": f"/api/user/client_health?user_id={user}&limit=100",
                "device_history 24 h": f"/api/user/device_history?user_id={user}&client_id={first}",
                "device_history 7 d": f"/api/user/device_history?user_id={user}&client_id={first}&{week}"}[endpoint]

    def statements(self, endpoint):
        """The statements the endpoint runs on a cache miss, [(aiosql query, params)], with the same
        parameters."""
        from gpufs.db import queries  # the product's own queries, figure 3 only (and only when asked for)

        s, user = self.settings, self.layout.main
        window, interval = s["ONLINE_WINDOW_SECONDS"], s["HEARTBEAT_INTERVAL_SECONDS"]
        first = hashlib.md5(f"{user}:1".encode()).digest()
        return {
            "client_list": [(queries.client_list, {
                "user_id": user, "client_id": None, "status": None, "name": None, "valid_status": None,
                "live": False, "window_seconds": window, "interval": interval})],
            "client_stat": [(queries.client_stat, {
                "user_id": user, "window_seconds": window, "interval": interval,
                "temp_warning": s["TEMP_WARNING_C"]})],
            "client_device_detail": [
                (queries.client_detail, {"user_id": user, "client_id": first, "interval": interval})],
            "models/get": [(queries.models_list, {"is_active": None, "min_gpu_memory_gb": None})],
        }[endpoint]


def cached(b):
    """Figure 1 (floors), 2 if asked for, 6 (ingestion) and the live fleet, on one production-like
    server with its cache."""
    with b.server("cached") as srv:
        w = b.wrk(srv)
        if 1 in b.args.figures:
            floors(b, w)
        if 2 in b.args.figures:
            cached_reads(b, srv, w)
        if 6 in b.args.figures:
            ingestion(b, w)
        if "live" in b.args.figures:
            if 6 in b.args.figures:
                # Figure 6 wrote a million rows: the fleet gets a settled database, not an autovacuum.
                b.say("settling the database after ingestion (vacuum analyze, checkpoint)")
                dataset.settle(b.dsn)
            live(b, srv)
        if "dashboard" in b.args.figures:
            dashboard(b, srv)


def fleet_scrape(b):
    """Figure M: GET /metrics/fleet of 1,000 live machines of 8 GPUs with every reading, from request
    to last byte. Rendered for every scrape (FLEET_METRICS_CACHE_SECONDS=0), and as served with the
    setting in force, scraped every 15 s as deploy/prometheus.yml does, with the workers' CPU over
    that minute (rendering ahead included). Each on a server of its own."""
    kept = b.settings["FLEET_METRICS_CACHE_SECONDS"]
    b.say(f"M. fleet scrape: {SCRAPED_CLIENTS:,} machines of 8 GPUs; 5 scrapes rendered each, then 3 as "
          f"served (FLEET_METRICS_CACHE_SECONDS={kept}) {SCRAPE_INTERVAL} s apart")
    dataset.add_scraped_fleet(b.dsn, b.layout, SCRAPED_CLIENTS)
    path = f"/metrics/fleet?user_id={b.layout.scraped}"
    with b.server("fleet-render", FLEET_METRICS_CACHE_SECONDS="0") as srv:
        body = srv.get(path)  # the workers' first scrape: connections made, code warm
        render = _scrapes(srv, path, 5, 0)
    # Each worker renders a scope on its first scrape; a few quick scrapes reach both before the measured ones.
    with b.server("fleet-served") as srv:
        _scrapes(srv, path, 4, 0)
        # Three, not more: the live fleet's search needs the run's minutes more than this figure does.
        served = _scrapes(srv, path, 3, SCRAPE_INTERVAL)
    samples = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    b.results.meta["fleet_scrape"] = {"samples": samples, "bytes": len(body), "rendered": render, "served": served}
    for name, r, note in (
            ("rendered for every scrape", render,
             f"worker CPU {1000 * render['cpu_seconds'] / len(render['ms']):.0f} ms a scrape"),
            (f"as served, every {SCRAPE_INTERVAL} s", served,
             f"the workers' CPU {60 * served['cpu_seconds'] / served['seconds']:.1f} s a minute")):
        p50 = median(r["ms"])
        b.results.add("M", f"fleet scrape of {SCRAPED_CLIENTS:,} machines, {name}, p50", p50, "ms",
                      p50 / SCRAPE_LIMIT_MS, f"{SCRAPE_LIMIT_MS} ms", 1, higher_is_better=False,
                      note=f"max {max(r['ms']):.0f} ms; {samples:,} samples, {len(body) / 1e6:.1f} MB; {note}; "
                           f"load {r['load']}")


def _scrapes(srv, path, count, spacing):
    """`count` scrapes `spacing` s apart: {ms: each from request to last byte, cpu_seconds: the workers'
    meanwhile, seconds: from first to last, load: the load average when they began}."""
    load, cpu, began, times = " ".join(f"{x:.2f}" for x in os.getloadavg()), srv.cpu_seconds(), time.monotonic(), []
    for n in range(count):
        if n and spacing:
            time.sleep(max(0.0, began + n * spacing - time.monotonic()))
        start = time.perf_counter()
        srv.get(path)
        times.append(round(1000 * (time.perf_counter() - start), 1))
    return {"ms": times, "cpu_seconds": round(srv.cpu_seconds() - cpu, 3),
            "seconds": round(time.monotonic() - began, 3), "load": load}


def dashboard(b, srv):
    """A supporting figure: the web dashboard measured in headless Chromium by bench/dashboard.py
    (`python -m bench.dashboard --base URL --user U`), against this server and the main user, when
    that module is present; its own output is printed and kept."""
    if importlib.util.find_spec("bench.dashboard") is None:
        b.say("D. dashboard: bench/dashboard.py is not here; skipped")
        return
    b.say("D. dashboard in headless Chromium (bench/dashboard.py)")
    done = subprocess.run([sys.executable, "-m", "bench.dashboard", "--base", srv.base, "--user", b.layout.main],
                          capture_output=True, text=True, timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    for line in lines:
        b.say("   " + line)
    b.results.meta["dashboard"] = {"returncode": done.returncode, "stdout": done.stdout, "stderr": done.stderr[-4000:]}
    if done.returncode:
        b.results.problem(f"bench/dashboard.py exited with {done.returncode}: {done.stderr.strip()[-300:]}")
    b.results.add("D", "dashboard in headless Chromium (bench/dashboard.py)", "ok" if not done.returncode else "failed",
                  "", note=lines[-1] if lines else "no output")


def floors(b, w):
    """Figure 1, reference lines with no target: what any request costs through gunicorn and Flask."""
    b.say(f"1. floors, {b.args.rounds} rounds of {b.args.seconds} s, {b.args.connections} connections")
    paths = {"F: GET /healthz": "/healthz", "bare Flask route, no hooks": FLASK_FLOOR,
             "R: one Redis value (bench-only route)": "/bench/redis-value"}
    _store_redis_value(b, None)
    runs = w.rounds(list(paths.values()), b.args.connections, b.args.rounds)
    for name, path in paths.items():
        b.results.run(f"floor {path}", runs[path])
        b.results.add(1, name, load.total_rate(runs[path]), "req/s",
                      note=f"p50 {load.best_p50(runs[path]):.2f} ms; {_cpu_note(runs[path])}")


def _store_redis_value(b, value):
    """R's value: as large as the biggest cached read (client_list's data, 36 kB for 100 clients)."""
    if value is None:
        value = b"[" + b",".join([b'{"client_id":"%032x","name":"GPU Server","health":97.5}' % n
                                  for n in range(600)]) + b"]"
    redis.Redis.from_url(b.redis_url).set(VALUE_KEY, value, ex=3600)


def cached_reads(b, srv, w):
    """Figure 2, for information (its target is retired): cached reads against R, the runs bracketed."""
    res, conns, rounds = b.results, b.args.connections, b.args.cached_rounds
    value = srv.get(b.path("client_list")).split(b'"data":', 1)[1].rsplit(b',"message":', 1)[0]
    _store_redis_value(b, value)
    b.say(f"2. cached reads against R, {rounds} rounds (information)")
    paths = {"R": "/bench/redis-value", **{name: b.path(name) for name in READS}}
    for name in READS:
        srv.get(paths[name])  # fill the cache
    # Each round: R, then every read with R measured again after it; a read is compared with the R
    # runs just before and after it (a burst of other work on shared cores lasts seconds).
    order = ["R"] + [x for name in READS for x in (name, "R")]
    before = _metric_totals(srv)
    seq = w.sequence([paths[x] for _ in range(rounds) for x in order], conns)
    after = _metric_totals(srv)
    runs = {name: [] for name in paths}
    brackets = {name: ([], []) for name in READS}
    for i, (name, run) in enumerate(zip(order * rounds, seq, strict=True)):
        runs[name].append(run)
        if name in brackets:
            brackets[name][0].append(seq[i - 1])
            brackets[name][1].append(seq[i + 1])
    for name, r in runs.items():
        res.run(f"{name} c={conns}", r)
    hits, misses = (after[k] - before[k] for k in ("gpufs_cache_hits_total", "gpufs_cache_misses_total"))
    res.meta["cache_hit_share"] = round(hits / max(1, hits + misses), 4)
    for name in READS:
        res.add(2, f"{name}, cached", load.total_rate(runs[name]), "req/s",
                load.median_bracketed_ratio(runs[name], *brackets[name]), "R", note=_cpu_note(runs[name]))


def live(b, srv):
    """The headline: the live fleet's capacity (bench/scenario.py), then the fleet alone at that size for
    the CPU a report costs, and the dashboards with only their user's machines for a poll's."""
    a, res = b.args, b.results
    rates = res.meta.get("ingest_reports_per_s", {})
    # Half what the single-report endpoint took when saturated (figure 6) is a size near capacity.
    start = a.fleet or a.fleet_start or (scenario._nice(30 * rates["single"]) if rates else 2000)
    b.say(f"L. live fleet: machines report every {scenario.PERIOD:.0f} s while {scenario.DASHBOARDS} dashboards "
          f"poll; {a.fleet_warmup} s warm-up, {a.fleet_window} s measured per step, from {start:,} machines")
    sc = scenario.Scenario(b, srv, lambda: (srv.cpu_seconds(), scenario.postgres_cpu(b.dsn_name)),
                           lambda: _metric_totals(srv))
    if a.fleet:
        r = sc.step(a.fleet, a.fleet_warmup, a.fleet_window, stop_early=False)
        b.say("   " + scenario.describe(r))
        passed, failed = (a.fleet, None) if r.passed else (None, a.fleet)
    else:
        passed, failed = sc.search(start, a.fleet_resolution, a.fleet_steps, a.fleet_warmup, a.fleet_window,
                                   b.say, lambda: b.time_left() - _after_search(b))
    res.meta["live"] = {"steps": [r.as_dict() for r in sc.results.values()], "polls": sc.present,
                        "capacity": passed, "smallest_failed": failed}
    for r in sc.results.values():
        if r.stored < r.answered:
            res.problem(f"live fleet, {r.machines:,} machines: {r.answered} reports answered 200, "
                        f"{r.stored} stored")
    cores = os.cpu_count()
    failed_note = f"; {failed:,} failed: {'; '.join(sc.results[failed].reasons)}" if failed else ""
    if passed is None:
        res.add("L", "capacity: no fleet size met every criterion", 0, "machines", 0.0,
                f"{scenario.TARGET_MACHINES:,}", 1, note=failed_note.lstrip("; "))
        return
    r = sc.results[passed]
    res.add("L", "capacity: the largest fleet meeting every criterion", passed, "machines",
            passed / scenario.TARGET_MACHINES, f"{scenario.TARGET_MACHINES:,}", 1,
            note=f"{passed / scenario.PERIOD:.0f} reports/s; {sc.steps} steps{failed_note}")
    res.add("L", "machines per core", passed / cores, "machines", note=f"{cores} cores")
    for kind, k in r.kinds.items():
        name = "reports (POST /api/client/heartbeat)" if kind == scenario.REPORTS else f"poll {kind}"
        res.add("L", f"{name} p99", k["p99_ms"], "ms",
                note=f"p50 {k['p50_ms']:.1f} ms, max {k['max_ms']:.0f} ms, {k['count']:,} in the window")
    res.add("L", "dashboard polls p99, all kinds", r.polls_p99_ms, "ms", r.polls_p99_ms / scenario.POLL_P99_MS,
            f"{scenario.POLL_P99_MS:.0f} ms", 1, higher_is_better=False)
    if r.hit_ratio is not None:
        res.add("L", "cache hit ratio of the polls", r.hit_ratio, "", note="from the server's /metrics")
    if r.group_mean is not None:
        res.add("L", "single reports per transaction, mean (group commit)", r.group_mean, "",
                note="from the server's /metrics")
    res.add("L", "freshness: age of the newest report a client_status_list showed, p99", r.freshness_p99_s, "s")
    due = sum(k["scheduled"] for k in r.kinds.values())
    res.add("L", "load generator: share of the due requests sent", 100 * r.sent_share, "%",
            note=f"{round(r.sent_share * due):,} of {due:,} in the window; lateness p50 "
                 f"{r.lateness_ms['p50']:.1f} ms, p99 {r.lateness_ms['p99']:.1f} ms, "
                 f"max {r.lateness_ms['max']:.0f} ms; its CPU {100 * r.cpu['generator'] / r.window:.0f}% of a core")
    b.say(f"   the fleet alone at {passed:,} machines, then the dashboards with their user's "
          f"{sc.fleet.main_clients} machines alone, {a.cpu_window} s each: the CPU of a report and of a poll")
    alone = sc.step(passed, a.fleet_warmup, a.cpu_window, dashboards=False, stop_early=False, record=False)
    # The dashboards' own machines keep reporting, so their user's version moves as at capacity and
    # the polls hit the cache as often; their few reports are taken out at the rate just measured.
    polled = sc.step(sc.fleet.main_clients, a.fleet_warmup, a.cpu_window, stop_early=False, record=False)
    res.meta["live"]["fleet_alone"], res.meta["live"]["dashboards_alone"] = alone.as_dict(), polled.as_dict()
    per_report = {x: 1000 * alone.cpu[x] / max(1, _count(alone, True)) for x in alone.cpu}
    per_poll = {x: (1000 * polled.cpu[x] - per_report[x] * _count(polled, True)) / max(1, _count(polled, False))
                for x in polled.cpu}
    res.add("L", "CPU per report: server", per_report["server"], "ms",
            note=f"PostgreSQL {per_report['postgres']:.2f} ms, load generator {per_report['generator']:.2f} ms; "
                 "the fleet alone")
    res.add("L", "CPU per poll: server", per_poll["server"], "ms",
            note=f"PostgreSQL {per_poll['postgres']:.2f} ms, load generator {per_poll['generator']:.2f} ms; "
                 f"the dashboards alone, hit ratio {_share(polled.hit_ratio)}")
    rate = passed / scenario.PERIOD
    if rates:
        res.add("L", "the capacity's report rate vs the batch endpoint (figure 6)", rate, "reports/s",
                rate / rates["batch"], "batch")
        res.add("L", "the capacity's report rate vs the COPY write limit (figure 6)", rate, "reports/s",
                rate / rates["copy_limit"], "COPY")


def _after_search(b):
    """Seconds the run still needs once the search ends: the CPU measurements at the capacity, then
    figures 7, M, 5 and 4 and the dashboard (about 290 s on a quiet machine; each a little over what
    it took in a quiet run, so the search is not starved of steps)."""
    a = b.args
    figures = {7: 20, "fleet": 50, 5: 30, 4: 155}
    if importlib.util.find_spec("bench.dashboard") is not None:
        figures["dashboard"] = 35
    return 2 * (a.fleet_warmup + a.cpu_window + 5) + sum(v for k, v in figures.items() if k in a.figures)


def _count(result, reports):
    """Requests of a live-fleet step's window: its reports, or its polls (Prometheus's included)."""
    return sum(k["count"] for kind, k in result.kinds.items() if (kind == scenario.REPORTS) == reports)


def _share(value):
    return "-" if value is None else f"{value:.2f}"


def _cpu_note(runs):
    return f"worker CPU {load.server_cpu_ms(runs):.2f} ms/req"


def _metric_totals(srv):
    """Counters and histogram sums of the server's /metrics, summed over labels: {name: value}."""
    totals = {}
    for line in srv.get("/metrics").decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            totals[name.split("{", 1)[0]] = totals.get(name.split("{", 1)[0], 0.0) + float(value)
            totals[name] = float(value)
    return totals


def ingestion(b, w):
    """Figure 6: reports/s through the batch endpoint vs the single-report endpoint, same connections."""
    lo, res = b.layout, b.results
    b.say("6. ingestion")
    threads = lo.ingest_threads
    client_sets = [[hashlib.md5(f"{lo.ingest_user(t)}:{n}".encode()).hexdigest()
                    for n in range(1, lo.ingest_clients + 1)] for t in range(threads)]
    day = 86400
    end = int(lo.end.timestamp())
    rates, copies = {}, []
    for name, batch, start in (("single", 1, end - 88 * day), ("batch", b.args.batch, end - 58 * day)):
        if name == "batch":
            copies.append(_copy_limit(b))  # the database is shared: COPY just before and just after the batch run
        before = _ingested(b)
        # A batch takes a good part of a second: a longer interval, so the requests still in flight when wrk
        # stops (not counted) are few against those completed.
        run = w.measure("/", threads, threads, prelude=load.reports_prelude(client_sets, batch, dataset.INTERVAL),
                        script=load.reports_script(), args=(start, start + 2 * day),
                        seconds=b.args.ingest_seconds)
        res.run(f"ingest {name}", run)
        stored = _ingested(b) - before
        rates[name] = run.rate * batch
        # Cross-check: with every connection always waiting on one request, rate = connections / latency.
        res.meta[f"ingest_{name}_littles_law"] = round(threads * batch / (run.mean_ms / 1000), 1) \
            if run.requests else None
        if stored < run.requests * batch:
            res.problem(f"ingest {name}: {run.requests * batch} reports answered, {stored} rows stored")
    copies.append(_copy_limit(b))
    copy_rows = sum(copies) / len(copies)
    limit = copy_rows / direct.ROWS_PER_REPORT
    res.meta["copy_rows_per_s"] = [round(x) for x in copies]
    res.add(6, "single-report endpoint", rates["single"], "reports/s",
            note=f"{threads} connections")
    res.add(6, f"batch endpoint, {b.args.batch} reports of 8 GPUs", rates["batch"], "reports/s",
            _ratio(rates["batch"], rates["single"]), "single", 5, note=f"{threads} connections")
    res.add(6, f"COPY write limit: {copy_rows:,.0f} rows/s ÷ {direct.ROWS_PER_REPORT} rows/report", limit,
            "reports/s")
    res.meta["ingest_reports_per_s"] = {**rates, "copy_limit": limit}
    res.add(6, "batch endpoint vs the COPY write limit", rates["batch"], "reports/s", _ratio(rates["batch"], limit),
            "COPY", 0.25)


def _copy_limit(b):
    b.say("   COPY write limit")
    return direct.copy_limit(b.dsn, b.args.copy_reports, 3)[0]


def _ratio(a, b):
    return a / b if b else None


def _ingested(b):
    conn = dataset.connect(b.dsn)
    try:
        return dataset.queries.count_heartbeats(conn, users=f"{b.layout.run}-in-%")
    finally:
        conn.close()


def streaming(b):
    """Figure 7: client_health over the main user's raw heartbeats, one worker, its peak RSS before/after."""
    b.say("7. streaming client_health")
    with b.server("stream", GUNICORN_WORKERS="1") as srv:
        (pid,) = srv.workers()
        srv.get(b.path("client_health") + "&limit=100")
        srv.get(b.path("client_list"))
        before = peak_rss_kb(pid)
        rows, seconds, size, first = _stream(srv.base + b.path("client_health"))
        after = peak_rss_kb(pid)
    growth = (after - before) / 1024
    conn = dataset.connect(b.dsn)
    try:
        stored = dataset.queries.count_heartbeats(conn, users=b.layout.main)
    finally:
        conn.close()
    if rows != stored:
        b.results.problem(f"client_health stream: {rows} rows streamed, {stored} stored")
    b.results.meta["stream"] = {"rows": rows, "seconds": round(seconds, 2), "bytes": size,
                                "first_row_seconds": first, "vm_hwm_kb_before": before, "vm_hwm_kb_after": after}
    b.results.add(7, f"client_health, {rows:,} rows streamed", rows / seconds, "rows/s",
                  note=f"first row after {1000 * first:.0f} ms" if first is not None else "no row")
    b.results.add(7, "worker peak RSS growth (VmHWM)", growth, "MB", growth / 64, "64 MB", 1.0,
                  higher_is_better=False, note=f"{before / 1024:.0f} → {after / 1024:.0f} MB")


def _stream(url):
    """Rows, seconds and bytes of a streamed answer, and the seconds until its first row arrived."""
    marker = b'{"client_id"'
    rows, size, tail, first = 0, 0, b"", None
    began = time.monotonic()
    with urllib.request.urlopen(url, timeout=600) as resp:
        while chunk := resp.read1(1 << 20):  # what has arrived, not a full megabyte
            size += len(chunk)
            data = tail + chunk
            rows += data.count(marker)
            tail = data[-(len(marker) - 1):]
            if rows and first is None:
                first = time.monotonic() - began
    return rows, time.monotonic() - began, size, first


def uncached(b):
    """Figures 3, 5 and 4 on a second server with REDIS_URL empty, one connection at a time."""
    with b.server("uncached", REDIS_URL="") as srv:
        w = b.wrk(srv)
        if 3 in b.args.figures:
            uncached_reads(b, srv, w)
        if 5 in b.args.figures:
            fleet_growth(b, w)
        if 4 in b.args.figures:
            history(b, w)


def uncached_reads(b, srv, w):
    """Figure 3, for information (its target is retired): the server-side time of each read, and its
    SQL run in a psycopg2 loop from this process right after the read's own run, round by round."""
    res, rounds = b.results, b.args.rounds
    b.say("3. uncached reads vs their SQL in a psycopg2 loop (information)")
    paths = {"F": "/healthz", "floor": FLASK_FLOOR, **{name: b.path(name) for name in READS}}
    names = list(paths) * rounds
    w.warm(list(paths.values()), 1)
    totals = [_metric_totals(srv)]
    server, sql = {name: [] for name in paths}, {name: [] for name in READS}

    def after_each(i, _run):
        totals.append(_metric_totals(srv))
        name = names[i]
        server[name].append(_server_ms(totals[-2], totals[-1], paths[name].split("?", 1)[0]))
        if name in sql:
            sql[name].append(direct.sql_loop(b.dsn, b.statements(name), b.args.seconds) * 1000)

    seq = w.runs([paths[name] for name in names], 1, after_each)
    res.meta["uncached_rounds_ms"] = {name: {"server": [round(x, 3) for x in server[name]],
                                             "sql": [round(x, 3) for x in sql.get(name, [])]} for name in paths}
    base = {name: res.run(f"uncached {name} c=1", seq[i::len(paths)]) for i, name in enumerate(paths)}
    res.add(3, "bare Flask route, no hooks, server-side", median(server["floor"]), "ms/req",
            note=f"HTTP round trip at 1 connection {load.best_ms(base['floor']):.2f} ms")
    res.add(3, "GET /healthz, server-side", median(server["F"]), "ms/req",
            note=f"HTTP round trip at 1 connection {load.best_ms(base['F']):.2f} ms")
    for name in READS:
        ratio = median([s / q for s, q in zip(server[name], sql[name], strict=True)])
        res.add(3, f"{name}, uncached, server-side", median(server[name]), "ms/req", ratio,
                f"SQL {median(sql[name]):.2f} ms",
                note=f"HTTP round trip at 1 connection {load.best_ms(base[name]):.2f} ms")


def fleet_growth(b, w):
    res = b.results
    b.say("5. fleet growth")
    sizes = dataset.FLEET_SIZES
    fleet = w.rounds([b.path("client_list", b.layout.fleet_user(n)) for n in sizes], 1, b.args.rounds)
    p50 = {}
    for size, runs in zip(sizes, fleet.values(), strict=True):
        res.run(f"fleet {size} c=1", runs)
        p50[size] = load.best_p50(runs)
        prev = p50.get(size // 10)
        res.add(5, f"client_list, {size} clients, uncached p50", p50[size], "ms",
                p50[size] / prev if prev else None, f"{size // 10} clients" if prev else "",
                10 if prev else None, higher_is_better=False, note=f"{1000 * p50[size] / size:.0f} µs/client")


def history(b, w):
    """Figure 4: the reads' p50 just before and just after the main user gets more raw history. A
    base taken minutes earlier (figure 3's runs) let the machine's drift in: client_list, which
    reads no raw heartbeat, once came out at 1.52 ×. The reference read, which reads no heartbeat
    at all, shows the drift that is left."""
    res, names = b.results, HISTORY_READS + (HISTORY_REFERENCE,)
    paths = [b.path(name) for name in names]
    b.say("4. history: the base")
    base = w.rounds(paths, 1, b.args.rounds)
    b.say(f"   adding raw heartbeats, x{b.args.history}")
    total, secs = dataset.extend_history(b.dsn, b.layout, b.args.history)
    res.meta["history"] = {"heartbeats": total, "build_seconds": round(secs, 1)}
    after = w.rounds(paths, 1, b.args.rounds)
    for name, path in zip(names, paths, strict=True):
        res.run(f"history base {name} c=1", base[path])
        res.run(f"history {name} c=1", after[path])
        then, now = load.best_p50(base[path]), load.best_p50(after[path])
        if name == HISTORY_REFERENCE:
            res.add(4, f"{name} p50, reads no heartbeat: the machine's drift", now, "ms", now / then,
                    f"{then:.2f} ms")
        else:
            res.add(4, f"{name} p50, {b.args.history}x raw heartbeats", now, "ms", now / then,
                    f"{then:.2f} ms", 1.25, higher_is_better=False)
        if name in HISTORY_LIMITS_MS:
            limit = HISTORY_LIMITS_MS[name]
            res.add(4, f"{name} p50, uncached, the base history", then, "ms", then / limit, f"{limit} ms", 1,
                    higher_is_better=False)


def _server_ms(before, after, path, name="gpufs_bench_server_seconds"):
    """Mean time per request of `path` between two /metrics reads, by one of bench/app.py's timers."""
    key = f'{{path="{path}"}}'
    count = after.get(f"{name}_count{key}", 0) - before.get(f"{name}_count{key}", 0)
    total = after.get(f"{name}_sum{key}", 0) - before.get(f"{name}_sum{key}", 0)
    return 1000 * total / count if count else float("nan")
