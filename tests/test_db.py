"""The pool's connections: autocommit reads, writes still one transaction, rows as dicts by column name,
and reads and writes that stay right whatever a session was left with."""
from datetime import datetime, timedelta, timezone

import psycopg2
import pytest

from gpufs import create_app

from .conftest import register
from .reports import gpu, report, send


def _open_transactions(db, pid):
    with db.cursor() as cur:
        cur.execute("select count(*) from pg_stat_activity where pid = %s and state like 'idle in transaction%%'",
                    (pid,))
        return cur.fetchone()[0]


def _pooled(app):
    """The connection requests of this thread get next (the pool hands back the last one returned)."""
    pool = app.extensions["gpufs"].pool
    conn = pool.getconn()
    pool.putconn(conn)
    return conn


def test_reads_leave_no_transaction_open(app, client, db):
    cid = register(client)
    for path in ("client_list", "client_stat", "client_health"):
        resp = client.get(f"/api/user/{path}", query_string={"user_id": "12"})
        assert resp.status_code == 200 and resp.get_data()  # client_health streams: read it whole
    assert client.get("/api/user/client_device_detail",
                      query_string={"user_id": "12", "client_id": cid}).status_code == 200
    conn = _pooled(app)
    assert conn.autocommit is True
    assert _open_transactions(db, conn.info.backend_pid) == 0


def test_a_stream_closed_early_hands_back_a_clean_autocommit_connection(app, client, db):
    cid = register(client)
    with db.cursor() as cur:
        cur.execute("""insert into heartbeat (client_id, cpu_usage, mem_usage, disk_usage, timestamp)
                       select %s, 1, 2, 3, now() - make_interval(mins => n) from generate_series(1, 3000) as n""",
                    (bytes.fromhex(cid),))
    resp = client.get("/api/user/client_health", query_string={"user_id": "12"}, buffered=False)
    chunks = iter(resp.response)
    next(chunks), next(chunks)  # the envelope's head and the first rows: the cursor is open
    resp.close()  # the caller went away
    conn = _pooled(app)
    assert conn.autocommit is True
    assert _open_transactions(db, conn.info.backend_pid) == 0
    again = client.get("/api/user/client_health", query_string={"user_id": "12", "limit": 5})
    assert again.status_code == 200 and len(again.get_json()["data"]) == 5


def test_a_write_in_with_conn_is_one_transaction(app, db):
    pool = app.extensions["gpufs"].pool
    with pool.connection() as conn:
        assert conn.autocommit is True
        with pytest.raises(psycopg2.errors.UniqueViolation), conn, conn.cursor() as cur:
            cur.execute("insert into gpu_assets (user_id, client_id, client_name) values ('12', %s, 'a')",
                        (b"\x01" * 16,))
            cur.execute("insert into gpu_assets (user_id, client_id, client_name) values ('12', %s, 'b')",
                        (b"\x01" * 16,))
    with db.cursor() as cur:
        cur.execute("select count(*) from gpu_assets")
        assert cur.fetchone()[0] == 0  # the first insert went with the second


def test_rows_are_plain_dicts_by_column_name(app):
    pool = app.extensions["gpufs"].pool
    with pool.connection() as conn, conn.cursor() as cur:
        cur.execute("select 1 as a, 'x' as b union all select 2, 'y' order by 1")
        first = cur.fetchone()
        assert isinstance(first, dict) and first == {"a": 1, "b": "x"}
        assert cur.fetchall() == [{"a": 2, "b": "y"}]
        assert cur.fetchone() is None
        cur.execute("select n from generate_series(1, 5) as n")
        assert cur.fetchmany(2) == [{"n": 1}, {"n": 2}]
        assert list(cur) == [{"n": 3}, {"n": 4}, {"n": 5}]


def _polled_reads(cid):
    """Every polled read through its endpoint, with and without its filters."""
    return [("/api/models/get", {}), ("/api/models/get", {"is_active": "true", "min_gpu_memory_gb": 16}),
            ("/api/models/get", {"is_active": "false"}),
            ("/api/user/client_list", {"user_id": "12"}),
            ("/api/user/client_list", {"user_id": "12", "status": "online", "name": "BOX"}),
            ("/api/user/client_status_list", {"user_id": "12", "client_id": cid}),
            ("/api/user/client_stat", {"user_id": "12"}),
            ("/api/user/client_device_detail", {"user_id": "12", "client_id": cid}),
            ("/api/user/client_device_detail", {"user_id": "13", "client_id": cid}),
            ("/api/user/client_monitor", {"user_id": "12"}),
            ("/api/user/client_monitor", {"user_id": "12", "client_id": cid, "start_date": "2026-01-01",
                                          "end_date": "2026-12-31"})]


