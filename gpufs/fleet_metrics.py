"""GET /metrics/fleet: the fleet's latest readings as one Prometheus scrape target, in the names of
NVIDIA's dcgm-exporter (contract section 11), built per scrape from one query and kept a few seconds."""
import threading
import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from .db import get_db, queries
from .ext import state

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
    """The exposition per scope (a user_id, or None for every user), kept `seconds` in this process.

    Not in Redis: the cache's versions move with every stored report, which on a reporting fleet
    is every second, so a versioned value would nearly never be reused; a plain time limit is what
    a sampled figure needs. Scrapes of one scope arriving together (several Prometheus replicas)
    wait for one query rather than each running it."""

    def __init__(self, seconds):
        self.seconds = seconds
        self._bodies = {}  # scope -> (valid until, body)
        self._locks = {}  # scope -> the lock its producer holds
        self._lock = threading.Lock()

    def _kept(self, scope):
        kept = self._bodies.get(scope)
        return kept[1] if kept is not None and kept[0] > time.monotonic() else None

    def get(self, scope, produce):
        body = self._kept(scope)
        if body is not None:
            return body
        with self._lock:
            if len(self._locks) > 1000:  # one entry per user scraped: bounded, never unbounded
                self._bodies.clear()
                self._locks.clear()
            lock = self._locks.setdefault(scope, threading.Lock())
        with lock:
            body = self._kept(scope)
            if body is None:
                body = produce()
                self._bodies[scope] = (time.monotonic() + self.seconds, body)
        return body


def exposition(app, user_id):
    """(body, content type) of the fleet of `user_id` (None: every user's)."""
    s = state(app)
    scrapes = app.extensions.setdefault("gpufs_fleet_metrics", Scrapes(float(s.config["FLEET_METRICS_CACHE_SECONDS"])))

    def produce():
        registry = CollectorRegistry()
        registry.register(FleetCollector(lambda: queries.fleet_metrics(
            get_db(), user_id=user_id, now=s.clock(), window_seconds=int(s.config["ONLINE_WINDOW_SECONDS"]),
            interval=int(s.config["HEARTBEAT_INTERVAL_SECONDS"]))))
        return generate_latest(registry)

    return scrapes.get(user_id, produce), CONTENT_TYPE_LATEST
