"""`gpufs simulate` (a plausible fleet through the ingestion path) and `gpufs prune` (retention)."""
import hashlib
from datetime import datetime, timedelta, timezone

from gpufs import fleet

from .conftest import register
from .reports import midnight, one, report, rows, send, send_batch


def simulated_id(user, index):
    return hashlib.blake2b(f"gpufs-simulate:{user}:{index}".encode(), digest_size=16).hexdigest()


def test_simulate_registers_a_fleet_and_feeds_it_a_day_of_reports(client, runner, db):
    result = runner.invoke(args=["gpufs", "simulate", "--clients", "4", "--days", "1", "--user", "sim"])
    assert result.exit_code == 0, result.output
    assert "4 clients of user 'sim'" in result.output

    statuses = dict(rows(db, "select client_status, count(*) from gpu_assets where user_id = 'sim' group by 1"))
    assert statuses == {"online": 3, "maintenance": 1}
    created = one(db, "select max(created_at) from gpu_assets")[0].replace(tzinfo=timezone.utc)
    assert timedelta(hours=23) < datetime.now(timezone.utc) - created < timedelta(hours=25)
    stored, first = one(db, "select count(*), min(timestamp) from heartbeat")
    assert 2000 < stored <= 4 * 721  # a day at 120 s, less the outages
    assert first > created
    assert one(db, "select sum(total_heartbeats) from client_daily_stats")[0] == stored  # one report per bucket

    stat = client.get("/api/user/client_stat", query_string={"user_id": "sim"}).get_json()["data"]
    assert stat["systems_total_number"] == 4 and stat["systems_maintenance_number"] == 1
    assert one(db, "select count(*) from device_info where device_temp >= 85")[0] >= 1  # a hot GPU
    assert stat["systems_warnings_number"] >= 1  # the hot GPU, the machine that stopped reporting
    assert stat["systems_online_number"] <= 2  # not the one in maintenance, not the one that stopped
    items = client.get("/api/user/client_list", query_string={"user_id": "sim"}).get_json()["data"]["devices"]
    assert all(item["device_name"].startswith("NVIDIA") and item["tflops"] > 0 for item in items)
    assert max(item["health"] for item in items) >= 90


def test_live_simulation_reports_now_from_every_machine_still_up(app, client, db):
    with app.app_context():
        settings = app.extensions["gpufs"].config
        sim = fleet.Simulation(settings, clients=4, days=1, user="sim")
        with app.extensions["gpufs"].pool.connection() as conn:
            sim.register(conn)
            sim.live(conn, rounds=2, sleep=lambda seconds: None)
    stopped = sum(m.stops_at < sim.end for m in sim.machines)
    assert (stopped, sim.counts["stored"]) == (1, 2 * 3)
    live = client.get("/api/user/client_status_list", query_string={"user_id": "sim"}).get_json()["data"]
    assert sorted(item["client_status"] for item in live["devices"]) == ["maintenance", "offline", "online", "online"]


def test_simulate_refuses_client_ids_of_another_user(client, runner, db):
    register(client, user_id="someone", client_id=simulated_id("sim", 0))
    result = runner.invoke(args=["gpufs", "simulate", "--clients", "2", "--days", "1", "--user", "sim"])
    assert result.exit_code == 1
    assert "registered to another user" in result.output
    assert one(db, "select count(*) from gpu_assets") == (1,)


def test_simulate_rejects_bad_arguments(runner, db):
    assert runner.invoke(args=["gpufs", "simulate", "--days", "0"]).exit_code == 2
    assert runner.invoke(args=["gpufs", "simulate", "--days", "91"]).exit_code == 2
    assert runner.invoke(args=["gpufs", "simulate", "--user", "u" * 33]).exit_code == 2


def ago(days):
    return midnight(-days) + timedelta(hours=12)


def test_prune_deletes_old_heartbeats_and_keeps_rollups(client, runner, db):
    cid = register(client)
    send_batch(client, [report(cid, ago(d)) for d in (120, 100, 95, 40, 10)])
    # Claims from when the oldest reports were still inside the retention window.
    rows(db, "insert into heartbeat_bucket (client_id, bucket_start) select %s, %s - make_interval(days => n) "
             "from generate_series(0, 2) as n", bytes.fromhex(cid), ago(100))

    result = runner.invoke(args=["gpufs", "prune"])  # HEARTBEAT_RETENTION_DAYS: 90
    assert result.exit_code == 0, result.output
    assert "pruned 3 heartbeats and 3 bucket claims" in result.output
    assert one(db, "select count(*) from heartbeat") == (2,)

    result = runner.invoke(args=["gpufs", "prune", "--older-than", "30"])
    assert "pruned 1 heartbeats and 0 bucket claims" in result.output, result.output
    assert rows(db, "select timestamp from heartbeat") == [(ago(10),)]
    assert one(db, "select count(*), sum(total_heartbeats) from client_daily_stats") == (5, 2)  # rollups stay

    # The 40-day-old claim outlived its heartbeat: a backfill of that report does not count twice.
    assert send(client, report(cid, ago(40)))["data"] == {"status": "stored", "counted": False}


def test_prune_works_in_bounded_batches(app, client, db):
    cid = register(client)
    send_batch(client, [report(cid, ago(50) + timedelta(minutes=2 * m)) for m in range(7)] + [report(cid, ago(1))])
    with app.app_context():
        with app.extensions["gpufs"].pool.connection() as conn:
            done = fleet.prune(conn, older_than_days=30, retention_days=30, batch=2)
    assert (done["heartbeats"], done["buckets"]) == (7, 7)
    assert one(db, "select count(*) from heartbeat") == (1,)
    assert one(db, "select count(*) from heartbeat_bucket") == (1,)
