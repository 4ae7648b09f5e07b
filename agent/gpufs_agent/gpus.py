"""This machine's GPUs as report items: through NVML, else nvidia-smi, else none. A reading a GPU
cannot give is None (sent as null), except the four the server requires as numbers."""
import csv
import io
import logging
import os
import re
import shutil
import subprocess

import psutil

log = logging.getLogger("gpufs_agent")

# The column order parse_nvidia_smi_csv expects: the query is built from this list.
SMI_COLUMNS = ("index", "name", "temperature.gpu", "utilization.gpu", "memory.used", "memory.total", "power.draw",
               "uuid", "fan.speed", "clocks.sm", "clocks.mem", "power.limit", "ecc.errors.uncorrected.volatile.total")
SMI_FIELDS = ",".join(SMI_COLUMNS)
SMI_TIMEOUT = 10
MAX_PROCESSES = 64  # the server's limit per GPU; the ones using the most memory are kept
MAX_EVENTS = 1000  # per report: a GPU in an XID storm must not hold the report up
MB = 1024 * 1024

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
        return None
    return value if value == value else None


def _clamp(value, high):
    # Out-of-range readings happen (sensor glitches); the server rejects the whole report for one.
    return None if value is None else round(min(max(value, 0.0), high), 1)


def _count(value, high=2**31 - 1):
    return None if value is None else int(min(max(value, 0), high))


def gpu(index, name, temp, usage, mem_used_mb, mem_total_mb, power_w, uuid=None, fan_speed=None, sm_clock_mhz=None,
        mem_clock_mhz=None, power_limit=None, ecc_uncorrected=None, xid=None, processes=None):
    """One report item. temp, usage, mem_usage and power_usage are required numbers on the server, so
    an unknown one is 0 there; every other reading is None when unknown, never 0."""
    known_memory = mem_used_mb is not None and mem_total_mb
    return {"index": int(index), "name": name.strip()[:255],
            "temp": _clamp(temp, 150) or 0.0, "usage": _clamp(usage, 100) or 0.0,
            "mem_usage": _clamp(100.0 * mem_used_mb / mem_total_mb, 100) if known_memory else 0.0,
            "power_usage": _clamp(power_w, 10000) or 0.0,
            "uuid": (uuid.strip()[:64] or None) if uuid else None,
            "fan_speed": _count(fan_speed, 100), "sm_clock_mhz": _count(sm_clock_mhz),
            "mem_clock_mhz": _count(mem_clock_mhz), "mem_total_mb": _count(mem_total_mb),
            "mem_used_mb": _count(mem_used_mb), "power_limit": _clamp(power_limit, 10000),
            "ecc_uncorrected": _count(ecc_uncorrected, 2**63 - 1), "xid": _count(xid), "processes": processes}


def parse_nvidia_smi_csv(text):
    """GPUs from `nvidia-smi --query-gpu=<SMI_FIELDS> --format=csv,noheader,nounits` output."""
    gpus = []
    for row in csv.reader(io.StringIO(text), skipinitialspace=True):
        if len(row) != len(SMI_COLUMNS) or not row[0].strip().isdigit():
            continue
        v = dict(zip(SMI_COLUMNS, (c.strip() for c in row), strict=True))
        n = {k: _number(text) for k, text in v.items()}
        uuid = None if v["uuid"].startswith("[") else v["uuid"]
        gpus.append(gpu(v["index"], v["name"], n["temperature.gpu"], n["utilization.gpu"], n["memory.used"],
                        n["memory.total"], n["power.draw"], uuid=uuid, fan_speed=n["fan.speed"],
                        sm_clock_mhz=n["clocks.sm"], mem_clock_mhz=n["clocks.mem"], power_limit=n["power.limit"],
                        ecc_uncorrected=n["ecc.errors.uncorrected.volatile.total"]))
    return gpus


def process_owner(pid):
    """The user name owning `pid` (its uid when the name is unknown), None when the process is not visible."""
    try:
        return psutil.Process(pid).username()[:64]
    except (psutil.Error, KeyError, OSError):
        return None


