"""gpufs-agent: collection on this machine, nvidia-smi parsing from recorded-format samples, the
on-disk buffer, and delivery to the real gunicorn server (never a stand-in for it)."""
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import threading
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psutil
import pytest

from gpufs import schemas
from gpufs_agent import cli, collect, gpus, send
from gpufs_agent.cli import EXIT_LOCKED, EXIT_STOPPED, EXIT_UNDELIVERED, main

from .conftest import ROOT, free_port

SAMPLES = Path(__file__).parent / "data" / "nvidia-smi"


def sample(name):
    return (SAMPLES / name).read_text()


def get(base, path):
    with urllib.request.urlopen(base + path, timeout=10) as resp:
        return json.loads(resp.read())["data"]


def post(base, path, body):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def new_user():
    return "agent-" + uuid.uuid4().hex[:12]


def dead_server():
    return f"http://127.0.0.1:{free_port()}"  # bound and released: nothing listens there


def agent_args(server, state, *extra):
    return ["--server", server, "--state-dir", str(state), "--retries", "1", "--backoff", "0.001",
            "--timeout", "5", *extra]


def quick_collector(*args, **kwargs):
    """A collector that does not spend half a second measuring CPU for each report."""
    return collect.Collector(*args, cpu_window=0, **kwargs)


class SampleGpus:
    """A GPU source reading a recorded nvidia-smi output, for machines that have no GPU."""

    source = "sample"

    def __init__(self, name):
        self.text = sample(name)

    def read(self):
        return gpus.parse_nvidia_smi_csv(self.text)

    def close(self):
        pass


# ---- nvidia-smi output -----------------------------------------------------------------------

# The optional GPU readings of a report item (contract section 8), beside the seed's six.
READINGS = ("uuid", "fan_speed", "sm_clock_mhz", "mem_clock_mhz", "mem_total_mb", "mem_used_mb", "power_limit",
            "ecc_uncorrected", "xid", "processes")
DEVICE_FIELDS = {"index", "name", "temp", "usage", "mem_usage", "power_usage", *READINGS}


@pytest.mark.parametrize(("name", "count", "memsize", "tflops"), [
    ("rtx4090-x2.csv", 2, 2 * 24564, 165.2),
    ("a100-sxm4-80gb-x4.csv", 4, 4 * 81920, 78.0),
    ("h100-sxm-x8.csv", 8, 8 * 81559, 536.0),
    ("t4.csv", 1, 15360, 8.1),
    ("gtx1650-power-na.csv", 1, 4096, 0.0),
    ("a100-pcie-mig-util-na.csv", 1, 81920, 19.5),
    ("rtx3060-laptop-not-supported.csv", 1, 6144, 0.0),
    ("k80-unknown-error.csv", 2, 2 * 11441, 0.0),
])
def test_nvidia_smi_samples_parse_into_valid_reports(name, count, memsize, tflops):
    parsed = gpus.parse_nvidia_smi_csv(sample(name))
    assert [g["index"] for g in parsed] == list(range(count))
    report = quick_collector("ab" * 16, SampleGpus(name), read_net=dict).report()
    assert report["device_memsize"] == memsize
    assert report["total_tflops"] == pytest.approx(tflops)
    assert all(set(d) == DEVICE_FIELDS for d in report["devices"])
    schemas.Report().load(report)  # the server's own schema accepts it


def test_nvidia_smi_readings_become_report_fields():
    busy, idle = gpus.parse_nvidia_smi_csv(sample("rtx4090-x2.csv"))
    assert busy == {"index": 0, "name": "NVIDIA GeForce RTX 4090", "temp": 64.0, "usage": 97.0,
                    "mem_usage": 89.0, "power_usage": 412.4, "uuid": "GPU-5c3f8e2a-9b1d-4e7f-a2c6-0d8e4b1f7a93",
                    "fan_speed": 68, "sm_clock_mhz": 2730, "mem_clock_mhz": 10501, "mem_total_mb": 24564,
                    "mem_used_mb": 21874, "power_limit": 450.0, "ecc_uncorrected": None, "xid": None,
                    "processes": None}
    assert (idle["usage"], idle["mem_usage"], idle["power_usage"], idle["sm_clock_mhz"]) == (0.0, 0.0, 18.9, 210)
    *_, worn = gpus.parse_nvidia_smi_csv(sample("a100-sxm4-80gb-x4.csv"))
    assert (worn["ecc_uncorrected"], worn["fan_speed"], worn["power_limit"]) == (2, None, 400.0)


