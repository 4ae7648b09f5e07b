"""What a report holds: this machine's CPU, memory, root disk and network (psutil) and its GPUs
(NVML, else nvidia-smi, else none), shaped as the server's heartbeat body."""
import csv
import io
import json
import logging
import os
import re
import shutil
import subprocess
import time
from datetime import datetime, timezone

import psutil

log = logging.getLogger("gpufs_agent")

SMI_FIELDS = "index,name,temperature.gpu,utilization.gpu,memory.used,memory.total,power.draw"
SMI_TIMEOUT = 10
# cpu_percent compares against the previous call; a window shorter than this (the first report of
# a --once run) says more about the agent starting than about the machine.
MIN_CPU_WINDOW = 0.5

# FP32 (non-tensor) peak TFLOPS at boost clock, from NVIDIA's published datasheets and GeForce
# product spec pages. First match wins, so variants come before the family. Laptop parts share
# desktop names but not their clocks, so they are left unknown (0) rather than overstated.
FP32_TFLOPS = [(re.compile(p), v) for p, v in (
    (r"h100.*pcie", 51.0), (r"h100.*nvl", 60.0), (r"h100", 67.0),
    (r"h200.*nvl", 60.0), (r"h200", 67.0),
    (r"a100", 19.5), (r"\ba40\b", 37.4), (r"\ba30\b", 10.3), (r"\ba10\b", 31.2), (r"\ba2\b", 4.5),
    (r"l40s", 91.6), (r"\bl40\b", 90.5), (r"\bl4\b", 30.3),
    (r"\bt4\b", 8.1), (r"v100s", 16.4), (r"v100.*pcie", 14.0), (r"v100", 15.7),
    (r"rtx 6000 ada", 91.1), (r"rtx a6000", 38.7), (r"rtx a5000", 27.8), (r"rtx a4000", 19.2),
    (r"rtx 4090 d\b", 73.5), (r"rtx 4090", 82.6), (r"rtx 4080 super", 52.2), (r"rtx 4080", 48.7),
    (r"rtx 3090 ti", 40.0), (r"rtx 3090", 35.6), (r"rtx 3080 ti", 34.1), (r"rtx 3080", 29.8),
)]
NOT_DESKTOP = re.compile(r"laptop|mobile|max-q")


def fp32_tflops(name):
    """Peak FP32 TFLOPS of a GPU model by its reported name, 0 when the model is not in the table."""
    name = " ".join(name.lower().split())
    if NOT_DESKTOP.search(name):
        return 0.0
    return next((value for pattern, value in FP32_TFLOPS if pattern.search(name)), 0.0)


def _number(text):
    # nvidia-smi writes "[N/A]", "[Not Supported]", "[Unknown Error]"... for values a GPU cannot give.
    try:
        value = float(text)
    except (TypeError, ValueError):
        return 0.0
    return value if value == value else 0.0


def _clamp(value, high):
    # Out-of-range readings happen (sensor glitches); the server rejects the whole report for one.
    return round(min(max(value, 0.0), high), 1)


def gpu(index, name, temp, usage, mem_used_mb, mem_total_mb, power_w):
    mem_usage = 100.0 * mem_used_mb / mem_total_mb if mem_total_mb > 0 else 0.0
    return {"index": int(index), "name": name.strip()[:255], "temp": _clamp(temp, 150), "usage": _clamp(usage, 100),
            "mem_usage": _clamp(mem_usage, 100), "power_usage": _clamp(power_w, 10000),
            "memory_total_mb": max(int(mem_total_mb), 0)}


def parse_nvidia_smi_csv(text):
    """GPUs from `nvidia-smi --query-gpu=<SMI_FIELDS> --format=csv,noheader,nounits` output."""
    gpus = []
    for row in csv.reader(io.StringIO(text), skipinitialspace=True):
        if len(row) != 7 or not row[0].strip().isdigit():
            continue
        index, name, temp, usage, used, total, power = (c.strip() for c in row)
        gpus.append(gpu(index, name, _number(temp), _number(usage), _number(used), _number(total), _number(power)))
    return gpus


class NvmlReader:
    """GPUs through NVML; raises at construction when the library or driver is not there."""

    source = "nvml"

    def __init__(self):
        import pynvml  # nvidia-ml-py: optional, absent on machines without NVIDIA GPUs
        self.nvml = pynvml
        pynvml.nvmlInit()

    def _get(self, call, *args, default=0):
        # One unsupported reading (power on some boards, temperature under MIG) must not hide the GPU.
        try:
            return call(*args)
        except self.nvml.NVMLError:
            return default

    def read(self):
        n = self.nvml
        gpus = []
        for i in range(self._get(n.nvmlDeviceGetCount)):
            handle = self._get(n.nvmlDeviceGetHandleByIndex, i, default=None)
            if handle is None:
                continue
            name = self._get(n.nvmlDeviceGetName, handle, default="")
            name = name.decode() if isinstance(name, bytes) else name
            util = self._get(n.nvmlDeviceGetUtilizationRates, handle, default=None)
            mem = self._get(n.nvmlDeviceGetMemoryInfo, handle, default=None)
            mb = 1024 * 1024
            gpus.append(gpu(i, name or "unknown", self._get(n.nvmlDeviceGetTemperature, handle, n.NVML_TEMPERATURE_GPU),
                            util.gpu if util else 0, mem.used / mb if mem else 0, mem.total / mb if mem else 0,
                            self._get(n.nvmlDeviceGetPowerUsage, handle) / 1000.0))
        return gpus

    def close(self):
        self._get(self.nvml.nvmlShutdown)


class SmiReader:
    source = "nvidia-smi"

    def __init__(self, binary):
        self.cmd = [binary, f"--query-gpu={SMI_FIELDS}", "--format=csv,noheader,nounits"]

    def read(self):
        try:
            out = subprocess.run(self.cmd, capture_output=True, text=True, timeout=SMI_TIMEOUT, check=True).stdout
        except (OSError, subprocess.SubprocessError) as err:
            log.warning("nvidia-smi failed, reporting no GPUs this time: %s", err)
            return []
        return parse_nvidia_smi_csv(out)

    def close(self):
        pass


class NoGpus:
    source = "none"

    def read(self):
        return []

    def close(self):
        pass


def gpu_reader(smi="nvidia-smi"):
    """The best GPU source this machine has: NVML, else nvidia-smi on PATH, else none."""
    try:
        return NvmlReader()
    except Exception as err:  # ImportError, or any NVMLError (no driver, no library, no permission)
        log.debug("NVML unavailable (%s: %s)", type(err).__name__, err)
    binary = shutil.which(smi)
    return SmiReader(binary) if binary else NoGpus()


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
            "device_memsize": sum(g["memory_total_mb"] for g in gpus),
            "total_tflops": round(sum(fp32_tflops(g["name"]) for g in gpus), 1),
            "devices": [{k: v for k, v in g.items() if k != "memory_total_mb"} for g in gpus],
        }
