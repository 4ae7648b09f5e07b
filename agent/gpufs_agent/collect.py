"""What a report holds: this machine's CPU, memory, root disk and network (psutil) and its GPUs
(gpus.py), shaped as the server's heartbeat body."""
import json
import os
import re
import time
from datetime import datetime, timezone

import psutil

from .gpus import NoGpus, fp32_tflops

# cpu_percent compares against the previous call; a window shorter than this (the first report of
# a --once run) says more about the agent starting than about the machine.
MIN_CPU_WINDOW = 0.5


def _clamp(value, high):
    return round(min(max(value, 0.0), high), 1)


def _is_loopback(nic):
    return re.fullmatch(r"lo\d*", nic) is not None or nic.lower().startswith("loopback")


def net_delta(previous, current):
    """Bytes (received, sent) between two {nic: [rx, tx]} readings, never negative.

    A counter that went backwards was reset (driver reload, interface re-created) and counts from
    zero; an interface new since `previous` counts in full, since it appeared after that reading."""
    rx = tx = 0
    for nic, (now_rx, now_tx) in current.items():
        old_rx, old_tx = previous.get(nic, (0, 0))
        rx += now_rx - old_rx if now_rx >= old_rx else now_rx
        tx += now_tx - old_tx if now_tx >= old_tx else now_tx
    return rx, tx


def read_net():
    return {nic: [c.bytes_recv, c.bytes_sent] for nic, c in psutil.net_io_counters(pernic=True).items()
            if not _is_loopback(nic)}


class Collector:
    """Builds reports; keeps the previous network reading in `net_state` (a file) so that bytes are
    counted since the previous report even across agent restarts, and reboots are recognised."""

    def __init__(self, client_id, gpus=None, net_state=None, clock=None, read_net=read_net, persist=True,
                 cpu_window=MIN_CPU_WINDOW):
        self.client_id = client_id
        self.cpu_window = cpu_window
        self.gpus = gpus or NoGpus()
        self.net_state = net_state
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.read_net = read_net
        self.persist = persist
        self.previous = self._load_net()
        psutil.cpu_percent(interval=None)
        self.cpu_since = time.monotonic()

    def _load_net(self):
        if not self.net_state:
            return None
        try:
            with open(self.net_state) as f:
                saved = json.load(f)
        except (OSError, ValueError):
            return None
        if saved.get("boot_time") != psutil.boot_time():
            return {}  # every counter restarted at boot, after the saved reading
        return saved.get("counters")

    def _save_net(self, counters):
        if not (self.net_state and self.persist):
            return
        tmp = f"{self.net_state}.tmp"
        with open(tmp, "w") as f:
            json.dump({"boot_time": psutil.boot_time(), "counters": counters}, f)
        os.replace(tmp, self.net_state)

    def _cpu(self):
        waited = time.monotonic() - self.cpu_since
        value = psutil.cpu_percent(interval=self.cpu_window - waited if waited < self.cpu_window else None)
        self.cpu_since = time.monotonic()
        return value

    def network(self):
        counters = self.read_net()
        # No earlier reading at all: the counters hold traffic since boot, not since a report.
        rx, tx = (0, 0) if self.previous is None else net_delta(self.previous, counters)
        self.previous = counters
        self._save_net(counters)
        return rx, tx

    def report(self):
        rx, tx = self.network()
        gpus = self.gpus.read()
        return {
            "client_id": self.client_id,
            "timestamp": self.clock().astimezone(timezone.utc).isoformat(timespec="microseconds")
                             .replace("+00:00", "Z"),
            "system": {"cpu_usage": _clamp(self._cpu(), 100),
                       "memory_usage": _clamp(psutil.virtual_memory().percent, 100),
                       "disk_usage": _clamp(psutil.disk_usage(os.path.abspath(os.sep)).percent, 100),
                       "network_rx": rx, "network_tx": tx},
            "device_memsize": sum(g["mem_total_mb"] or 0 for g in gpus),
            "total_tflops": round(sum(fp32_tflops(g["name"]) for g in gpus), 1),
            "devices": gpus,
        }
