"""Bearer-token auth (AUTH_MODE=token): who is calling, and may they act for this user?

A key of access_level 1 acts for its own user only; access_level -1 is an admin key.
Valid keys are remembered per process for AUTH_CACHE_SECONDS, so a revoked or expired key
stops working within that time without a database round trip on every request.
"""
import hashlib
import secrets
import threading
import time

from flask import g, request

from .db import get_db, queries
from .errors import Forbidden, Unauthorized
from .ext import state

ADMIN_LEVEL = -1


class Identity:
    def __init__(self, user_id, admin):
        self.user_id, self.admin = user_id, admin


class KeyCache:
    """key hash → (Identity, valid-until); thread-safe, bounded by the number of live keys."""

    def __init__(self, seconds):
        self.seconds = seconds
        self._entries = {}
        self._lock = threading.Lock()

    def get(self, digest):
        entry = self._entries.get(digest)
        if entry and entry[1] > time.monotonic():
            return entry[0]
        return None

    def put(self, digest, identity):
        with self._lock:
            if len(self._entries) > 10_000:
                self._entries.clear()
            self._entries[digest] = (identity, time.monotonic() + self.seconds)


def hash_key(key):
    return hashlib.sha256(key.encode()).hexdigest()


def new_key():
    """A 48-character secret and the public identifier stored in its place."""
    return secrets.token_hex(24), "gpufs-" + secrets.token_hex(21)


def authenticate():
    """before_request for the API: 401 unless a valid Bearer key is presented (token mode only)."""
    s = state()
    if s.config["AUTH_MODE"] != "token" or request.method == "OPTIONS":
        return
    header = request.headers.get("Authorization", "")
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key or len(key) > 128 or not key.isprintable():
        raise Unauthorized()
    digest = hash_key(key)
    identity = s.auth_cache.get(digest)
    if identity is None:
        row = queries.token_lookup(get_db(), key=key, key_hash=digest)
        if row is None:
            raise Unauthorized("authorization: unknown, expired or revoked key")
        identity = Identity(str(row["user_id"]), row["access_level"] == ADMIN_LEVEL)
        s.auth_cache.put(digest, identity)
    g.gpufs_identity = identity


def identity():
    return g.get("gpufs_identity")


def authorize_user(user_id):
    """403 unless the caller may act for `user_id` (always allowed when auth is off)."""
    who = identity()
    if who is not None and not who.admin and user_id is not None and str(user_id) != who.user_id:
        raise Forbidden("user_id: this key may only act for its own user")


def require_admin():
    who = identity()
    if who is not None and not who.admin:
        raise Forbidden("authorization: an admin key is required")


def may_report_for(owner, who=None):
    """May the caller (the request's key, or `who`: a key taken from another request) send
    heartbeats for a client owned by `owner`?"""
    who = who if who is not None else identity()
    return who is None or who.admin or who.user_id == str(owner)
