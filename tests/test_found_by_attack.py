"""What a hostile user and an unlucky operator found (issue 23): each case answered as it should be."""
import io
import json
import socket
import threading
import time
from datetime import datetime, timezone

import orjson
import psycopg2
import pytest

from gpufs import create_app

from .conftest import assert_envelope, register
from .reports import midnight, report, rows, send, send_batch

# ---- F1: report times ------------------------------------------------------------------------

@pytest.mark.parametrize("stamp", ["0001-06-01T00:00:00Z", "1000-01-01T00:00:00Z", "1999-12-31T23:59:59.999999Z"])
def test_a_report_before_2000_is_refused_naming_timestamp(client, stamp):
    cid = register(client)
    body = send(client, report(cid, stamp), 400)
    assert body["message"] == "timestamp: must not be before 2000-01-01"
    batch = send_batch(client, [report(cid, stamp)])["data"]
    assert batch["rejected"] == 1 and batch["results"][0]["message"] == "timestamp: must not be before 2000-01-01"
    assert send(client, report(cid, "2000-01-01T00:00:00Z"))["data"]["status"] == "stored"


def test_client_health_streams_any_stored_time(client, db):
    # Written by another writer (or before the range was enforced): the stream still answers whole.
    cid = register(client)
    stamps = [datetime(1, 6, 1, tzinfo=timezone.utc), datetime(500, 1, 1, tzinfo=timezone.utc), midnight(-1),
              datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc)]
    for stamp in stamps:
        rows(db, "insert into heartbeat (client_id, cpu_usage, mem_usage, disk_usage, timestamp)"
                 " values (%s, 1, 2, 3, %s)", bytes.fromhex(cid), stamp)
    resp = client.get("/api/user/client_health", query_string={"user_id": "12"})
    body = json.loads(resp.get_data())  # the whole body parses
    assert resp.status_code == 200 and [r["timestamp"] for r in body["data"]] == [
        s.isoformat(timespec="microseconds").replace("+00:00", "Z") for s in reversed(stamps)]


def _stream_failures(client):
    text = client.get("/metrics").get_data(as_text=True)
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("gpufs_stream_failures_total"))


def test_a_stream_failing_after_its_headers_is_logged_with_the_request_id_and_counted(app, client, db, capsys):
    cid = register(client)
    rows(db, """insert into heartbeat (client_id, cpu_usage, mem_usage, disk_usage, timestamp)
                select %s, 1, 2, 3, %s - make_interval(mins => n) from generate_series(1, 3000) as n""",
         bytes.fromhex(cid), midnight())
    before = _stream_failures(client)
    resp = client.get("/api/user/client_health", query_string={"user_id": "12"}, buffered=False,
                      headers={"X-Request-ID": "stream-cut-1"})
    chunks = iter(resp.response)
    next(chunks), next(chunks)  # the envelope's head and the first hour's rows: the answer is under way
    with db.cursor() as cur:  # the database goes away mid-answer
        cur.execute("select pg_terminate_backend(pid) from pg_stat_activity"
                    " where application_name = 'gpufs' and state like 'idle in transaction%%'")
    capsys.readouterr()
    with pytest.raises(psycopg2.Error):  # raised on: the server cuts the connection, the body stays unended
        for _ in chunks:
            pass
    resp.close()
    logged = [line for line in capsys.readouterr().err.splitlines() if "headers were sent" in line]
    assert logged and " ERROR " in logged[0] and "[stream-cut-1]" in logged[0], logged
    assert _stream_failures(client) == before + 1


# ---- F5: the last day of the calendar -----------------------------------------------------------

@pytest.mark.parametrize("end", ["9999-12-31", "9999-12-31T23:59:59.999999"])
@pytest.mark.parametrize("view", ["client_monitor", "client_health"])
def test_an_end_date_at_the_end_of_9999_is_answered(client, view, end):
    cid = register(client)
    send(client, report(cid, midnight(-1)))
    resp = client.get(f"/api/user/{view}", query_string={"user_id": "12", "end_date": end})
    body = json.loads(resp.get_data())
    assert resp.status_code == 200 and body["success"] is True and len(body["data"]) == 1


# ---- F6: a chunked body over the limit ----------------------------------------------------------

def test_a_chunked_body_over_max_body_bytes_is_413(app, client):
    cid = register(client)
    limit = app.extensions["gpufs"].config["MAX_BODY_BYTES"]
    body = orjson.dumps({"reports": [report(cid, None, name="x" * 200)] * (limit // 300 + 10)})
    assert len(body) > limit

    def chunked(path, data):
        # As gunicorn hands over a chunked body: no Content-Length, the input ended by the server.
        return client.post(path, input_stream=io.BytesIO(data), environ_overrides={"wsgi.input_terminated": True},
                           headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})

    assert assert_envelope(chunked("/api/client/heartbeats", body), 413)["message"] == "request body too large"
    exact = orjson.dumps(report(cid, None))
    exact = exact[:-1] + b" " * (limit - len(exact)) + b"}"  # exactly the limit: still taken
    assert assert_envelope(chunked("/api/client/heartbeat", exact), 200)["data"]["status"] == "stored"


# ---- F7: whole, ASCII matches -------------------------------------------------------------------

def test_a_client_id_with_a_trailing_newline_is_refused(client):
    cid = register(client)
    body = assert_envelope(client.get("/api/user/client_device_detail",
                                      query_string={"user_id": "12", "client_id": cid + "\n"}), 400)
    assert body["message"].startswith("client_id:")
    assert send(client, report(cid + "\n", None), 400)["message"].startswith("client_id:")
    resp = client.post("/api/user/insert_client", json={"user_id": "12", "client_id": cid + "\n",
                                                        "client_status": "online", "name": "x"})
    assert assert_envelope(resp, 400)["message"].startswith("client_id:")


@pytest.mark.parametrize("digits", ["\u0663", "\uff13", "1\u0660"])
def test_a_limit_in_non_ascii_digits_is_refused(client, digits):
    body = assert_envelope(client.get("/api/user/client_health", query_string={"user_id": "12", "limit": digits}),
                           400)
    assert body["message"].startswith("limit:")


def test_dates_in_non_ascii_digits_are_refused(client):
    body = assert_envelope(client.get("/api/user/client_monitor",
                                      query_string={"user_id": "12", "start_date": "\u0662\u0660\u0662\u0666-01-01"}),
                           400)
    assert body["message"].startswith("start_date:")


# ---- F3: a database that accepts and never answers ----------------------------------------------

@pytest.fixture
def silent_database():
    """A local listener that accepts every connection and never says a word, like a hung PostgreSQL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    accepted, stop = [], threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"postgresql://postgres@127.0.0.1:{listener.getsockname()[1]}/gpufs?sslmode=disable"
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


def test_every_request_to_a_hung_database_gets_its_503_within_the_connect_timeout(app_config, silent_database):
    timeout = 2
    app = create_app({**app_config, "DATABASE_URL": silent_database, "REDIS_URL": "", "DB_CONNECT_TIMEOUT": timeout})
    answers = []

    def ask():
        began = time.monotonic()
        resp = app.test_client().get("/api/user/client_list", query_string={"user_id": "12"})
        answers.append((resp.status_code, resp.get_json()["success"], time.monotonic() - began))

    threads = [threading.Thread(target=ask) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    app.extensions["gpufs"].close()
    assert len(answers) == 20 and all(status == 503 and success is False for status, success, _ in answers)
    slowest = max(seconds for _, _, seconds in answers)
    assert slowest < timeout + 1, sorted(seconds for _, _, seconds in answers)
