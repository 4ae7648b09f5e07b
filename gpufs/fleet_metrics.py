"""GET /metrics/fleet: the fleet's latest readings as one Prometheus scrape target, in the names of
NVIDIA's dcgm-exporter (contract section 11), built from one query and rendered ahead of the scrapes."""
import contextlib
import logging
import threading
import time
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from .db import get_db, queries
from .ext import state

log = logging.getLogger("gpufs.fleet_metrics")
# A scope no scrape asked for this long is no longer rendered ahead: twice Prometheus's default
# scrape interval (1 m), so a scraped scope never drops out between two scrapes.
IDLE_SECONDS = 120
STALE = 3  # periods after which a kept body is no longer served

GPU_LABELS = ("gpu", "UUID", "modelName", "Hostname", "client_id", "user_id")
CLIENT_LABELS = ("client_id", "Hostname", "user_id")
INFO_LABELS = CLIENT_LABELS + ("client_status", "live_status", "valid_status", "os_type")

# (name, help, column): dcgm-exporter's own names and help texts, so its dashboards and rules apply.
GPU_FAMILIES = (
    ("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C).", "device_temp"),
    ("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", "device_gpuusage"),
    ("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", "device_powerusage"),
    ("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", "mem_free_mb"),
    ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", "mem_used_mb"),
    ("DCGM_FI_DEV_SM_CLOCK", "SM clock frequency (in MHz).", "sm_clock_mhz"),
    ("DCGM_FI_DEV_MEM_CLOCK", "Memory clock frequency (in MHz).", "mem_clock_mhz"),
    ("DCGM_FI_DEV_FAN_SPEED", "Fan speed (in %).", "fan_speed"),
    ("DCGM_FI_DEV_XID_ERRORS", "Value of the last XID error encountered.", "xid"),
)
ALERT_CONDITIONS = ("offline", "gpu_hot", "error_status", "disk_full")  # contract section 10
CLIENT_FAMILIES = (
    ("gpufs_client_health_percent", "Share of expected heartbeat buckets counted over the last 7 UTC days.",
     "health"),
    ("gpufs_client_cpu_usage_percent", "CPU usage of the latest report of a live client.", "cpu_usage"),
    ("gpufs_client_memory_usage_percent", "Memory usage of the latest report of a live client.", "mem_usage"),
    ("gpufs_client_disk_usage_percent", "Disk usage of the latest report of a live client.", "disk_usage"),
    ("gpufs_client_last_seen_timestamp_seconds", "When the server last received a report from the client.",
     "last_seen"),
)


class FleetCollector:
    """A prometheus_client collector whose every collect() runs `fetch()` (the fleet-metrics rows,
    ordered by client) and yields the families; the library writes the text and escapes labels."""

    def __init__(self, fetch):
        self.fetch = fetch

    def collect(self):
        gpu = [(GaugeMetricFamily(name, text, labels=GPU_LABELS), column) for name, text, column in GPU_FAMILIES]
        client = [(GaugeMetricFamily(name, text, labels=CLIENT_LABELS), column)
                  for name, text, column in CLIENT_FAMILIES]
        up = GaugeMetricFamily("gpufs_client_up", "1 when a report was received within ONLINE_WINDOW_SECONDS, "
                                                  "else 0 (and the client has no GPU samples).", labels=CLIENT_LABELS)
        info = GaugeMetricFamily("gpufs_client_info", "Registry facts of a client; the value is always 1.",
                                 labels=INFO_LABELS)
        alerts = GaugeMetricFamily("gpufs_alerts_firing", "Alerts firing now, per user and condition, over "
                                   "the user's valid clients.", labels=("condition", "user_id"))
        previous_user = None
        for row in self.fetch():  # one row per client
            labels = (row["client_id"].hex(), row["client_name"], str(row["user_id"]))
            if labels[2] != previous_user:  # a user's first row: its alerts, every condition, 0 included
                previous_user = labels[2]
                for condition in ALERT_CONDITIONS:
                    alerts.add_metric((condition, labels[2]), row[f"firing_{condition}"])
            up.add_metric(labels, 1 if row["live"] else 0)
            info.add_metric(labels + (row["client_status"], row["live_status"], row["valid_status"],
                                      row["os_type"]), 1)
            for family, column in client:
                if row[column] is not None:
                    family.add_metric(labels, row[column])
            for device in row["gpus"] or ():
                # One label dict (GPU_LABELS) shared by the GPU's nine samples; add_metric would build one each.
                gpu_labels = {"gpu": str(device["device_index"]), "UUID": device["uuid"],
                              "modelName": device["device_name"], "Hostname": labels[1], "client_id": labels[0],
                              "user_id": labels[2]}
                for family, column in gpu:
                    if device[column] is not None:  # null: no reading, so no sample rather than a made-up zero
                        family.add_sample(family.name, gpu_labels, device[column])
        yield from (family for family, _ in gpu)
        yield up
        yield from (family for family, _ in client)
        yield info
        yield alerts


