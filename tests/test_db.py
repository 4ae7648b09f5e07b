"""The pool's connections: autocommit reads, writes still one transaction, rows as plain dicts."""
import psycopg2
import pytest

from .conftest import register


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
        assert type(first) is dict and first == {"a": 1, "b": "x"}
        assert cur.fetchall() == [{"a": 2, "b": "y"}]
        assert cur.fetchone() is None
        cur.execute("select n from generate_series(1, 5) as n")
        assert cur.fetchmany(2) == [{"n": 1}, {"n": 2}]
        assert list(cur) == [{"n": 3}, {"n": 4}, {"n": 5}]