def test_nvidia_smi_readings_a_gpu_cannot_give_are_null():
    (gtx,) = gpus.parse_nvidia_smi_csv(sample("gtx1650-power-na.csv"))
    assert (gtx["power_limit"], gtx["ecc_uncorrected"], gtx["fan_speed"]) == (None, None, 35)
    (laptop,) = gpus.parse_nvidia_smi_csv(sample("rtx3060-laptop-not-supported.csv"))
    assert (laptop["fan_speed"], laptop["power_limit"], laptop["ecc_uncorrected"]) == (None, None, None)
    unknown, healthy = gpus.parse_nvidia_smi_csv(sample("k80-unknown-error.csv"))
    assert [unknown[k] for k in READINGS] == [None, None, None, None, 11441, 0, 149.0, None, None, None]
    assert healthy["uuid"] == "GPU-6b1e3d95-c0f4-4ab2-8e73-9d5a2f06c1e8" and healthy["ecc_uncorrected"] == 0
    # The seed's four readings are numbers the server requires: an unknown one stays 0 there.
    assert (gtx["power_usage"], gtx["temp"], gtx["usage"]) == (0.0, 47.0, 4.0)
    (mig,) = gpus.parse_nvidia_smi_csv(sample("a100-pcie-mig-util-na.csv"))
    assert mig["usage"] == 0.0 and mig["power_usage"] == 48.2
    assert (unknown["temp"], unknown["power_usage"]) == (0.0, 0.0)
    sent = json.loads(json.dumps(quick_collector("ab" * 16, SampleGpus("k80-unknown-error.csv"),
                                                 read_net=dict).report()))
    assert sent["devices"][0]["fan_speed"] is None and sent["devices"][0]["uuid"] is None


def test_nvidia_smi_noise_and_out_of_range_readings():
    text = ("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n\n"
            "0, NVIDIA L4, 212, 140, 30000, 23034, 99999, GPU-x, 140, -5, 6251, 72.00, nan\n"
            "0, NVIDIA L4, 40, 10, 300, 23034, 20.1\n")  # the columns of an older query: not ours
    (gpu,) = gpus.parse_nvidia_smi_csv(text)
    # Clamped to the contract's bounds: one bad sensor must not get the whole report rejected.
    assert (gpu["temp"], gpu["usage"], gpu["mem_usage"], gpu["power_usage"]) == (150.0, 100.0, 100.0, 10000.0)
    assert (gpu["fan_speed"], gpu["sm_clock_mhz"], gpu["ecc_uncorrected"]) == (100, 0, None)
    assert gpus.parse_nvidia_smi_csv("") == []


@pytest.mark.parametrize(("name", "tflops"), [
    ("NVIDIA H100 PCIe", 51.0), ("NVIDIA H100 80GB HBM3", 67.0), ("NVIDIA A100 80GB PCIe", 19.5),
    ("Tesla V100-PCIE-32GB", 14.0), ("Tesla V100-SXM2-16GB", 15.7), ("NVIDIA A10", 31.2), ("NVIDIA L40S", 91.6),
    ("NVIDIA L4", 30.3), ("NVIDIA GeForce RTX 4090 Laptop GPU", 0.0), ("NVIDIA A10G", 0.0), ("Radeon", 0.0),
])
def test_fp32_tflops_table(name, tflops):
    assert gpus.fp32_tflops(name) == tflops


# ---- GPU sources -----------------------------------------------------------------------------

def fake_nvidia_smi(bindir, csv_name):
    """An nvidia-smi that prints a recorded sample, and only for the exact query the agent must send."""
    bindir.mkdir(exist_ok=True)
    script = bindir / "nvidia-smi"
    script.write_text(f'#!/bin/sh\n[ "$1" = "--query-gpu={gpus.SMI_FIELDS}" ] && '
                      f'[ "$2" = "--format=csv,noheader,nounits" ] || exit 9\n'
                      f'{shutil.which("cat")} "{SAMPLES / csv_name}"\n')
    script.chmod(0o755)


