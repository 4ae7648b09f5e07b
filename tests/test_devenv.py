"""devenv.ensure_database against the server this test run uses (embedded or the machine's)."""
import uuid

import psycopg2
from psycopg2 import sql

from gpufs.devenv import ensure_database


def _exists(conn, name):
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        return cur.fetchone() is not None


def test_ensure_database_creates_once_and_points_at_it(urls):
    server = urls["DATABASE_URL"]
    name = f"gpufs-devenv-{uuid.uuid4().hex[:12]}"  # the hyphens need quoting: proves Identifier is used
    admin = psycopg2.connect(server)
    admin.autocommit = True
    try:
        assert not _exists(admin, name)
        dsn = ensure_database(server, name)
        assert _exists(admin, name)
        assert ensure_database(server, name) == dsn  # second call finds it and creates nothing

        conn = psycopg2.connect(dsn)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT current_database()")
                assert cur.fetchone()[0] == name
        finally:
            conn.close()
    finally:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        assert not _exists(admin, name)
        admin.close()
