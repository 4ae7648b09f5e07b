"""Prometheus metrics: one set per process, merged across gunicorn workers in /metrics.

Under gunicorn, deploy/gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR before any worker
imports this module: every worker then writes its samples to files in that directory and
the worker that answers /metrics adds them all up. Without the variable (tests, `flask run`,
a host app) the metrics live in the process's default registry.
"""
import os

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


def exposition():
    """(body, content type) of every metric, merged over all workers when running multi-process."""
    if MULTIPROC_DIR:
        registry = CollectorRegistry()
        _multiprocess.MultiProcessCollector(registry, path=MULTIPROC_DIR)
    else:
        registry = REGISTRY
    return generate_latest(registry), CONTENT_TYPE_LATEST
