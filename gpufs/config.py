"""Configuration: defaults in one place, overridden by the environment, then by test_config."""
import os

DEFAULTS = {
    "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/gpufs",
    "REDIS_URL": "",  # empty: no cache, every read goes to PostgreSQL
    "GPUFS_BIND": "127.0.0.1:18081",
    "GPUFS_URL_PREFIX": "/api",
    "DB_CONNECT_TIMEOUT": 3,
    "DB_STATEMENT_TIMEOUT_MS": 15000,
    "DB_POOL_MAX": 8,
    "ONLINE_WINDOW_SECONDS": 120,
    "HEARTBEAT_INTERVAL_SECONDS": 120,
    "TEMP_WARNING_C": 85,
    "CACHE_TTL_SECONDS": 30,
    "CACHE_LIVE_TTL_SECONDS": 5,
    "FLEET_METRICS_CACHE_SECONDS": 30,  # /metrics/fleet: rendered ahead this often per scraped scope and worker
    "REDIS_SOCKET_TIMEOUT": 0.1,
    "REDIS_RETRY_SECONDS": 1.0,  # after a Redis failure, go straight to PostgreSQL this long
    "AUTH_MODE": "none",
    "AUTH_CACHE_SECONDS": 30,
    "MAX_BODY_BYTES": 1024 * 1024,
    "MAX_BATCH_REPORTS": 1000,
    "CORS_ORIGINS": "",  # empty: "*" when AUTH_MODE=none, no CORS otherwise
    "HEARTBEAT_RETENTION_DAYS": 90,
    "GPU_HISTORY_RAW_DAYS": 14,  # per-GPU samples, dropped a day's partition at a time
    "GPU_HISTORY_HOURLY_DAYS": 400,  # their hourly rollups, dropped a month's partition at a time
    "LOG_FORMAT": "text",
    "LOG_LEVEL": "INFO",
    "MIGRATE_ON_START": True,
    "BACKGROUND_TASKS": True,  # periodic work (one leader across workers and hosts): gpufs/tasks.py
    "ALERT_EVAL_SECONDS": 15,
    "ALERT_ALLOW_PRIVATE_TARGETS": False,  # let alert URLs reach loopback and private networks
}


def _coerce(default, raw):
    if isinstance(default, bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return raw


def from_env(environ=None):
    """Return the defaults with every key present in the environment overriding its default."""
    environ = os.environ if environ is None else environ
    config = dict(DEFAULTS)
    for key, default in DEFAULTS.items():
        if key in environ:
            config[key] = _coerce(default, environ[key])
    return config
