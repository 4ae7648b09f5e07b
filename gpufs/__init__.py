"""gpuf-s API server: create_app() for standalone use, init_app() to embed in a host Flask app."""
import functools
import logging
from datetime import datetime, timezone

from flask import Flask, redirect, request
from flask_cors import CORS

from . import config as config_module
from . import errors, ingest, logs, metrics
from .auth import KeyCache, authenticate
from .blueprints import ops
from .cache import Cache
from .db import Pool, close_db
from .group_commit import GroupCommit
from .tasks import Leader

log = logging.getLogger("gpufs")


class State:
    """Everything the extension keeps per app, found at app.extensions["gpufs"]."""

    def __init__(self, config, prefix):
        self.config = config
        self.prefix = prefix
        self.pool = Pool(config)
        self.cache = Cache(config)
        self.auth_cache = KeyCache(int(config["AUTH_CACHE_SECONDS"]))
        self.reports = GroupCommit(ingest.write_group)  # POST /heartbeat: single reports, written together
        self.tasks = []  # tasks.Task: periodic work each feature adds in init_app, run by one leader
        self.leader = None
        self.fleet_scrapes = None  # fleet_metrics.Scrapes, made on the first /metrics/fleet
        self.clock = functools.partial(datetime.now, timezone.utc)  # "now" of the reads; tests fix it

    def start_tasks(self):
        """Start this process's background-task thread (gunicorn's post_worker_init calls it, after
        the fork; an embedding host calls it once per process the same way)."""
        if self.leader is None and self.config["BACKGROUND_TASKS"]:
            self.leader = Leader(self.config["DATABASE_URL"], self.tasks, self.config["DB_CONNECT_TIMEOUT"])
            self.leader.start()

    def close(self):
        """Close database and Redis connections (both reopen lazily if used again)."""
        if self.leader is not None:
            self.leader.stop()
            self.leader = None
        if self.fleet_scrapes is not None:
            self.fleet_scrapes.stop()
            self.fleet_scrapes = None
        self.pool.reset()
        self.cache.close()


AUTO = "<url_prefix>/../dashboard"


def init_app(app, url_prefix=None, config=None, dashboard_prefix=AUTO):
    """Register the API blueprints under `url_prefix` (default "/api") on any Flask app, and the
    dashboard under `dashboard_prefix` (default beside the API, e.g. /dashboard; None: no dashboard)."""
    from . import alerts, dashboard, history, openapi
    from .blueprints import alerts as alert_views  # noqa: F401 (adds views to user)
    from .blueprints import client, models, monitor, user  # noqa: F401 (monitor adds views to user)
    from .blueprints import history as history_views  # noqa: F401 (adds device_history to user)
    from .cli import gpufs_cli

    settings = config_module.from_env()
    settings.update({k: app.config[k] for k in settings if k in app.config})
    settings.update(config or {})
    prefix = (url_prefix if url_prefix is not None else settings["GPUFS_URL_PREFIX"]).rstrip("/")
    state = State(settings, prefix)
    app.extensions["gpufs"] = state
    state.tasks.append(history.task(settings))
    alerts.init_app(state)

    app.register_blueprint(user.bp, url_prefix=prefix + "/user")
    app.register_blueprint(models.bp, url_prefix=prefix + "/models")
    app.register_blueprint(client.bp, url_prefix=prefix + "/client")
    app.register_blueprint(openapi.bp, url_prefix=prefix)
    if dashboard_prefix is not None:
        dashboard.mount(app, prefix, dashboard.default_prefix(prefix) if dashboard_prefix is AUTO else dashboard_prefix)
    app.teardown_appcontext(close_db)
    errors.register(app, prefix or "/")
    app.cli.add_command(gpufs_cli)

    public = {prefix + "/openapi.json", prefix + "/docs"}

    @app.before_request
    def _guard():
        if request.path.startswith(prefix + "/"):
            request.max_content_length = int(settings["MAX_BODY_BYTES"])
            if request.path not in public and not request.path.startswith(prefix + "/docs/"):
                authenticate()

    origins = settings["CORS_ORIGINS"] or ("*" if settings["AUTH_MODE"] == "none" else "")
    if origins:
        # always_send=False: CORS headers only for requests that carry an Origin (browsers always
        # send it across origins), none for curl, agents and server-side pollers.
        CORS(app, resources={prefix + "/*": {"origins": "*" if origins == "*" else origins.split(",")}},
             send_wildcard=origins == "*", supports_credentials=False, always_send=False)
    return state


def create_app(test_config=None):
    """The standalone server: the API under /api plus the operational endpoints."""
    app = Flask(__name__)
    settings = config_module.from_env()
    settings.update(test_config or {})
    app.config.update(settings)
    logs.configure(settings)
    logs.install(app)  # first, so every request is timed and given its id before the token check runs
    state = init_app(app, config=settings)
    app.register_blueprint(ops.bp)  # /healthz, /readyz, /metrics: the standalone server's, not a host's
    # Relative, so it also lands right behind a proxy that serves the app under a sub-path.
    home = state.dashboard_prefix.lstrip("/") + "/"
    app.add_url_rule("/", "gpufs_home", lambda: redirect(home))
    metrics.observe_pool(state.pool)  # each gunicorn worker publishes its pool size as it boots
    state.pool.on_change = metrics.pool_changed
    _warn_if_exposed(settings)
    # No migration here: app.py builds the app for every `flask` command too. gunicorn's master
    # migrates at start-up (deploy/gunicorn.conf.py); `flask --app app gpufs migrate` otherwise.
    return app


def _warn_if_exposed(settings):
    host = settings["GPUFS_BIND"].rsplit(":", 1)[0].strip("[]")
    if settings["AUTH_MODE"] == "none" and host not in ("127.0.0.1", "localhost", "::1") \
            and not host.startswith("127.") and not host.startswith("unix"):
        log.warning("!!! AUTH_MODE=none while bound to %s: anyone who can reach this port can read and change "
                    "every user's fleet. Set AUTH_MODE=token or bind to 127.0.0.1 behind nginx. !!!", host)
