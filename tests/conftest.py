"""Fixtures: a real PostgreSQL and Redis (from the environment, else embedded under ./var/),
the schema built once per run, and every test starting from empty tables and an empty cache."""
import contextlib
import gc
import os
import socket
import subprocess
import sys
import time
import uuid
import warnings
from datetime import datetime, timezone
from pathlib import Path

import psycopg2
import pytest
import redis

from gpufs import create_app
from gpufs.migrate import migrate

ROOT = Path(__file__).resolve().parent.parent


TABLES = ("gpu_assets", "system_info", "device_info", "heartbeat", "heartbeat_bucket", "client_daily_stats",
          "device_daily_stats", "client_uptime_days", "heartbeat_config_daily", "client_models", "tokens",
          "gpufs_gpu_samples", "gpufs_gpu_hourly", "gpufs_alert_outbox", "gpufs_alerts", "gpufs_alert_settings")


@pytest.fixture(scope="session")
def urls():
    if os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL"):
        found = {"DATABASE_URL": os.environ["DATABASE_URL"], "REDIS_URL": os.environ["REDIS_URL"]}
    else:
        from gpufs import devenv
        found = devenv.ensure(ROOT, test=True)
    migrate(found["DATABASE_URL"])
    return found


@pytest.fixture
def db(urls):
    """A direct autocommit connection for arranging and checking rows; tables start empty."""
    conn = psycopg2.connect(urls["DATABASE_URL"], options="-c TimeZone=UTC")
    conn.autocommit = True
    with conn.cursor() as cur:
        # DELETE beats TRUNCATE on tables this small: no new files, no exclusive locks to wait for.
        cur.execute("".join(f"delete from {table};" for table in TABLES))  # fixed names, no input
    redis.Redis.from_url(urls["REDIS_URL"]).flushdb()
    yield conn
    conn.close()


@pytest.fixture(autouse=True)
def _collect_apps():
    """Apps a test built for itself are dropped here, with their idle sockets, so a socket
    closed by the garbage collector never warns in some later, unrelated test."""
    yield
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()


@pytest.fixture
def app_config(urls):
    return {"DATABASE_URL": urls["DATABASE_URL"], "REDIS_URL": urls["REDIS_URL"], "MIGRATE_ON_START": False,
            "BACKGROUND_TASKS": False}


_now = datetime.now(timezone.utc)


def now():
    """The test's "now", fixed when it starts: the app fixture's reads are evaluated at this time and
    tests count their days from it (reports.midnight), so no test depends on the time of day."""
    return _now


@pytest.fixture(autouse=True)
def _fixed_now():
    global _now
    _now = datetime.now(timezone.utc)


@pytest.fixture
def app(db, app_config):
    app = create_app(app_config)
    app.config["TESTING"] = True
    app.extensions["gpufs"].clock = now
    yield app
    app.extensions["gpufs"].close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def new_client_id():
    return uuid.uuid4().hex


def register(client, user_id="12", client_id=None, name="GPU Server 1", status="online", os_type="Linux"):
    """Register a client through the API and return its id."""
    client_id = client_id or new_client_id()
    body = {"user_id": user_id, "client_id": client_id, "client_status": status, "name": name}
    if os_type is not None:
        body["os_type"] = os_type
    resp = client.post("/api/user/insert_client", json=body)
    assert resp.status_code == 200, resp.get_json()
    return client_id


def assert_envelope(resp, status):
    body = resp.get_json()
    assert resp.status_code == status, body
    assert set(body) == {"success", "data", "message", "timestamp"}
    assert body["success"] is (status < 400)
    if status >= 400:
        assert body["data"] is None
    assert body["timestamp"].endswith("Z") and len(body["timestamp"]) == 27
    return body


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server(urls, tmp_path_factory):
    """The real gunicorn process, started the way the README starts it; yields its base URL."""
    port = free_port()
    env = dict(os.environ, DATABASE_URL=urls["DATABASE_URL"], REDIS_URL=urls["REDIS_URL"],
               GPUFS_BIND=f"127.0.0.1:{port}", GUNICORN_WORKERS="2",
               # Its workers would lead the background tasks all session long; tests run them themselves.
               BACKGROUND_TASKS="false",
               # /metrics/fleet rendered ahead every second, not every 30: Prometheus and promtool see
               # a report within their tests' waits.
               FLEET_METRICS_CACHE_SECONDS="1")
    gunicorn = Path(sys.executable).with_name("gunicorn")
    log = tmp_path_factory.mktemp("gunicorn") / "stderr.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([str(gunicorn), "-c", "deploy/gunicorn.conf.py", "app:app"], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=err)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("gunicorn did not start:\n" + log.read_text()) from None
            time.sleep(0.1)
    yield base
    proc.terminate()
    proc.wait(timeout=30)


def tool_or_skip(name, install):
    """The path of a Debian tool a test starts itself (browser, Prometheus, Alertmanager), or a skip
    with one line saying how to install it. CI sets GPUFS_REQUIRE_TOOLS=1: there a missing tool fails
    the test instead, so these tests can never pass CI by skipping."""
    import shutil
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    if path is None:
        if os.environ.get("GPUFS_REQUIRE_TOOLS"):
            pytest.fail(f"{name} is required here (GPUFS_REQUIRE_TOOLS=1): {install}")
        pytest.skip(f"no {name}: {install}")
    return path


@contextlib.contextmanager
def gunicorn(urls, tmp_path, **env):
    """gunicorn as deployed (one worker) with settings of the test's own (token mode, another database),
    its stderr in tmp_path; yields its base URL and stops it after. Migrations and background tasks are
    off unless `env` turns them on: a server of the whole session must not lead tasks on the test
    database with the real clock."""
    port = free_port()
    full = {**os.environ, "DATABASE_URL": urls["DATABASE_URL"], "REDIS_URL": urls["REDIS_URL"],
            "GPUFS_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": "1", "MIGRATE_ON_START": "false",
            "BACKGROUND_TASKS": "false", **env}
    full.pop("PROMETHEUS_MULTIPROC_DIR", None)  # its own, made by deploy/gunicorn.conf.py
    log = Path(tmp_path) / f"gunicorn-{port}.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("gunicorn")), "-c", "deploy/gunicorn.conf.py",
                                 "app:app"], cwd=ROOT, env=full, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("gunicorn did not start:\n" + log.read_text()) from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
