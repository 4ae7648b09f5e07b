"""Prometheus metrics: one set per process, merged across gunicorn workers in /metrics.

Under gunicorn, deploy/gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR before any worker
imports this module: every worker then writes its samples to files in that directory and
the worker that answers /metrics adds them all up. Without the variable (tests, `flask run`,
a host app) the metrics live in the process's default registry.

prometheus-client's process_* figures describe only the process that computes them, so under
gunicorn they would be whichever worker answered (a CPU counter jumping between two workers'
totals). ServerProcesses reports the whole server instead: gunicorn's master and its workers.
"""
import functools
import os

import psutil
from marshmallow import ValidationError
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.platform_collector import PlatformCollector

# Decided once, at import, exactly as prometheus_client itself decides how to store values.
MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
UNMATCHED = "<unmatched>"  # the endpoint label of a request no route matched: never the raw path
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
_request_children = {}  # (endpoint, method, status) -> (counter, histogram): bounded by routes x methods x statuses

HTTP_REQUESTS = Counter(
    "gpufs_http_requests_total", "HTTP requests answered, by route, method and status.",
    ["endpoint", "method", "status"])
HTTP_DURATION = Histogram(
    "gpufs_http_request_duration_seconds", "Time from receiving a request to its last byte sent.",
    ["endpoint", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
CACHE_HITS = Counter("gpufs_cache_hits_total", "Reads answered from Redis.")
CACHE_MISSES = Counter("gpufs_cache_misses_total", "Reads answered from PostgreSQL (Redis missed, down or off).")
CACHE_ERRORS = Counter("gpufs_cache_errors_total", "Redis calls that failed or timed out.")
HEARTBEATS = Counter(
    "gpufs_heartbeats_total", "Heartbeat reports received, by outcome (stored, duplicate, rejected).",
    ["outcome"])
DB_POOL_IN_USE = Gauge(
    "gpufs_db_pool_connections_in_use", "PostgreSQL connections taken from the pools of live workers.",
    multiprocess_mode="livesum")
DB_POOL_MAX = Gauge(
    "gpufs_db_pool_connections_max", "Upper bound of the PostgreSQL pools of live workers (DB_POOL_MAX each).",
    multiprocess_mode="livesum")

for _outcome in ("stored", "duplicate", "rejected"):
    HEARTBEATS.labels(_outcome)  # exported as 0 from the start, so rate() sees the first report


def count_heartbeats(stored=0, duplicates=0, rejected=0):
    """Record the outcome of an ingestion request."""
    for outcome, n in (("stored", stored), ("duplicate", duplicates), ("rejected", rejected)):
        if n:
            HEARTBEATS.labels(outcome).inc(n)


def counts_rejected_report(view):
    """Around the single-report view: a report refused for its content (400) counts as rejected, as
    the batch endpoint counts the same report. Unknown or invalid clients are counted by ingest."""
    @functools.wraps(view)
    def run(*args, **kwargs):
        try:
            return view(*args, **kwargs)
        except ValidationError:
            count_heartbeats(rejected=1)
            raise
    return run


def observe_request(endpoint, method, status, seconds):
    """One answered request; `endpoint` is the matched URL rule, UNMATCHED when none matched."""
    # Any token is a valid HTTP method: an unknown one is counted as OTHER, so a caller cannot
    # add label values (series) at will.
    labels = (endpoint or UNMATCHED, method if method in METHODS else "OTHER", status)
    children = _request_children.get(labels)
    if children is None:  # labels() validates and locks on every call: look each set up once
        children = (HTTP_REQUESTS.labels(*labels), HTTP_DURATION.labels(*labels))
        _request_children[labels] = children
    children[0].inc()
    children[1].observe(seconds)


def observe_pool(pool):
    """Publish this process's pool size and usage (at boot and at scrape time)."""
    DB_POOL_MAX.set(int(pool.config["DB_POOL_MAX"]))
    pool_changed(pool)


def pool_changed(pool):
    """Pool.on_change: a worker's usage is published as it changes, not sampled around every
    request (six writes to the metrics files on each, including those that use no connection)."""
    DB_POOL_IN_USE.set(pool.in_use)


class ServerProcesses:
    """process_* of the server as a whole, read from /proc at scrape time: under gunicorn its master
    and live workers (the answering worker's parent and that parent's children), else this process.

    CPU time counts the master's reaped children too, so a worker that exits or is replaced keeps
    its share and the counter never goes back. Memory and descriptors are sums over the processes
    (resident pages shared after the fork are counted in each); the start time and descriptor limit
    are the master's."""

    def collect(self):
        master = psutil.Process(os.getppid())
        try:
            under_gunicorn = "gunicorn" in " ".join(master.cmdline())
        except psutil.Error:
            under_gunicorn = False
        if not under_gunicorn:
            master = psutil.Process()
        cpu, rss, vms, fds = 0.0, 0, 0, 0
        for proc in [master, *master.children()] if under_gunicorn else [master]:
            try:
                with proc.oneshot():
                    times, memory, open_fds = proc.cpu_times(), proc.memory_info(), proc.num_fds()
            except psutil.Error:  # a worker that exited meanwhile: its CPU is now the master's
                continue
            cpu += times.user + times.system
            if proc is master:
                cpu += times.children_user + times.children_system
            rss, vms, fds = rss + memory.rss, vms + memory.vms, fds + open_fds
        whole = "gunicorn's master and live workers" if under_gunicorn else "the server process"
        yield CounterMetricFamily("process_cpu_seconds_total", f"User and system CPU time of {whole}, "
                                  "workers that have exited included.", value=cpu)
        yield GaugeMetricFamily("process_resident_memory_bytes", f"Resident memory of {whole}, summed.", value=rss)
        yield GaugeMetricFamily("process_virtual_memory_bytes", f"Virtual memory of {whole}, summed.", value=vms)
        yield GaugeMetricFamily("process_open_fds", f"Open file descriptors of {whole}, summed.", value=fds)
        yield GaugeMetricFamily("process_max_fds", "Open file descriptors each process may have.",
                                value=master.rlimit(psutil.RLIMIT_NOFILE)[0])
        yield GaugeMetricFamily("process_start_time_seconds", "When the server started, in seconds since the "
                                "epoch.", value=master.create_time())


def exposition():
    """(body, content type) of every metric, merged over all workers when running multi-process."""
    if MULTIPROC_DIR:
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry, path=MULTIPROC_DIR)
        registry.register(ServerProcesses())
        PlatformCollector(registry)  # python_info: the same in every worker
    else:
        registry = REGISTRY  # one process: prometheus-client's own process_*, python_* collectors
    return generate_latest(registry), CONTENT_TYPE_LATEST
