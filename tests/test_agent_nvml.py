"""gpufs-agent's NVML source: nvidia-ml-py's own functions replaced by a recorded GPU table (no
GPU here), so the agent's code runs unchanged down to the pynvml calls and their NVMLErrors."""
import json
import os
import pwd
import urllib.request
import uuid
from types import SimpleNamespace

import pytest

from gpufs import schemas
from gpufs_agent import collect, gpus, send

pynvml = pytest.importorskip("pynvml")

GIB = 1024**3
NOT_A_PID = 2**22 + 1  # above Linux's largest pid_max: no such process


def h100(**over):
    return {"name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-1f8a3c6d-0e29-4b7a-95d4-c3e6f1a82b07", "temp": 43,
            "util": 97, "total": 81559 * 1024**2, "used": 40 * GIB, "power_mw": 612_840, "limit_mw": 700_000,
            "fan": None, "sm": 1980, "mem_clock": 2619, "ecc": 0, "xid_events": True, "procs": [], **over}


def rtx4090(**over):
    return {"name": "NVIDIA GeForce RTX 4090", "uuid": "GPU-5c3f8e2a-9b1d-4e7f-a2c6-0d8e4b1f7a93", "temp": 64,
            "util": 12, "total": 24564 * 1024**2, "used": 2 * GIB, "power_mw": 81_370, "limit_mw": 450_000,
            "fan": 41, "sm": 2520, "mem_clock": 10501, "ecc": None, "xid_events": False, "procs": [], **over}


class FakeNvml:
    """The GPUs behind pynvml: each reading a GPU lacks (None) raises NVMLError_NotSupported, as the driver does."""

    def __init__(self, monkeypatch, table, names=None):
        self.gpus = [SimpleNamespace(index=i, **g) for i, g in enumerate(table)]
        self.names = names or {}
        self.queue = []  # XID events waiting in the event set
        self.registered = []
        self.calls = []
        n = pynvml
        fns = {
            "nvmlInit": lambda: self.calls.append("init"),
            "nvmlShutdown": lambda: self.calls.append("shutdown"),
            "nvmlDeviceGetCount": lambda: len(self.gpus),
            "nvmlDeviceGetHandleByIndex": lambda i: self.gpus[i],
            "nvmlDeviceGetIndex": lambda h: h.index,
            "nvmlDeviceGetName": self.reading("name"),
            "nvmlDeviceGetUUID": self.reading("uuid"),
            "nvmlDeviceGetTemperature": lambda h, sensor: self.reading("temp")(h) if sensor ==
            n.NVML_TEMPERATURE_GPU else self.fail(n.NVML_ERROR_INVALID_ARGUMENT),
            "nvmlDeviceGetUtilizationRates": lambda h: SimpleNamespace(gpu=self.reading("util")(h), memory=0),
            "nvmlDeviceGetMemoryInfo": lambda h: SimpleNamespace(total=h.total, used=h.used, free=h.total - h.used),
            "nvmlDeviceGetPowerUsage": self.reading("power_mw"),
            "nvmlDeviceGetEnforcedPowerLimit": self.reading("limit_mw"),
            "nvmlDeviceGetFanSpeed": self.reading("fan"),
            "nvmlDeviceGetClockInfo": lambda h, clock: self.reading({n.NVML_CLOCK_SM: "sm",
                                                                     n.NVML_CLOCK_MEM: "mem_clock"}[clock])(h),
            "nvmlDeviceGetTotalEccErrors": self.ecc,
            "nvmlDeviceGetComputeRunningProcesses": lambda h: [SimpleNamespace(pid=pid, usedGpuMemory=used)
                                                               for pid, used in self.reading("procs")(h)],
            "nvmlSystemGetProcessName": lambda pid: self.names[pid] if pid in self.names else
            self.fail(n.NVML_ERROR_NOT_FOUND),
            "nvmlEventSetCreate": lambda: "event-set",
            "nvmlDeviceGetSupportedEventTypes": lambda h: n.nvmlEventTypeXidCriticalError if h.xid_events else 0,
            "nvmlDeviceRegisterEvents": lambda h, types, events: self.registered.append((h.index, types, events)),
            "nvmlEventSetWait": self.wait,
            "nvmlEventSetFree": lambda events: self.calls.append(f"free {events}"),
        }
        for name, fn in fns.items():
            assert callable(getattr(n, name)), name  # a real pynvml function is what gets replaced
            monkeypatch.setattr(n, name, fn)

    @staticmethod
    def fail(code):
        raise pynvml.NVMLError(code)

    def reading(self, attr):
        def read(handle):
            value = getattr(handle, attr)
            return self.fail(pynvml.NVML_ERROR_NOT_SUPPORTED) if value is None else value
        return read

    def ecc(self, handle, error_type, counter):
        assert (error_type, counter) == (pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, pynvml.NVML_VOLATILE_ECC)
        return self.reading("ecc")(handle)

    def xid(self, index, code):
        self.queue.append(SimpleNamespace(device=self.gpus[index], eventType=pynvml.nvmlEventTypeXidCriticalError,
                                          eventData=code))

    def wait(self, events, timeout_ms):
        assert (events, timeout_ms) == ("event-set", 0)  # drained, never waited on
        return self.queue.pop(0) if self.queue else self.fail(pynvml.NVML_ERROR_TIMEOUT)


def report(reader):
    body = json.loads(json.dumps(collect.Collector("ab" * 16, reader, read_net=dict, cpu_window=0).report()))
    schemas.Report().load(body)  # the server's own schema accepts it
    return body


