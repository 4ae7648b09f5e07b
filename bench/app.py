"""WSGI entry point for the benchmark only (`gunicorn -c deploy/gunicorn.conf.py bench.app:app`).

The product app plus four things the product must never have: GET /bench/redis-value answers
with one stored Redis value as the body, no validation and no envelope (its rate is R, the
floor of any cached read: a Flask request plus one Redis round trip); GET /bench/flask/floor,
a constant answered by a bare Flask app with no hooks (Flask's own server-side floor, for
figure 3); a timer around the whole WSGI app (figure 3's server-side time); and a timer around
gpufs.db's statements and fetches (the part of that time the database and the driver took).
"""
import functools
import threading
import time

from flask import Flask, Response
from prometheus_client import Summary
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.wsgi import ClosingIterator

from bench import VALUE_KEY
from gpufs import create_app, db

app = create_app()

SERVER_SECONDS = Summary(
    "gpufs_bench_server_seconds",
    "Bench only: from the WSGI call to the response's close, by path: all of the app's work for a "
    "request (Flask, hooks, logging included) without HTTP parsing and the network.", ["path"])
SQL_SECONDS = Summary(
    "gpufs_bench_sql_seconds",
    "Bench only: of that time, what a request spent in gpufs.db.execute and fetching rows, by path.", ["path"])
_sql = threading.local()  # a gthread worker runs each request, its body included, on one thread


def _timed(fn):
    @functools.wraps(fn)
    def timed(*args, **kwargs):
        began = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _sql.seconds += time.perf_counter() - began
    return timed


# The reads' statements go through these (db.all_rows, db.one_row, db.dumped_rows look them up
# at each call).
db.execute = _timed(db.execute)
db.Cursor.fetchall = _timed(db.Cursor.fetchall)
db.Cursor.tuples = _timed(db.Cursor.tuples)


class _Timed:
    def __init__(self, wsgi):
        self.wsgi = wsgi

    def __call__(self, environ, start_response):
        began = time.perf_counter()
        path = environ.get("PATH_INFO", "")
        _sql.seconds = 0.0

        def done():
            SERVER_SECONDS.labels(path).observe(time.perf_counter() - began)
            SQL_SECONDS.labels(path).observe(_sql.seconds)

        # gunicorn closes the response after writing its last byte: a streamed answer is timed whole.
        return ClosingIterator(self.wsgi(environ, start_response), done)


floor = Flask("gpufs_bench_floor")


@floor.get("/floor")
def constant():
    return Response(b'{"status":"ok"}', mimetype="application/json")


app.wsgi_app = _Timed(DispatcherMiddleware(app.wsgi_app, {"/bench/flask": floor.wsgi_app}))


@app.get("/bench/redis-value")
def redis_value():
    # The cache's own Redis client (created after the fork, same timeouts), so R measures the same path.
    client = app.extensions["gpufs"].cache._redis()
    return Response(client.get(VALUE_KEY), mimetype="application/json")
