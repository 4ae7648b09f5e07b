"""WSGI entry point for the benchmark only (`gunicorn -c deploy/gunicorn.conf.py bench.app:app`).

The product app, untouched, plus three things it must never have: GET /bench/redis-value answers
with one stored Redis value as the body, no validation and no envelope (R, the floor of any cached
read: a Flask request plus one Redis round trip); GET /bench/flask/floor, a constant answered by a
bare Flask app with no hooks (Flask's own floor); and a timer around the whole WSGI app (figure 3's
server-side time). Nothing inside the product is wrapped: the SQL is timed from outside
(bench/direct.py).
"""
import time

import redis
from flask import Flask, Response
from prometheus_client import Summary
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.wsgi import ClosingIterator

from bench import VALUE_KEY
from gpufs import create_app

app = create_app()

SERVER_SECONDS = Summary(
    "gpufs_bench_server_seconds",
    "Bench only: from the WSGI call to the response's close, by path: all of the app's work for a "
    "request (Flask, hooks, logging included) without HTTP parsing and the network.", ["path"])


class _Timed:
    def __init__(self, wsgi):
        self.wsgi = wsgi

    def __call__(self, environ, start_response):
        began = time.perf_counter()
        path = environ.get("PATH_INFO", "")

        def done():
            SERVER_SECONDS.labels(path).observe(time.perf_counter() - began)

        # gunicorn closes the response after writing its last byte: a streamed answer is timed whole.
        return ClosingIterator(self.wsgi(environ, start_response), done)


floor = Flask("gpufs_bench_floor")


@floor.get("/floor")
def constant():
    return Response(b'{"status":"ok"}', mimetype="application/json")


app.wsgi_app = _Timed(DispatcherMiddleware(app.wsgi_app, {"/bench/flask": floor.wsgi_app}))


_redis = []  # made in the worker on first use: a connection must not cross gunicorn's fork


@app.get("/bench/redis-value")
def redis_value():
    # A client of its own on the server's REDIS_URL: the cache's client is the product's business.
    if not _redis:
        _redis.append(redis.Redis.from_url(app.config["REDIS_URL"], socket_timeout=2))
    return Response(_redis[0].get(VALUE_KEY), mimetype="application/json")