def test_nvml_readings_become_report_fields(monkeypatch):
    me = os.getpid()
    FakeNvml(monkeypatch, [h100(procs=[(me, 30 * GIB), (NOT_A_PID, 10 * GIB)]), rtx4090()],
             names={me: "/usr/bin/python3", NOT_A_PID: "trainer"})
    reader = gpus.gpu_reader()
    assert reader.source == "nvml"
    big, small = report(reader)["devices"]
    assert big == {"index": 0, "name": "NVIDIA H100 80GB HBM3", "temp": 43.0, "usage": 97.0, "mem_usage": 50.2,
                   "power_usage": 612.8, "uuid": "GPU-1f8a3c6d-0e29-4b7a-95d4-c3e6f1a82b07", "fan_speed": None,
                   "sm_clock_mhz": 1980, "mem_clock_mhz": 2619, "mem_total_mb": 81559, "mem_used_mb": 40960,
                   "power_limit": 700.0, "ecc_uncorrected": 0, "xid": None,
                   "processes": [{"pid": me, "name": "python3", "user": pwd.getpwuid(os.getuid()).pw_name,
                                  "used_memory_mb": 30720},
                                 # No process to own it (another pid namespace): no user rather than a guess.
                                 {"pid": NOT_A_PID, "name": "trainer", "used_memory_mb": 10240}]}
    assert (small["fan_speed"], small["ecc_uncorrected"], small["processes"], small["power_limit"]) == (
        41, None, [], 450.0)


def test_nvml_readings_a_gpu_cannot_give_are_null(monkeypatch):
    bare = {k: None for k in ("uuid", "temp", "util", "power_mw", "limit_mw", "fan", "sm", "mem_clock", "ecc",
                              "procs")}
    FakeNvml(monkeypatch, [rtx4090(**bare)])
    (gpu,) = report(gpus.gpu_reader())["devices"]
    assert [gpu[k] for k in ("uuid", "fan_speed", "sm_clock_mhz", "mem_clock_mhz", "power_limit", "ecc_uncorrected",
                             "xid", "processes")] == [None] * 8
    assert (gpu["mem_total_mb"], gpu["mem_used_mb"]) == (24564, 2048)
    # The seed's four readings are numbers the server requires: an unknown one stays 0 there.
    assert (gpu["temp"], gpu["usage"], gpu["power_usage"]) == (0.0, 0.0, 0.0)


def test_nvml_processes_at_most_64_using_the_most_memory(monkeypatch):
    procs = [(NOT_A_PID + i, (i % 10 + 1) * 2**20 * 100 + i) for i in range(100)]
    FakeNvml(monkeypatch, [h100(procs=procs)])
    (gpu,) = report(gpus.gpu_reader())["devices"]
    kept = gpu["processes"]
    assert len(kept) == gpus.MAX_PROCESSES == 64
    assert [p["used_memory_mb"] for p in kept] == sorted((used // 2**20 for _, used in procs), reverse=True)[:64]
    assert {p["name"] for p in kept} == {"unknown"}  # NVML did not know the name either


def test_nvml_xid_is_the_last_since_the_previous_report_else_null(monkeypatch):
    nvml = FakeNvml(monkeypatch, [h100(), rtx4090(), h100(uuid="GPU-2")])
    reader = gpus.gpu_reader()
    # Only GPUs that can report XID errors are watched, each in the one event set.
    assert nvml.registered == [(0, pynvml.nvmlEventTypeXidCriticalError, "event-set"),
                               (2, pynvml.nvmlEventTypeXidCriticalError, "event-set")]
    nvml.xid(2, 13)
    nvml.xid(2, 79)
    assert [g["xid"] for g in report(reader)["devices"]] == [None, None, 79]
    assert [g["xid"] for g in report(reader)["devices"]] == [None, None, None]
    nvml.xid(0, 48)
    assert [g["xid"] for g in report(reader)["devices"]] == [48, None, None]


def test_nvml_close_frees_the_event_set_and_shuts_down(monkeypatch):
    nvml = FakeNvml(monkeypatch, [h100()])
    gpus.gpu_reader().close()
    assert nvml.calls == ["init", "free event-set", "shutdown"]


def test_nvml_failing_to_start_falls_back_to_nvidia_smi(monkeypatch, tmp_path):
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: FakeNvml.fail(pynvml.NVML_ERROR_DRIVER_NOT_LOADED))
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\nexit 0\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert gpus.gpu_reader().source == "nvidia-smi"


def test_nvml_readings_reach_the_server(server, monkeypatch, tmp_path):
    me = os.getpid()
    nvml = FakeNvml(monkeypatch, [h100(procs=[(me, 30 * GIB)])], names={me: "/usr/bin/python3"})
    user, client_id = f"nvml-{uuid.uuid4().hex[:12]}", uuid.uuid4().hex
    collector = collect.Collector(client_id, gpus.gpu_reader(), read_net=dict, cpu_window=0)
    nvml.xid(0, 79)
    delivery = send.Delivery(send.Transport(server, retries=0), send.Buffer(tmp_path / "buffer.jsonl"), client_id,
                             user=user, name="h100")
    assert delivery.send(collector.report()) is True
    with urllib.request.urlopen(f"{server}/api/user/client_device_detail?user_id={user}&client_id={client_id}",
                                timeout=10) as resp:
        (gpu,) = json.loads(resp.read())["data"]["device_info"]
    assert (gpu["uuid"], gpu["xid"], gpu["ecc_uncorrected"], gpu["fan_speed"], gpu["power_limit"]) == (
        "GPU-1f8a3c6d-0e29-4b7a-95d4-c3e6f1a82b07", 79, 0, None, 700.0)
    assert gpu["processes"] == [{"pid": me, "name": "python3", "user": pwd.getpwuid(os.getuid()).pw_name,
                                 "used_memory_mb": 30720}]
