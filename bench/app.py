"""WSGI entry point for the benchmark only (`gunicorn -c deploy/gunicorn.conf.py bench.app:app`).

The product app plus one route the product must never have: GET /bench/redis-value answers
with one stored Redis value as the body, no validation and no envelope. Its rate is R, the
floor of any cached read: a Flask request plus one Redis round trip.
"""
from flask import Response

from bench import VALUE_KEY
from gpufs import create_app

app = create_app()


@app.get("/bench/redis-value")
def redis_value():
    # The cache's own Redis client (created after the fork, same timeouts), so R measures the same path.
    client = app.extensions["gpufs"].cache._redis()
    return Response(client.get(VALUE_KEY), mimetype="application/json")
