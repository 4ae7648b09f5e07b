"""Helpers for the ingestion and monitoring tests: build reports, send them, look at rows."""
from datetime import datetime, timedelta, timezone

from gpufs.cache import client_scope, user_scope

from .conftest import assert_envelope, now


def midnight(days=0):
    """UTC midnight of the test's today (conftest.now) + `days`."""
    today = now()
    return datetime(today.year, today.month, today.day, tzinfo=timezone.utc) + timedelta(days=days)


def iso(value):
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# A GPU's optional readings (contract section 8), as client_device_detail shows a GPU that gave none.
UNKNOWN_READINGS = {"uuid": None, "fan_speed": None, "sm_clock_mhz": None, "mem_clock_mhz": None,
                    "mem_total_mb": None, "mem_used_mb": None, "power_limit": None, "ecc_uncorrected": None,
                    "xid": None, "processes": None}


def gpu(index=0, name="NVIDIA GeForce RTX 4090", temp=72, usage=85, mem_usage=75, power_usage=350):
    return {"index": index, "name": name, "temp": temp, "usage": usage, "mem_usage": mem_usage,
            "power_usage": power_usage}


def report(client_id, ts, cpu=45, mem=60, disk=30, rx=1000, tx=2000, devices=None, **extra):
    """A report body; `ts` None leaves the timestamp out (server time)."""
    body = {"client_id": client_id,
            "system": {"cpu_usage": cpu, "memory_usage": mem, "disk_usage": disk, "network_rx": rx, "network_tx": tx},
            "devices": [gpu()] if devices is None else devices}
    if ts is not None:
        body["timestamp"] = iso(ts) if isinstance(ts, datetime) else ts
    body.update(extra)
    return body


def send(client, body, status=200):
    return assert_envelope(client.post("/api/client/heartbeat", json=body), status)


def send_batch(client, reports, status=200):
    return assert_envelope(client.post("/api/client/heartbeats", json={"reports": reports}), status)


def send_all(client, reports):
    """Send any number of reports in batches of 1000; all must be stored."""
    for start in range(0, len(reports), 1000):
        data = send_batch(client, reports[start:start + 1000])["data"]
        assert data["rejected"] == 0, data["results"][:3]


def rows(db, sql, *params):
    with db.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else None


def one(db, sql, *params):
    found = rows(db, sql, *params)
    assert len(found) == 1, found
    return found[0]


def forget_cache(app, user_id="12"):
    """After arranging rows directly in the database, drop the cached reads of the user and of each
    of its clients (the API's writes do this)."""
    state = app.extensions["gpufs"]
    with state.pool.connection() as conn, conn.cursor() as cur:
        cur.execute("select client_id from gpu_assets where user_id = %s", (user_id,))
        clients = [bytes(row["client_id"]) for row in cur.fetchall()]
    state.cache.invalidate(user_scope(user_id), *map(client_scope, clients))
