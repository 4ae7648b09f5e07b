"""Redis cache-aside for polled reads: never stale after a write, never required (see Cache)."""
import hashlib
import logging
import re
import secrets
import threading
import time

import orjson
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import metrics

log = logging.getLogger("gpufs.cache")
VERSION_SECONDS = 86400  # a version key left idle this long goes; a missing version is only a miss
_RUN_ID = re.compile(rb"^run_id:([0-9a-f]+)", re.M)


class Cache:
    """Values are versioned per scope. A cached read is stored prefixed with its scope's version, a
    random token; a write that changes the scope's data replaces the token (DEL then SET, one round
    trip), so older values no longer match. A read fetches the version and the value in one MGET,
    before it queries PostgreSQL: a read racing a write stores its result under the old token, a
    miss. Views that change with the clock alone (live status) use a short TTL.

    Two ways Redis could serve an old value after a write, and why it cannot:
    - Redis refuses writes (maxmemory under noeviction): the token's SET fails but its DEL does not
      (DEL frees memory, so Redis accepts it). A scope without a version is a miss for every worker
      until a reader can set a fresh token, i.e. until Redis takes writes again. Tokens are random,
      never reused, so no value of before can match the new one.
    - Redis restarts from a snapshot taken before the write (versions go back): every key carries
      the run_id of the Redis process that holds it, read when a connection is made. A restarted
      Redis has a new run_id, so nothing from the snapshot matches; a request whose command went
      out under the old run_id on a connection made meanwhile is treated as a miss.

    The scopes: a user's fleet views (user_scope), one client's views (client_scope) and the
    model catalogue. insert_client and edit_client_info replace the client's token and its
    user's; a stored report its client's and its owner's.

    Redis is optional: any failure is a miss answered from PostgreSQL, a warning at most once a
    minute, and Redis is not tried again for REDIS_RETRY_SECONDS. A scope whose token a write
    could not remove is kept in `_pending`, and this process removes it before its next read from
    Redis, so it always sees its own writes; other workers may serve the old value meanwhile, for
    at most one CACHE_TTL_SECONDS (docs/decisions.md).
    """

    def __init__(self, config):
        self.url = config["REDIS_URL"]
        self.ttl = int(config["CACHE_TTL_SECONDS"])
        self.live_ttl = min(int(config["CACHE_LIVE_TTL_SECONDS"]), int(config["ONLINE_WINDOW_SECONDS"]))
        self.timeout = float(config["REDIS_SOCKET_TIMEOUT"])
        self.backoff = float(config["REDIS_RETRY_SECONDS"])
        self.warn_every = 60.0
        self.stats = {"hit": 0, "miss": 0, "error": 0}
        self._client = None
        self._run_id = None  # of the Redis process the newest connection reached
        self._down_until = 0.0
        self._last_warning = 0.0
        self._pending = {}  # scope -> the sequence number of the latest failed invalidation of it
        self._sequence = 0
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
                retry=Retry(NoBackoff(), 1), retry_on_timeout=False, redis_connect_func=self._connected)
        return self._client

    def _connected(self, connection):
        """Every new connection learns which Redis process it reached, before any command of ours."""
        connection.on_connect()
        connection.send_command("INFO", "server")
        found = _RUN_ID.search(connection.read_response())
        if found is None:
            raise redis.RedisError("INFO server gave no run_id")
        self._run_id = found.group(1).decode()

    def _current_run(self, client):
        if self._run_id is None:
            client.ping()  # the first connection reads it
        return self._run_id

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

    def fetch(self, scope, name, args, produce, live=False):
        """Return (JSON bytes of `produce()`'s result, hit?) using the cache when it answers."""
        version = None
        if self._available():
            try:
                client = self._redis()
                if self._pending:
                    self._flush(client)
                run = self._current_run(client)
                key, version_key = _value_key(run, scope, name, args), _version_key(run, scope)
                # One round trip, no script: the scope's version and the value, stored as b"<version>:<json>".
                version, stored = client.mget(version_key, key)
                if version is None:  # a new scope, or one whose token a failed write removed
                    stored = None
                    pipe = client.pipeline(transaction=False)
                    pipe.set(version_key, secrets.token_hex(8), nx=True, ex=VERSION_SECONDS)
                    pipe.get(version_key)
                    version = pipe.execute()[1]
                if self._run_id != run:  # Redis restarted under this request: its answers may be old
                    version = stored = None
                elif stored is not None and stored.startswith(version + b":"):
                    value = stored[len(version) + 1:]
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
                self._redis().set(key, version + b":" + body, ex=self.live_ttl if live else self.ttl)
            except (redis.RedisError, OSError) as err:
                self._failed(err)
        return body, False

    def invalidate(self, *scopes):
        """Make every cached read of these scopes unreachable: a new token each, or none."""
        if not self.enabled or not scopes:
            return
        if not self._available():
            self._remember(scopes)
            return
        try:
            self._bump(self._redis(), set(scopes))
        except (redis.RedisError, OSError) as err:
            self._remember(scopes)
            self._failed(err)

    def _bump(self, client, scopes):
        """Replace the tokens of `scopes`; raises unless every old token is gone."""
        for _attempt in range(3):
            run = self._current_run(client)
            pipe = client.pipeline(transaction=False)
            for scope in scopes:
                pipe.delete(_version_key(run, scope))
                pipe.set(_version_key(run, scope), secrets.token_hex(8), ex=VERSION_SECONDS)
            results = pipe.execute(raise_on_error=False)
            if self._run_id == run:
                break  # else Redis restarted meanwhile: do it on the new one too
        else:
            raise redis.ConnectionError("redis restarted during every attempt")
        for result in results[::2]:  # the DELs
            if isinstance(result, Exception):
                raise result
        refused = [result for result in results if isinstance(result, Exception)]
        if refused:  # a SET refused (maxmemory): the scope has no token, a miss until Redis takes writes
            self._failed(refused[0])

    def _remember(self, scopes):
        with self._lock:
            self._sequence += 1
            for scope in scopes:
                self._pending[scope] = self._sequence

    def _flush(self, client):
        """Remove the tokens of the scopes whose invalidation failed; drop only the entries no
        other thread has renewed meanwhile (a write that failed during this one stays pending)."""
        with self._lock:
            pending = dict(self._pending)
        self._bump(client, set(pending))
        with self._lock:
            for scope, sequence in pending.items():
                if self._pending.get(scope) == sequence:
                    del self._pending[scope]

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


def _version_key(run, scope):
    return f"gpufs:ver:{run}:{scope}"


def _value_key(run, scope, name, args):
    # The scope is hashed with the arguments so that no user_id can forge another key's text.
    # `args` are validated arguments as they are: ids (bytes) in hex, dates as ISO text.
    material = orjson.dumps([scope, args], option=orjson.OPT_SORT_KEYS, default=_key_part)
    return f"gpufs:val:{run}:{name}:{hashlib.blake2b(material, digest_size=12).hexdigest()}"


def _key_part(value):
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"not a cache key part: {type(value).__name__}")


def _looks_like_json(value):
    # A cached value is always a JSON object or array that one SET wrote whole; anything else (a
    # foreign or cut-off value) is corruption, i.e. a miss. Both ends are checked, not the whole
    # value parsed: parsing a 36 kB client list cost a quarter of the hit's time.
    return bool(value) and (value[:1], value[-1:]) in ((b"{", b"}"), (b"[", b"]"))