def test_nvml_absent_falls_back_to_nvidia_smi(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml now raises ImportError
    fake_nvidia_smi(tmp_path / "bin", "t4.csv")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    reader = gpus.gpu_reader()
    assert reader.source == "nvidia-smi"
    assert [g["name"] for g in reader.read()] == ["Tesla T4"]


def test_no_nvml_and_no_nvidia_smi_reports_no_gpus(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setenv("PATH", str(tmp_path))
    reader = gpus.gpu_reader()
    assert reader.source == "none"
    report = quick_collector("ab" * 16, reader, read_net=dict).report()
    assert (report["devices"], report["device_memsize"], report["total_tflops"]) == ([], 0, 0)
    schemas.Report().load(report)


def test_nvml_installed_without_driver_falls_back(monkeypatch, tmp_path):
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pynvml.nvmlShutdown()
        pytest.skip("this machine has a working NVIDIA driver")
    fake_nvidia_smi(tmp_path / "bin", "rtx4090-x2.csv")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert gpus.gpu_reader().source == "nvidia-smi"


def test_broken_nvidia_smi_gives_no_gpus_this_time(tmp_path, caplog):
    script = tmp_path / "nvidia-smi"
    script.write_text("#!/bin/sh\necho 'Failed to initialize NVML: Driver/library version mismatch'\nexit 18\n")
    script.chmod(0o755)
    assert gpus.SmiReader(str(script)).read() == []
    assert "nvidia-smi failed" in caplog.text


# ---- network counters ------------------------------------------------------------------------

def test_net_delta_counter_reset_never_negative():
    before = {"eth0": [5_000_000, 900_000], "ib0": [10, 10], "gone0": [7, 7]}
    after = {"eth0": [1_200, 300], "ib0": [110, 60], "new0": [40, 2]}
    # eth0 was reset (counts from zero), ib0 grew, gone0 vanished, new0 appeared since.
    assert collect.net_delta(before, after) == (1_200 + 100 + 40, 300 + 50 + 2)
    assert collect.net_delta({}, {}) == (0, 0)


def test_collector_network_since_previous_report_across_resets_and_restarts(tmp_path):
    readings = iter([{"eth0": [1000, 100]}, {"eth0": [4000, 700]}, {"eth0": [50, 5]}, {"eth0": [80, 9]}])
    state = tmp_path / "net.json"
    first = quick_collector("ab" * 16, net_state=state, read_net=lambda: next(readings))
    sent = [first.report()["system"], first.report()["system"], first.report()["system"]]
    assert [(s["network_rx"], s["network_tx"]) for s in sent] == [(0, 0), (3000, 600), (50, 5)]
    # A restarted agent counts from the saved reading, not from boot.
    again = quick_collector("ab" * 16, net_state=state, read_net=lambda: next(readings)).report()["system"]
    assert (again["network_rx"], again["network_tx"]) == (30, 4)


def test_collector_after_reboot_counts_since_boot(tmp_path):
    state = tmp_path / "net.json"
    state.write_text(json.dumps({"boot_time": psutil.boot_time() - 3600, "counters": {"eth0": [10**9, 10**9]}}))
    system = quick_collector("ab" * 16, net_state=state, read_net=lambda: {"eth0": [2048, 1024]}).report()["system"]
    assert (system["network_rx"], system["network_tx"]) == (2048, 1024)


def test_loopback_is_not_network_traffic():
    assert collect._is_loopback("lo") and collect._is_loopback("lo0")
    assert not collect._is_loopback("eth0") and not collect._is_loopback("lxcbr0")
    assert "lo" not in collect.read_net()


# ---- buffer, transport, flags ----------------------------------------------------------------

def test_buffer_keeps_newest_and_survives_restart(tmp_path, caplog):
    path = tmp_path / "buffer.jsonl"
    buf = send.Buffer(path, limit=3)
    for i in range(5):
        buf.add({"timestamp": f"t{i}"})
    assert [r["timestamp"] for r in buf.reports] == ["t2", "t3", "t4"]
    assert "dropped the oldest" in caplog.text
    with open(path, "a") as f:
        f.write('{"timestamp": "t5", "cut sh')  # a crash mid-write
    assert [r["timestamp"] for r in send.Buffer(path, limit=3).reports] == ["t2", "t3", "t4"]
    buf.drop_first(2)
    assert [r["timestamp"] for r in send.Buffer(path, limit=3).reports] == ["t4"]


def test_transport_retries_with_growing_jittered_backoff():
    delays = []
    transport = send.Transport(dead_server(), timeout=2, retries=4, backoff=0.5, backoff_max=3, sleep=delays.append)
    assert transport.post(send.HEARTBEAT, {}) is None
    assert len(delays) == 4
    assert all(0 <= d <= cap for d, cap in zip(delays, [0.5, 1, 2, 3], strict=True))


def test_flags_fall_back_to_environment(tmp_path):
    env = {"GPUFS_SERVER": "http://gpufs.example:80", "GPUFS_CLIENT_ID": "AB" * 16, "GPUFS_INTERVAL": "15",
           "GPUFS_USER": "u1", "GPUFS_TOKEN": "k", "GPUFS_ONCE": "true", "XDG_STATE_HOME": str(tmp_path)}
    args = cli.build_parser(env).parse_args([])
    assert (args.server, args.client_id, args.interval, args.user, args.token, args.once) == (
        "http://gpufs.example:80", "ab" * 16, 15.0, "u1", "k", True)
    assert args.state_dir == str(tmp_path / "gpufs-agent") and not args.dry_run
    assert cli.build_parser(env).parse_args(["--interval", "5"]).interval == 5.0
    assert cli.build_parser({"HOME": "/home/x"}).parse_args([]).state_dir.endswith(".local/state/gpufs-agent")
    with pytest.raises(SystemExit):
        cli.build_parser({}).parse_args(["--client-id", "not-hex"])


def test_client_id_generated_once_and_kept(tmp_path):
    first = cli.stable_client_id(tmp_path)
    assert len(first) == 32 and cli.stable_client_id(tmp_path) == first


def test_dry_run_prints_a_report_and_sends_nothing(tmp_path):
    out = subprocess.run([sys.executable, "-m", "gpufs_agent", "--once", "--dry-run", "--server", dead_server(),
                          "--state-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    schemas.Report().load(report)
    assert report["client_id"] == (tmp_path / "client_id").read_text().strip()
    assert not (tmp_path / "buffer.jsonl").exists() and not (tmp_path / "net.json").exists()


def test_second_agent_on_same_state_is_refused(tmp_path):
    with cli.state_lock(tmp_path) as locked:
        assert locked
        assert main(agent_args(dead_server(), tmp_path, "--once")) == EXIT_LOCKED


def test_loop_mode_stops_on_signal_event(tmp_path):
    stop = threading.Event()
    stop.set()  # as SIGTERM would: the loop ends after the report in hand
    assert main(agent_args(dead_server(), tmp_path, "--interval", "3600"), stop=stop) == 0
    assert len(send.Buffer(tmp_path / "buffer.jsonl").reports) == 1


# ---- against the real server ----------------------------------------------------------------

def health(server, user):
    return get(server, f"/api/user/client_health?user_id={user}")


def test_once_registers_and_reports_this_machines_figures(server, tmp_path):
    user = new_user()
    assert main(agent_args(server, tmp_path, "--user", user, "--name", "agent-test-box", "--once")) == 0
    memory, disk = psutil.virtual_memory().percent, psutil.disk_usage("/").percent

    (client,) = get(server, f"/api/user/client_list?user_id={user}")["devices"]
    client_id = (tmp_path / "client_id").read_text().strip()
    assert (client["client_id"], client["client_name"]) == (client_id, "agent-test-box")
    assert client["os_type"] == platform.system()
    system = get(server, f"/api/user/client_device_detail?user_id={user}&client_id={client_id}")["system_info"]
    assert abs(system["memory_usage"] - memory) <= 10
    assert abs(system["storage_usage"] - disk) <= 2
    # CPU is an instant figure that no second reading can reproduce on a busy machine: check it
    # is a percentage and that the stored report carries the same figure as the snapshot.
    (row,) = health(server, user)
    assert 0 <= system["cpu_usage"] <= 100 and row["cpu_usage"] == system["cpu_usage"]


def counted(server, user):
    """(health, counted heartbeats) of the user's one client."""
    (client,) = get(server, f"/api/user/client_list?user_id={user}")["devices"]
    monitor = get(server, f"/api/user/client_monitor?user_id={user}")
    return client["health"], sum(r["total_heartbeats"] or 0 for r in monitor)


def test_first_report_of_a_machine_the_agent_registers_counts(server, tmp_path):
    # The report is measured, refused as unknown (404), then the client is registered: the report
    # must still count, or health shows 0 and the next report, in the same bucket, cannot count either.
    user = new_user()
    assert main(agent_args(server, tmp_path, "--user", user, "--once")) == 0
    assert counted(server, user) == (100, 1)


def test_first_report_counts_with_the_agent_clock_behind_the_servers(server, tmp_path):
    user, client_id = new_user(), uuid.uuid4().hex
    late = quick_collector(client_id, read_net=dict, clock=lambda: datetime.now(timezone.utc) - timedelta(seconds=90))
    delivery = send.Delivery(send.Transport(server, retries=0), send.Buffer(tmp_path / "buffer.jsonl"), client_id,
                             user=user, name="slow-clock")
    assert delivery.send(late.report()) is True
    assert counted(server, user) == (100, 1)


def test_server_down_buffers_then_backfills_with_original_timestamps(server, tmp_path):
    user, client_id = new_user(), uuid.uuid4().hex
    now = datetime.now(timezone.utc).replace(microsecond=0)
    # Two minutes apart: each report falls in a bucket of its own, so each must be counted once.
    clock = iter(now - timedelta(minutes=m) for m in (10, 8, 6))
    counters = iter({"eth0": [1000 * k, 100 * k]} for k in (1, 2, 4))
    collector = quick_collector(client_id, net_state=tmp_path / "net.json", clock=lambda: next(clock),
                                  read_net=lambda: next(counters))
    buffer = send.Buffer(tmp_path / "buffer.jsonl")
    down = send.Delivery(send.Transport(dead_server(), timeout=2, retries=1, backoff=0.001), buffer, client_id,
                         user=user, name="backfill")
    assert [down.send(collector.report()) for _ in range(3)] == [False, False, False]
    originals = send.Buffer(tmp_path / "buffer.jsonl").reports
    buffered = [r["timestamp"] for r in originals]
    assert buffered == [(now - timedelta(minutes=m)).isoformat().replace("+00:00", ".000000Z") for m in (10, 8, 6)]

    # The same state, now pointed at the server: the live report registers, then the backlog follows.
    assert main(agent_args(server, tmp_path, "--user", user, "--client-id", client_id, "--once")) == 0
    assert not send.Buffer(tmp_path / "buffer.jsonl").reports
    rows = health(server, user)
    got = sorted(r["timestamp"] for r in rows)
    assert got[:3] == buffered and len(got) == 4
    by_time = {r["timestamp"]: (r["network_down"], r["network_up"]) for r in rows}
    assert [by_time[t] for t in buffered] == [(0, 0), (1000, 100), (2000, 200)]
    monitor = get(server, f"/api/user/client_monitor?user_id={user}")
    assert sum(r["total_heartbeats"] or 0 for r in monitor) == 4

    # An acknowledgement lost on the way back makes the agent send the backlog again: stored once.
    again = send.Buffer(tmp_path / "buffer.jsonl")
    for report in originals:
        again.add(report)
    send.Delivery(send.Transport(server, retries=0), again, client_id).flush()
    assert not again.reports
    assert sorted(r["timestamp"] for r in health(server, user)) == got
    monitor = get(server, f"/api/user/client_monitor?user_id={user}")
    assert sum(r["total_heartbeats"] or 0 for r in monitor) == 4


def test_backlog_of_an_unregistered_client_registers_it_and_arrives(server, tmp_path, caplog):
    user, client_id = new_user(), uuid.uuid4().hex
    minutes = (9, 7, 5)
    clock = iter(datetime.now(timezone.utc) - timedelta(minutes=m) for m in minutes)
    collector = quick_collector(client_id, read_net=dict, clock=lambda: next(clock))
    buffer = send.Buffer(tmp_path / "buffer.jsonl")
    for _ in minutes:
        buffer.add(collector.report())
    delivery = send.Delivery(send.Transport(server, retries=0), buffer, client_id, user=user, name="late")
    with caplog.at_level(logging.INFO, "gpufs_agent"):
        delivery.flush()
    assert not buffer.reports
    assert "registered client" in caplog.text and "3 stored" in caplog.text
    assert len(health(server, user)) == 3


def test_unknown_client_without_user_is_dropped_not_retried(server, tmp_path, caplog):
    assert main(agent_args(server, tmp_path, "--once")) == EXIT_UNDELIVERED
    assert "run with --user" in caplog.text
    assert not send.Buffer(tmp_path / "buffer.jsonl").reports


def test_refused_report_is_logged_and_dropped(server, tmp_path, caplog):
    user, client_id = new_user(), uuid.uuid4().hex
    post(server, "/api/user/insert_client", {"user_id": user, "client_id": client_id, "client_status": "online",
                                             "name": "clock-ahead"})
    ahead = quick_collector(client_id, read_net=dict, clock=lambda: datetime.now(timezone.utc) + timedelta(hours=1))
    buffer = send.Buffer(tmp_path / "buffer.jsonl")
    delivery = send.Delivery(send.Transport(server, retries=0), buffer, client_id)
    with caplog.at_level(logging.INFO, "gpufs_agent"):
        assert delivery.send(ahead.report()) is False
    assert "refused it with HTTP 400" in caplog.text and "timestamp" in caplog.text
    assert not buffer.reports and health(server, user) == []


def test_invalid_client_stops_the_agent(server, tmp_path, caplog):
    user = new_user()
    assert main(agent_args(server, tmp_path, "--user", user, "--once")) == 0
    client_id = (tmp_path / "client_id").read_text().strip()
    post(server, "/api/user/edit_client_info", {"user_id": user, "client_id": client_id, "valid_status": "invalid"})
    assert main(agent_args(server, tmp_path, "--user", user, "--interval", "3600")) == EXIT_STOPPED
    assert "refuses client" in caplog.text
    assert not send.Buffer(tmp_path / "buffer.jsonl").reports


def test_installed_gpufs_agent_command_reports(server, tmp_path):
    # The console script `make venv` installs beside the interpreter, as the README runs it.
    env = dict(os.environ, GPUFS_SERVER=server, GPUFS_AGENT_STATE=str(tmp_path), GPUFS_USER=new_user())
    out = subprocess.run([str(Path(sys.executable).with_name("gpufs-agent")), "--once"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "registered client" in out.stderr


def test_agent_needs_none_of_the_servers_libraries(tmp_path):
    # A GPU machine installs only the agent: a report must not pull in Flask, the database driver or Redis.
    code = ("import sys, json; from gpufs_agent import cli, collect, gpus, send; "
            "r = collect.Collector('ab' * 16, gpus.gpu_reader(), cpu_window=0).report(); "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('flask', 'psycopg2', 'redis', 'gpufs', 'marshmallow', 'werkzeug'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def test_gpu_readings_reach_the_server_and_unknown_ones_stay_null(server, tmp_path):
    user, client_id = new_user(), uuid.uuid4().hex
    collector = quick_collector(client_id, SampleGpus("gtx1650-power-na.csv"), read_net=dict)
    delivery = send.Delivery(send.Transport(server, retries=0), send.Buffer(tmp_path / "buffer.jsonl"), client_id,
                             user=user, name="gtx")
    assert delivery.send(collector.report()) is True
    detail = get(server, f"/api/user/client_device_detail?user_id={user}&client_id={client_id}")
    (gpu,) = detail["device_info"]
    assert {k: gpu[k] for k in READINGS} == {
        "uuid": "GPU-e84b2f60-93c1-4a7d-b5e0-1c6d9a3f2e74", "fan_speed": 35, "sm_clock_mhz": 300,
        "mem_clock_mhz": 405, "mem_total_mb": 4096, "mem_used_mb": 312, "power_limit": None,
        "ecc_uncorrected": None, "xid": None, "processes": None}
