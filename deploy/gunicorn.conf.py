"""gunicorn settings for the gpuf-s API: `gunicorn -c deploy/gunicorn.conf.py app:app`.

Read in the master before any worker starts. Every value comes from the environment with
the default the README documents, so a systemd unit or `make run` changes none of this file.
"""
import glob
import logging
import os
import shutil
import tempfile

bind = os.environ.get("GPUFS_BIND", "127.0.0.1:18081")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_class = "gthread"
# SIGTERM: stop accepting, let in-flight requests (a long client_health stream, a batch of
# reports in its transaction) finish for up to this long, then exit.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
keepalive = 5  # nginx keeps upstream connections open (upstream keepalive); reuse them a while
accesslog = None  # gpufs logs one line per request itself, with the request id
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
if os.environ.get("LOG_FORMAT", "text") == "json":
    # gunicorn's own lines (start-up, invalid requests, tracebacks) in the app's JSON format too.
    # propagate False: the app adds its own handler to the root logger in each worker.
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "root": {"level": loglevel.upper(), "handlers": []},
        "loggers": {name: {"level": loglevel.upper(), "handlers": ["json"], "propagate": False, "qualname": name}
                    for name in ("gunicorn.error", "gunicorn.access")},
        "handlers": {"json": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
        "formatters": {"json": {"()": "gpufs.logs.JsonFormatter"}},
    }
# X-Forwarded-Proto from nginx on the same host decides https in generated URLs.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
proc_name = "gpufs"
# nginx answers malformed and oversized requests itself, as envelopes (deploy/nginx.conf): its
# limits (4 KiB a line, 17 KiB of header lines) are inside these, so gunicorn's own plain answers
# never reach a client through it.
limit_request_line = 8190
limit_request_field_size = 8190
limit_request_fields = 8192
# gunicorn's control socket (for `gunicornc`) defaults to one path per user, shared by every
# gunicorn that user runs: off unless a path is given. systemd and signals manage this one.
control_socket = os.environ.get("GUNICORN_CONTROL_SOCKET", "")
control_socket_disable = not control_socket

# Prometheus multi-process mode: each worker writes its samples under this directory and the
# worker answering /metrics merges them. It must be set before a worker imports the app.
_OWN_METRICS_DIR = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _OWN_METRICS_DIR:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="gpufs-metrics-")

log = logging.getLogger("gunicorn.error")


_migrated = False  # set in the master; forked workers see its value


def on_starting(server):
    # Samples left by a previous run would be added to this run's counters: start clean.
    for path in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
        os.remove(path)
    _migrate()


def on_reload(server):
    _migrate()  # new code on SIGHUP may bring new migrations


def post_worker_init(worker):
    state = getattr(worker.wsgi, "extensions", {}).get("gpufs")
    if state is None:
        return
    if not _migrated:  # the database was down when the master tried: each worker tries again
        _migrate(state.config)
    # After the fork: every worker offers to lead the periodic tasks; one PostgreSQL advisory lock
    # lets exactly one of them (across hosts too) run them.
    state.start_tasks()


def child_exit(server, worker):
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(worker.pid)  # its live gauges (pool in use) leave the sum


def on_exit(server):
    if _OWN_METRICS_DIR:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def _migrate(settings=None):
    """Apply migrations at server start-up only (never when the app is merely imported, as every
    `flask` command does): once in the master, under an advisory lock, rather than in every worker.
    If PostgreSQL is down then, the server starts anyway (/readyz reports the outage) and each
    worker tries again when it starts."""
    global _migrated
    from gpufs import config
    from gpufs.migrate import migrate

    settings = settings or config.from_env()
    if not settings["MIGRATE_ON_START"]:
        _migrated = True
        return
    try:
        applied = migrate(settings["DATABASE_URL"], int(settings["DB_CONNECT_TIMEOUT"]))
    except Exception as err:  # the server starts anyway, see above
        log.error("migrations not applied, database unreachable: %s", str(err).strip())
        _migrated = False
        return
    log.info("migrations: %s", ", ".join(applied) if applied else "schema is current")
    _migrated = True
