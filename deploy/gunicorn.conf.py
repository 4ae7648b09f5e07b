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
# gthread, except that a worker whose threads are all busy leaves a new connection to one with
# a thread free (gpufs/worker.py): stock gthread lets one worker take every keep-alive connection.
worker_class = "gpufs.worker.Worker"
# SIGTERM: stop accepting, let in-flight requests (a long client_health stream, a batch of
# reports in its transaction) finish for up to this long, then exit.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
keepalive = 5  # nginx keeps upstream connections open (upstream keepalive); reuse them a while
accesslog = None  # gpufs logs one line per request itself, with the request id
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()
# X-Forwarded-Proto from nginx on the same host decides https in generated URLs.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
proc_name = "gpufs"
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


def on_starting(server):
    # Samples left by a previous run would be added to this run's counters: start clean.
    for path in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "*.db")):
        os.remove(path)
    _migrate(server)


def on_reload(server):
    _migrate(server)  # new code on SIGHUP may bring new migrations


def post_worker_init(worker):
    # After the fork: every worker offers to lead the periodic tasks; one PostgreSQL advisory lock
    # lets exactly one of them (across hosts too) run them.
    state = getattr(worker.wsgi, "extensions", {}).get("gpufs")
    if state is not None:
        state.start_tasks()


def child_exit(server, worker):
    from prometheus_client import multiprocess
    multiprocess.mark_process_dead(worker.pid)  # its live gauges (pool in use) leave the sum


def on_exit(server):
    if _OWN_METRICS_DIR:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def _migrate(server):
    """Apply migrations once, in the master, rather than racing them in every worker.

    On success the workers skip their own attempt; if PostgreSQL is down now, they try again
    when they start (and /readyz reports the outage meanwhile).
    """
    from gpufs import config
    from gpufs.migrate import migrate

    settings = config.from_env()
    if not settings["MIGRATE_ON_START"] and not os.environ.get("GPUFS_MASTER_MIGRATED"):
        return
    try:
        applied = migrate(settings["DATABASE_URL"], int(settings["DB_CONNECT_TIMEOUT"]))
    except Exception as err:  # the server starts anyway, see above
        log.error("migrations not applied in the master, workers will retry: %s", str(err).strip())
        os.environ.pop("GPUFS_MASTER_MIGRATED", None)
        os.environ["MIGRATE_ON_START"] = "true"
        return
    log.info("migrations: %s", ", ".join(applied) if applied else "schema is current")
    os.environ["GPUFS_MASTER_MIGRATED"] = "1"
    os.environ["MIGRATE_ON_START"] = "false"
