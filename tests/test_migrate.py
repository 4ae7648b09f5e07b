"""Migrations: idempotent, safe when several workers start at once, and adopting an upstream database."""
import re
import threading
import uuid
from datetime import datetime, timedelta, timezone

import psycopg2
import pytest
from psycopg2 import sql

from gpufs import create_app
from gpufs.devenv import ensure_database
from gpufs.migrate import FUNCTIONS, MIGRATIONS, migrate

from .conftest import assert_envelope


@pytest.fixture
def fresh_db(urls):
    name = f"gpufs_migrate_{uuid.uuid4().hex[:8]}"
    url = ensure_database(urls["DATABASE_URL"], name)
    yield url
    admin = psycopg2.connect(urls["DATABASE_URL"])
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
    admin.close()


def test_migrate_twice_applies_nothing_the_second_time(fresh_db):
    first = migrate(fresh_db)
    assert first == sorted(p.stem for p in MIGRATIONS.glob("*.sql"))
    assert migrate(fresh_db) == []


def test_concurrent_workers_apply_each_migration_once(fresh_db):
    results, errors = [], []

    def worker():
        try:
            results.append(migrate(fresh_db))
        except Exception as err:  # collected and asserted below
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    applied = [name for r in results for name in r]
    assert sorted(applied) == sorted(p.stem for p in MIGRATIONS.glob("*.sql"))


def test_existing_upstream_database_is_adopted_with_its_data(fresh_db, urls):
    upstream = (MIGRATIONS / "0001_upstream.sql").read_text()
    conn = psycopg2.connect(fresh_db)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(upstream)  # the upstream tables, as an existing GPUFabric database has them
        cur.execute("insert into gpu_assets (user_id, client_id, client_name, client_status)"
                    " values ('12', %(cid)s, 'legacy box', 'active')", {"cid": bytes.fromhex("ab" * 16)})
        cur.execute("insert into client_daily_stats (date, client_id, total_heartbeats, last_heartbeat)"
                    " values (current_date, %(cid)s, 30, now())", {"cid": bytes.fromhex("ab" * 16)})
    migrate(fresh_db)
    with conn.cursor() as cur:
        cur.execute("select health_heartbeats from client_daily_stats")
        assert cur.fetchone()[0] == 30  # history keeps counting towards health
    conn.close()
    app = create_app({"DATABASE_URL": fresh_db, "REDIS_URL": "", "MIGRATE_ON_START": False})
    data = assert_envelope(app.test_client().get("/api/user/client_list?user_id=12"), 200)["data"]
    assert data["devices"][0]["client_name"] == "legacy box"
    assert data["devices"][0]["uptime_days"] == 1
    app.extensions["gpufs"].close()


def test_flask_cli_migrate(fresh_db):
    app = create_app({"DATABASE_URL": fresh_db, "REDIS_URL": "", "MIGRATE_ON_START": False})
    result = app.test_cli_runner().invoke(args=["gpufs", "migrate"])
    assert result.exit_code == 0 and "0001_upstream" in result.output
    result = app.test_cli_runner().invoke(args=["gpufs", "migrate"])
    assert "nothing" in result.output


def test_a_database_made_by_the_numbered_migrations_alone_migrates_to_the_functions_file(fresh_db):
    """A database as the releases before the functions file left it (every numbered migration
    applied, the functions as the last of them defined them) takes the file cleanly: the
    functions are exactly the file's, the dead ones gone, and the views answer."""
    conn = psycopg2.connect(fresh_db)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("create table gpufs_migrations (name text primary key, applied_at timestamptz not null"
                    " default now())")
        for path in sorted(MIGRATIONS.glob("*.sql")):
            cur.execute(path.read_text())
            cur.execute("insert into gpufs_migrations (name) values (%s)", (path.stem,))
        cur.execute("select count(*) from pg_proc where proname in ('gpufs_interval', 'gpufs_expected')")
        assert cur.fetchone()[0] == 2  # what the old migrations left
    assert migrate(fresh_db) == []  # no numbered migration is pending; the functions file still runs
    assert migrate(fresh_db) == []  # and runs again, changing nothing
    declared = set(re.findall(r"create or replace function (\w+)", FUNCTIONS.read_text()))
    with conn.cursor() as cur:
        cur.execute("select proname from pg_proc where proname like 'gpufs\\_%%'")
        found = {row[0] for row in cur.fetchall()}
        assert declared <= found and not found & {"gpufs_interval", "gpufs_expected", "gpufs_uptime_yesterday"}
        cur.execute("insert into gpu_assets (user_id, client_id, client_name, client_status, created_at)"
                    " values ('12', %(cid)s, 'box', 'active', now() at time zone 'UTC' - interval '3 days')",
                    {"cid": bytes.fromhex("cd" * 16)})
        cur.execute("select gpufs_health(%(cid)s, now() - interval '3 days', now(), 120)",
                    {"cid": bytes.fromhex("cd" * 16)})
        assert cur.fetchone()[0] == 0  # no report: health 0, computed by the file's functions
    conn.close()
    app = create_app({"DATABASE_URL": fresh_db, "REDIS_URL": "", "MIGRATE_ON_START": False})
    client = app.test_client()
    assert assert_envelope(client.get("/api/user/client_list?user_id=12"), 200)["data"]["devices"][0]["health"] == 0
    assert assert_envelope(client.get("/api/user/client_stat?user_id=12"), 200)["data"]["systems_total_number"] == 1
    app.extensions["gpufs"].close()


def test_rollups_written_before_the_half_hours_keep_whole_hours(fresh_db):
    """Migration 0016: in a new database the rollups hold half hours from the start; in one with
    rollups already, from the hour after the newest (here one a clock ahead wrote)."""
    assert migrate(fresh_db)
    conn = psycopg2.connect(fresh_db, options="-c TimeZone=UTC")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("select since from gpufs_gpu_half_hours")
        assert cur.fetchall() == [(datetime(1970, 1, 1, tzinfo=timezone.utc),)]
        cur.execute("drop table gpufs_gpu_half_hours; delete from gpufs_migrations where name like '0016%%'")
        ahead = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) + timedelta(hours=5)
        cur.execute("insert into gpufs_gpu_hourly (client_id, device_index, hour, last_reported_at, samples, temp_sum,"
                    " temp_max, usage_sum, usage_max, mem_usage_sum, power_sum, power_max)"
                    " values ('\\xab', 0, %(hour)s, %(hour)s, 1, 50, 50, 1, 1, 1, 100, 100)", {"hour": ahead})
        assert migrate(fresh_db) == ["0016_gpu_half_hours"]
        cur.execute("select since from gpufs_gpu_half_hours")
        assert cur.fetchall() == [(ahead + timedelta(hours=1),)]
    conn.close()