class NvmlReader:
    """GPUs through NVML; raises at construction when the library or driver is not there. XID
    errors are watched through an event set, drained at each report."""

    source = "nvml"

    def __init__(self):
        import pynvml  # nvidia-ml-py: optional, absent on machines without NVIDIA GPUs
        self.nvml = pynvml
        pynvml.nvmlInit()
        self.events = self._watch_xid()

    def _get(self, call, *args, default=None):
        # One unsupported reading (fans on passive cards, ECC off, power under MIG) must not hide the GPU.
        try:
            return call(*args)
        except self.nvml.NVMLError:
            return default

    def _handles(self):
        n = self.nvml
        for i in range(self._get(n.nvmlDeviceGetCount, default=0)):
            handle = self._get(n.nvmlDeviceGetHandleByIndex, i)
            if handle is not None:
                yield i, handle

    def _watch_xid(self):
        n = self.nvml
        events = self._get(n.nvmlEventSetCreate)
        if events is None:
            return None
        for _, handle in self._handles():
            if self._get(n.nvmlDeviceGetSupportedEventTypes, handle, default=0) & n.nvmlEventTypeXidCriticalError:
                self._get(n.nvmlDeviceRegisterEvents, handle, n.nvmlEventTypeXidCriticalError, events)
        return events

    def xids(self):
        """{GPU index: the last XID error code} of the events waiting since the previous call."""
        n, last = self.nvml, {}
        if self.events is None:
            return last
        for _ in range(MAX_EVENTS):
            try:
                event = n.nvmlEventSetWait(self.events, 0)  # 0 ms: take what is queued, never wait
            except n.NVMLError:  # NVML_ERROR_TIMEOUT: nothing more is queued
                break
            if event.eventType & n.nvmlEventTypeXidCriticalError:
                index = self._get(n.nvmlDeviceGetIndex, event.device)
                if index is not None:
                    last[index] = event.eventData
        return last

    def processes(self, handle):
        n = self.nvml
        running = self._get(n.nvmlDeviceGetComputeRunningProcesses, handle)
        if running is None:
            return None
        running = sorted(running, key=lambda p: p.usedGpuMemory or 0, reverse=True)[:MAX_PROCESSES]
        items = []
        for p in running:
            name = _text(self._get(n.nvmlSystemGetProcessName, p.pid))
            item = {"pid": p.pid, "name": os.path.basename(name or "")[:255] or "unknown",
                    # None under Windows' WDDM, where the driver does not know a process's memory.
                    "used_memory_mb": None if p.usedGpuMemory is None else p.usedGpuMemory // MB}
            user = process_owner(p.pid)
            if user is not None:
                item["user"] = user
            items.append(item)
        return items

    def read(self):
        n, g = self.nvml, self._get
        xids = self.xids()
        gpus = []
        for i, handle in self._handles():
            util = g(n.nvmlDeviceGetUtilizationRates, handle)
            mem = g(n.nvmlDeviceGetMemoryInfo, handle)
            power = g(n.nvmlDeviceGetPowerUsage, handle)
            limit = g(n.nvmlDeviceGetEnforcedPowerLimit, handle)
            gpus.append(gpu(
                i, _text(g(n.nvmlDeviceGetName, handle)) or "unknown",
                g(n.nvmlDeviceGetTemperature, handle, n.NVML_TEMPERATURE_GPU), util.gpu if util else None,
                mem.used / MB if mem else None, mem.total / MB if mem else None,
                power / 1000.0 if power is not None else None,  # milliwatts
                uuid=_text(g(n.nvmlDeviceGetUUID, handle)), fan_speed=g(n.nvmlDeviceGetFanSpeed, handle),
                sm_clock_mhz=g(n.nvmlDeviceGetClockInfo, handle, n.NVML_CLOCK_SM),
                mem_clock_mhz=g(n.nvmlDeviceGetClockInfo, handle, n.NVML_CLOCK_MEM),
                power_limit=limit / 1000.0 if limit is not None else None,
                ecc_uncorrected=g(n.nvmlDeviceGetTotalEccErrors, handle, n.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
                                  n.NVML_VOLATILE_ECC),
                xid=xids.get(i), processes=self.processes(handle)))
        return gpus

    def close(self):
        if self.events is not None:
            self._get(self.nvml.nvmlEventSetFree, self.events)
        self._get(self.nvml.nvmlShutdown)


def _text(value):
    return value.decode(errors="replace") if isinstance(value, bytes) else value


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
        log.debug("NVML unavailable (%s)", type(err).__name__)
    binary = shutil.which(smi)
    return SmiReader(binary) if binary else NoGpus()