class Scrapes:
    """The exposition per scope (a user_id, or None for every user), rendered ahead of its scrapes.

    A scope's first scrape renders its body on demand. From then on this process's thread renders it
    again every `seconds` for as long as it is scraped at least every IDLE_SECONDS, and a scrape is
    answered with the last body: dcgm-exporter's own model (it collects on a timer and serves its
    last collection), and reports arrive only once a minute anyway. prometheus-client formats a
    scrape of 1,000 machines of 8 GPUs in about a second, five times what a scrape may take
    (docs/decisions.md). A body older than STALE periods (the database was away, the thread fell
    behind) is not served: that scrape renders anew, so an outage shows as one. `seconds` 0: every
    scrape renders its own body, no thread. `clock` (monotonic seconds) is the tests' to set, and
    with `background` False no thread starts: the tests call refresh() themselves.

    Not in Redis: the cache's versions move with every stored report, which on a reporting fleet
    is every second, so a versioned value would nearly never be reused; a plain period is what a
    sampled figure needs. Scrapes of a new scope arriving together (several Prometheus replicas)
    wait for one render rather than each running it."""

    def __init__(self, seconds, render, context=contextlib.nullcontext, clock=time.monotonic, background=True):
        self.seconds = seconds
        self.render = render  # scope -> body
        self.context = context  # what a render in the thread runs inside (the app's context)
        self.clock = clock
        self.background = background
        self._kept = {}  # scope -> Kept
        self._locks = {}  # scope -> the lock its on-demand render holds
        self._lock = threading.Lock()
        self._thread = None
        self._stop = threading.Event()

    def get(self, scope):
        if not self.seconds:
            return self.render(scope)
        kept = self._kept.get(scope)
        if kept is None or self.clock() - kept.began >= STALE * self.seconds:
            with self._lock:
                if len(self._locks) > 1000:  # one entry per user scraped: bounded, never unbounded
                    self._kept.clear()
                    self._locks.clear()
                lock = self._locks.setdefault(scope, threading.Lock())
                self._start()
            with lock:
                kept = self._kept.get(scope)
                if kept is None or self.clock() - kept.began >= STALE * self.seconds:
                    kept = self._render(scope)
        kept.asked = self.clock()
        return kept.body

    def refresh(self):
        """Render every scope whose body is `seconds` old again, forget those no scrape asked for
        within IDLE_SECONDS; the seconds until the next is due. The thread calls it; tests too."""
        for scope, kept in list(self._kept.items()):
            if self.clock() - kept.asked > IDLE_SECONDS:
                self._kept.pop(scope, None)
            elif self.clock() - kept.began >= self.seconds:
                try:
                    with self.context():
                        self._render(scope, kept.asked)
                except Exception:  # the thread outlives a failed render; the kept body ages meanwhile
                    log.warning("fleet metrics of %s not rendered", scope or "every user", exc_info=True)
        due = [kept.began + self.seconds for kept in list(self._kept.values())]  # a scrape may add one meanwhile
        return max(0.0, min(due) - self.clock()) if due else self.seconds

    def _render(self, scope, asked=None):
        began = self.clock()
        kept = Kept(began, self.render(scope), asked if asked is not None else began)
        self._kept[scope] = kept
        return kept

    def _start(self):
        if self._thread is None and self.background:
            self._thread = threading.Thread(target=self._loop, name="gpufs-fleet-metrics", daemon=True)
            self._thread.start()

    def _loop(self):
        while not self._stop.wait(max(self.refresh(), 0.05)):
            pass

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)


@dataclass
class Kept:
    began: float  # when its render began: the data is as of then
    body: bytes
    asked: float  # when a scrape last asked for it


def exposition(app, user_id):
    """(body, content type) of the fleet of `user_id` (None: every user's)."""
    s = state(app)
    with _created:
        if s.fleet_scrapes is None:
            s.fleet_scrapes = Scrapes(float(s.config["FLEET_METRICS_CACHE_SECONDS"]), lambda scope: render(s, scope),
                                      context=app.app_context)
    return s.fleet_scrapes.get(user_id), CONTENT_TYPE_LATEST


_created = threading.Lock()


def render(s, user_id):
    """One scrape's body, from one query (the caller's app context gives the connection)."""
    registry = CollectorRegistry()
    registry.register(FleetCollector(lambda: queries.fleet_metrics(
        get_db(), user_id=user_id, now=s.clock(), window_seconds=int(s.config["ONLINE_WINDOW_SECONDS"]),
        interval=int(s.config["HEARTBEAT_INTERVAL_SECONDS"]))))
    return generate_latest(registry)
