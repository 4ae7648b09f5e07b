"""Redis cache-aside for polled reads: never stale after a write, never required.

Values are versioned per scope: every cached read is stored prefixed with its scope's
current version number, and every write that changes the scope's data increments the
number with one INCR. A read fetches the version and the value in one MGET and uses the
value only if its prefix is the current version. Nothing is deleted or scanned, so a busy
fleet's heartbeats cost one O(1) INCR per scope per request rather than a flush storm, and
a read racing a write can only store its result under the old version, which is a miss.
Views that change with the clock alone (live status) use a short TTL, well inside the
online window.

The scopes: a user's fleet views (user_scope), one client's views (client_scope) and the
model catalogue. A view of one client depends on that client's rows only, so it has a
scope of its own: with a hundred clients reporting every two minutes, the user's version
moves about once a second and a fleet-wide scope would make a client's page poll always
miss. insert_client and edit_client_info bump the client's scope and its user's; a stored
report bumps its client's and its owner's.

Redis is optional: any Redis failure (down, slow, garbage) is a miss; the request is
answered from PostgreSQL, a warning is logged at most once per interval, and Redis is
not tried again for a short back-off so an outage does not add a timeout to each call.
Version bumps that fail are remembered and replayed when Redis answers again.
"""
import hashlib
import logging
import threading
import time

import orjson
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import metrics

log = logging.getLogger("gpufs.cache")


class Cache:
    def __init__(self, config):
        self.url = config["REDIS_URL"]
        self.ttl = int(config["CACHE_TTL_SECONDS"])
        self.live_ttl = min(int(config["CACHE_LIVE_TTL_SECONDS"]), int(config["ONLINE_WINDOW_SECONDS"]))
        self.timeout = float(config["REDIS_SOCKET_TIMEOUT"])
        self.backoff = float(config["REDIS_RETRY_SECONDS"])
        self.warn_every = 60.0
        self.stats = {"hit": 0, "miss": 0, "error": 0}
        self._client = None
        self._down_until = 0.0
        self._last_warning = 0.0
        self._pending = set()
        self._lock = threading.Lock()

    @property
    def enabled(self):
        return bool(self.url)

    def _redis(self):
        if self._client is None:
            self._client = redis.Redis.from_url(
                self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout,
                # One immediate retry heals a connection dropped by a Redis restart; the
                # library's default (several retries with second-long backoff) would stall requests.
                retry=Retry(NoBackoff(), 1), retry_on_timeout=False)
        return self._client

    def _available(self):
        return self.enabled and time.monotonic() >= self._down_until

    def _failed(self, err):
        now = time.monotonic()
        metrics.CACHE_ERRORS.inc()
        with self._lock:
            self.stats["error"] += 1
            self._down_until = now + self.backoff
            if now - self._last_warning >= self.warn_every:
                self._last_warning = now
                log.warning("redis unavailable, serving from PostgreSQL: %s", err)

    def _replay_pending(self, client):
        with self._lock:
            scopes, self._pending = self._pending, set()
        if scopes:
            pipe = client.pipeline(transaction=False)
            for scope in scopes:
                pipe.incr(_version_key(scope))
            pipe.execute()

    def fetch(self, scope, name, args, produce, live=False):
        """Return (JSON bytes of `produce()`'s result, hit?) using the cache when it answers."""
        key = _value_key(scope, name, args)
        version = None
        if self._available():
            try:
                client = self._redis()
                if self._pending:
                    self._replay_pending(client)
                # One round trip, no script: the scope's version and the value, stored as b"<version>:<json>";
                # a value written under an older version is a miss.
                version, stored = client.mget(_version_key(scope), key)
                version = (version or b"0") + b":"
                if stored is not None and stored.startswith(version):
                    value = stored[len(version):]
                    if _looks_like_json(value):
                        self.stats["hit"] += 1
                        metrics.CACHE_HITS.inc()
                        return value, True
            except (redis.RedisError, OSError, ValueError, TypeError) as err:
                self._failed(err)
                version = None
        self.stats["miss"] += 1
        metrics.CACHE_MISSES.inc()
        body = produce()
        if version is not None:
            try:
                self._redis().set(key, version + body, ex=self.live_ttl if live else self.ttl)
            except (redis.RedisError, OSError) as err:
                self._failed(err)
        return body, False

    def invalidate(self, *scopes):
        """Make every cached read of these scopes unreachable (one INCR each)."""
        if not self.enabled or not scopes:
            return
        if not self._available():
            with self._lock:
                self._pending.update(scopes)
            return
        try:
            client = self._redis()
            pipe = client.pipeline(transaction=False)
            for scope in set(scopes) | self._pending:
                pipe.incr(_version_key(scope))
            pipe.execute()
            self._pending.clear()
        except (redis.RedisError, OSError) as err:
            with self._lock:
                self._pending.update(scopes)
            self._failed(err)

    def close(self):
        """Drop the Redis connections (the client is rebuilt on next use)."""
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def ping(self):
        if not self.enabled:
            return "disabled"
        try:
            self._redis().ping()
            return "ok"
        except (redis.RedisError, OSError) as err:
            self._failed(err)
            return "down"


def user_scope(user_id):
    """The views of a user's whole fleet: client_list, client_status_list, client_stat, client_monitor."""
    return f"user:{user_id}"


def client_scope(client_id):
    """The views of one client (`client_id` as bytes): client_device_detail, client_monitor of it."""
    return f"client:{client_id.hex()}"


def _version_key(scope):
    return f"gpufs:ver:{scope}"


def _value_key(scope, name, args):
    # The scope is hashed with the arguments so that no user_id can forge another key's text.
    # `args` are validated arguments as they are: ids (bytes) in hex, dates as ISO text.
    material = orjson.dumps([scope, args], option=orjson.OPT_SORT_KEYS, default=_key_part)
    return f"gpufs:val:{name}:{hashlib.blake2b(material, digest_size=12).hexdigest()}"


def _key_part(value):
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"not a cache key part: {type(value).__name__}")


def _looks_like_json(value):
    # A cached value is always a JSON object or array that one SET wrote whole; anything else (a
    # foreign or cut-off value) is corruption, i.e. a miss. Both ends are checked, not the whole
    # value parsed: parsing a 36 kB client list cost a quarter of the hit's time.
    return bool(value) and (value[:1], value[-1:]) in ((b"{", b"}"), (b"[", b"]"))
