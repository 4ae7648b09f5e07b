"""Migrations: idempotent, safe when several workers start at once, and adopting an upstream database."""
import threading
import uuid

import psycopg2
import pytest
from psycopg2 import sql

from gpufs import create_app
from gpufs.devenv import ensure_database
from gpufs.migrate import MIGRATIONS, migrate

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
