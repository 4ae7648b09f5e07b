"""The simulator's reports carry the per-GPU readings a real agent sends (contract section 8)."""
import re
from collections import defaultdict
from datetime import datetime, timezone

from gpufs import fleet, schemas

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=timezone.utc)
INTERVAL = 120


def week_of_reports(clients=20, days=7, seed=1):
    """Every report of a simulated fleet, machine by machine, as `gpufs simulate` would feed them."""
    sim = fleet.Simulation({"HEARTBEAT_INTERVAL_SECONDS": INTERVAL}, clients, days, seed=seed, now=NOW)
    steps = int((sim.end - sim.start) // INTERVAL) + 1
    for step in range(steps):
        t = sim.start + step * INTERVAL + 7
        for m in sim.machines:
            if m.up(t):
                yield m, m.report(sim.rng, t, (t - sim.start) / fleet.DAY, INTERVAL)


def wire(report):
    """The loaded report back in the JSON an agent would send."""
    return {**report, "client_id": report["client_id"].hex(),
            "timestamp": report["timestamp"].isoformat().replace("+00:00", "Z")}


def test_simulated_gpus_report_plausible_readings():
    uuids, jobs, ecc = defaultdict(set), defaultdict(set), defaultdict(list)
    samples = busy_with_processes = idle_without = xids = 0
    for m, report in week_of_reports(clients=10):
        sm_idle, sm_boost, mem_idle, mem_busy, fans, has_ecc = fleet.GPU_TRAITS[m.gpu_name]
        for d in report["devices"]:
            samples += 1
            uuids[(m.client_id, d["index"])].add(d["uuid"])
            assert sm_idle <= d["sm_clock_mhz"] <= sm_boost and d["mem_clock_mhz"] in (mem_idle, mem_busy)
            assert (d["fan_speed"] is None) is not fans and (d["fan_speed"] is None or 30 <= d["fan_speed"] <= 100)
            assert 0 <= d["mem_used_mb"] <= d["mem_total_mb"] == m.gpu_mem
            assert d["power_limit"] == m.max_w >= d["power_usage"]
            assert (d["ecc_uncorrected"] is None) is not has_ecc
            ecc[(m.client_id, d["index"])].append(d["ecc_uncorrected"])
            xids += d["xid"] is not None
            procs = d["processes"]
            assert len(procs) <= 64 and sum(p["used_memory_mb"] for p in procs) <= d["mem_used_mb"]
            busy_with_processes += bool(procs) and d["usage"] >= 40
            idle_without += not procs and d["usage"] < 40
            for p in procs:
                jobs[(m.client_id, d["index"], int(report["timestamp"].timestamp() // fleet.JOB_SECONDS))].add(
                    (p["pid"], p["name"], p["user"]))
    # One stable UUID per GPU, none shared.
    assert all(len(u) == 1 for u in uuids.values())
    flat = [u for (u,) in uuids.values()]
    assert len(set(flat)) == len(flat) and all(re.fullmatch(r"GPU-[0-9a-f-]{36}", u) for u in flat)
    # A job keeps its process (and a helper now and then) while it runs.
    assert all(1 <= len(procs) <= 2 for procs in jobs.values())
    assert busy_with_processes > samples / 10 and idle_without > samples / 10
    # ECC counts never go back; ECC errors and XIDs happen, but rarely.
    assert all(c == sorted(c) for c in ecc.values() if c[0] is not None)
    assert any(c[-1] for c in ecc.values() if c[-1] is not None)
    assert 1 <= xids <= samples / 5000


def test_simulated_reports_pass_the_servers_report_schema():
    for n, (_, report) in enumerate(week_of_reports(clients=4, days=1)):
        if n % 50 == 0:
            schemas.Report().load(wire(report))


def test_simulated_readings_are_the_same_for_the_same_seed():
    first = [r["devices"] for _, r in week_of_reports(clients=3, days=1, seed=7)]
    assert first == [r["devices"] for _, r in week_of_reports(clients=3, days=1, seed=7)]
    assert first != [r["devices"] for _, r in week_of_reports(clients=3, days=1, seed=8)]


def test_simulated_fleet_shows_its_gpu_readings_and_history(client, runner, db):
    result = runner.invoke(args=["gpufs", "simulate", "--clients", "3", "--days", "1", "--user", "simgpu"])
    assert result.exit_code == 0, result.output
    settings = {"HEARTBEAT_INTERVAL_SECONDS": INTERVAL}
    for m in fleet.Simulation(settings, clients=3, days=1, user="simgpu").machines:
        query = {"user_id": "simgpu", "client_id": m.client_id.hex()}
        detail = client.get("/api/user/client_device_detail", query_string=query).get_json()["data"]
        assert [g["uuid"] for g in detail["device_info"]] == m.uuids
        for g in detail["device_info"]:
            assert g["sm_clock_mhz"] > 0 and g["mem_total_mb"] == m.gpu_mem and g["power_limit"] == m.max_w
        history = client.get("/api/user/device_history", query_string=query).get_json()["data"]
        assert [d["uuid"] for d in history["devices"]] == m.uuids