def _answers(client, reads):
    out = []
    for path, args in reads:
        resp = client.get(path, query_string=args)
        out.append((resp.status_code, resp.get_json()["data"]))
    return out


def test_polled_reads_answer_the_same_every_time(app_config, client, db):
    cid = register(client, name="GPU box")
    register(client, name="spare", status="maintenance")
    send(client, report(cid, None, cpu=45.5, devices=[gpu(i, name=f"GPU {i}", temp=90 - i) for i in range(2)]))
    for gb, active in ((8, True), (24, True), (None, False)):
        client.post("/api/models/insert", json={"name": f"m{gb}", "version": "1", "version_code": 1, "engine_type": 0,
                                                "min_gpu_memory_gb": gb, "is_active": active})
    reads = _polled_reads(cid)
    app = create_app({**app_config, "REDIS_URL": ""})
    try:
        rounds = [_answers(app.test_client(), reads) for _ in range(7)]
    finally:
        app.extensions["gpufs"].close()
    assert all(r == rounds[0] for r in rounds)
    assert [status for status, _ in rounds[0]] == [200] * 8 + [404] + [200] * 2
    assert [len(data) for _, data in rounds[0][:3]] == [3, 1, 1]  # the filters took effect


@pytest.fixture
def uncached(db, app_config):
    app = create_app({**app_config, "REDIS_URL": ""})
    yield app
    app.extensions["gpufs"].close()


def test_a_session_that_lost_its_prepared_statements_still_reads(uncached):
    client = uncached.test_client()
    client.post("/api/models/insert", json={"name": "m", "version": "1", "version_code": 1, "engine_type": 0})
    first = client.get("/api/models/get").get_json()["data"]
    with _pooled(uncached).cursor() as cur:
        cur.execute("deallocate all")  # as DISCARD ALL would
    again = client.get("/api/models/get")
    assert again.status_code == 200 and again.get_json()["data"] == first and first


def test_a_column_altered_under_a_read_is_read_with_its_new_type(uncached):
    client = uncached.test_client()
    conn = _pooled(uncached)
    with conn.cursor() as cur:
        # A table of this session's own shadows client_models: the shared table stays as it is.
        cur.execute("create temp table client_models (like public.client_models including all)")
        cur.execute("insert into client_models (name, version, version_code, engine_type, expected_size)"
                    " values ('m', '1', 1, 0, 5)")
    assert client.get("/api/models/get").get_json()["data"][0]["expected_size"] == 5
    with conn.cursor() as cur:
        cur.execute("alter table pg_temp.client_models alter column expected_size type numeric")
    resp = client.get("/api/models/get")
    assert resp.status_code == 200 and resp.get_json()["data"][0]["expected_size"] == 5


def test_single_reports_answer_stored_counted_or_duplicate(app_config, client, db):
    """Single reports, past the count of executions after which PostgreSQL may switch a statement to a
    generic plan: their outcomes (stored, counted, duplicate) and the rollups they write."""
    base = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    # Minutes after `base`: 0 and 1 share a two-minute bucket, 4 is sent twice.
    minutes = [0, 1, 4, 4, 6, 8, 10, 12, 14, 16, 18]
    cid = register(client, name="box")
    answers = []
    for m in minutes:
        resp = client.post("/api/client/heartbeat", json=report(
            cid, base + timedelta(minutes=m), cpu=10 + m, rx=1000 * m, devices=[gpu(usage=m)]))
        answers.append((resp.status_code, resp.get_json()["data"]))
    expected = [("stored", True), ("stored", False), ("stored", True), ("duplicate", False)] + [("stored", True)] * 7
    assert [(code, data["status"], data["counted"]) for code, data in answers] == \
        [(200, *outcome) for outcome in expected]
    with db.cursor() as cur:
        cur.execute("select total_heartbeats from client_daily_stats where client_id = %s", (bytes.fromhex(cid),))
        assert cur.fetchall()


def test_a_single_report_after_the_session_lost_its_prepared_statements_is_stored(app, client, db):
    cid = register(client)
    base = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)

    def post(minute):
        return client.post("/api/client/heartbeat", json=report(cid, base + timedelta(minutes=minute), devices=[]))

    assert post(0).get_json()["data"] == {"status": "stored", "counted": True}
    with _pooled(app).cursor() as cur:
        cur.execute("deallocate all")  # as DISCARD ALL would
    resp = post(2)
    assert resp.status_code == 200 and resp.get_json()["data"] == {"status": "stored", "counted": True}
    with db.cursor() as cur:
        cur.execute("select total_heartbeats from client_daily_stats where client_id = %s", (bytes.fromhex(cid),))
        assert cur.fetchall() == [(2,)]
