"""The envelope on every kind of failure, embedding in a host app, and the database going away."""
import socket
import threading
import time

import psycopg2
import pytest
from flask import Flask

from gpufs import create_app, init_app

from .conftest import assert_envelope, free_port, register


def test_unknown_route_under_api_is_enveloped_404(client):
    body = assert_envelope(client.get("/api/user/nope"), 404)
    assert body["message"] == "no such route"


def test_wrong_method_is_enveloped_405_with_allow(client):
    resp = client.get("/api/user/insert_client")
    body = assert_envelope(resp, 405)
    assert "POST" in resp.headers["Allow"]
    assert body["message"] == "method not allowed"


def test_body_over_limit_is_413(app_config):
    app = create_app({**app_config, "MAX_BODY_BYTES": 1000})
    resp = app.test_client().post("/api/user/insert_client", data=b'{"name": "' + b"x" * 2000 + b'"}',
                                  content_type="application/json")
    assert_envelope(resp, 413)


def test_default_body_limit_is_one_mebibyte(client):
    big = b'{"pad": "' + b"x" * (1024 * 1024) + b'"}'
    assert_envelope(client.post("/api/models/insert", data=big, content_type="application/json"), 413)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_post_without_json_content_type_is_415(client, content_type):
    kwargs = {"data": b'{"user_id": "1"}'}
    if content_type:
        kwargs["content_type"] = content_type
    body = assert_envelope(client.post("/api/user/insert_client", **kwargs), 415)
    assert "application/json" in body["message"]


@pytest.mark.parametrize("raw", [b"{", b"", b"{'a': 1}", b"[1, 2]", b'"text"', b"null"])
def test_malformed_or_non_object_json_is_400(client, raw):
    body = assert_envelope(client.post("/api/user/insert_client", data=raw, content_type="application/json"), 400)
    assert body["message"].startswith("body:")


def test_json_content_type_with_charset_is_accepted(client):
    resp = client.post("/api/user/insert_client", content_type="application/json; charset=utf-8",
                       data=b'{"user_id": "1", "client_id": "' + b"a" * 32 + b'", "client_status": "online",'
                            b' "name": "n"}')
    assert_envelope(resp, 200)


def test_success_envelope_shape(client):
    body = assert_envelope(client.get("/api/models/get"), 200)
    assert body["message"] == "Operation successful"


def test_cors_preflight_is_answered(client):
    resp = client.options("/api/user/client_list", headers={
        "Origin": "https://portal.example", "Access-Control-Request-Method": "GET"})
    assert resp.status_code == 200
    assert resp.headers["Access-Control-Allow-Origin"] == "*"


def test_cors_headers_answer_an_origin_only(client):
    browser = client.get("/api/models/get", headers={"Origin": "https://portal.example"})
    assert browser.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Origin" not in client.get("/api/models/get").headers  # curl, agents


def test_cors_origins_listed_are_answered_on_answers_and_errors_and_no_others(app_config, db):
    app = create_app({**app_config, "CORS_ORIGINS": "https://portal.example,https://ops.example"})
    try:
        client = app.test_client()
        portal = {"Origin": "https://portal.example"}
        preflight = client.options("/api/models/get", headers={**portal, "Access-Control-Request-Method": "GET"})
        assert preflight.headers["Access-Control-Allow-Origin"] == "https://portal.example"
        assert client.get("/api/models/get", headers=portal).headers["Access-Control-Allow-Origin"] == \
            "https://portal.example"
        error = client.get("/api/user/client_list", headers=portal)  # 400: user_id missing
        assert error.status_code == 400 and error.headers["Access-Control-Allow-Origin"] == "https://portal.example"
        for headers in ({"Origin": "https://evil.example"}, {}):
            assert "Access-Control-Allow-Origin" not in client.get("/api/models/get", headers=headers).headers
    finally:
        app.extensions["gpufs"].close()


# ---- embedding -----------------------------------------------------------------------------

def test_host_app_embeds_blueprints_under_its_prefix(app_config):
    host = Flask("portal")

    @host.get("/")
    def home():
        return "portal home"

    init_app(host, url_prefix="/fleet/api", config=app_config)
    c = host.test_client()
    assert c.get("/").data == b"portal home"
    assert_envelope(c.post("/fleet/api/models/insert", json={"name": "m", "version": "1", "version_code": 1,
                                                             "engine_type": 0}), 200)
    assert [m["name"] for m in c.get("/fleet/api/models/get").get_json()["data"]] == ["m"]
    assert_envelope(c.get("/fleet/api/user/client_list"), 400)
    assert_envelope(c.get("/fleet/api/nowhere"), 404)
    # The host's own 404 page is untouched: not our envelope.
    host_404 = c.get("/not-ours")
    assert host_404.status_code == 404 and host_404.mimetype == "text/html"
    assert c.get("/api/models/get").status_code == 404  # nothing registered at our default prefix
    assert c.get("/healthz").status_code == 404  # operational routes belong to the standalone server


def test_host_app_custom_404_handler_still_serves_host_pages(app_config):
    host = Flask("portal")

    @host.errorhandler(404)
    def not_found(err):
        return "host says no", 404

    init_app(host, url_prefix="/gpufs", config=app_config)
    c = host.test_client()
    assert c.get("/elsewhere").data == b"host says no"
    assert_envelope(c.get("/gpufs/missing"), 404)


# ---- database down -------------------------------------------------------------------------

class Proxy:
    """A TCP proxy to the test database that can be cut like a crashed server."""

    def __init__(self, target, port):
        self.target, self.port = target, port
        self.conns = []
        self.listener = None

    def _connect_target(self):
        family, address = self.target
        return socket.create_connection(address) if family == "tcp" else _unix(address)

    def start(self):
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.listener.listen(16)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def _accept(self, listener):
        while True:
            try:
                down, _ = listener.accept()
            except OSError:
                return
            up = self._connect_target()
            self.conns += [down, up]
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=_pipe, args=(a, b), daemon=True).start()

    def stop(self):
        self.listener.shutdown(socket.SHUT_RDWR)  # close() alone does not wake a blocked accept()
        self.listener.close()
        for s in self.conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self.conns = []


def _unix(path):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    return s


def _pipe(src, dst):
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass


def _proxied(url, port):
    params = psycopg2.extensions.parse_dsn(url)
    host = params.get("host") or "127.0.0.1"
    pg_port = int(params.get("port") or 5432)
    target = ("unix", f"{host}/.s.PGSQL.{pg_port}") if host.startswith("/") else ("tcp", (host, pg_port))
    params.update(host="127.0.0.1", port=str(port))
    return target, psycopg2.extensions.make_dsn(**params)


def test_database_stopped_mid_test_answers_503_then_recovers(db, urls, app_config):
    port = free_port()
    target, dsn = _proxied(urls["DATABASE_URL"], port)
    proxy = Proxy(target, port)
    proxy.start()
    app = create_app({**app_config, "DATABASE_URL": dsn, "REDIS_URL": "", "DB_CONNECT_TIMEOUT": 2})
    c = app.test_client()
    register(c)
    assert_envelope(c.get("/api/user/client_list?user_id=12"), 200)

    proxy.stop()
    for path in ("/api/user/client_list?user_id=12", "/api/models/get", "/api/user/client_stat?user_id=12"):
        started = time.monotonic()
        body = assert_envelope(c.get(path), 503)
        assert time.monotonic() - started < 3
        assert "psycopg2" not in body["message"] and "connection" not in body["message"].lower()
    assert_envelope(c.post("/api/user/insert_client", json={"user_id": "12", "client_id": "b" * 32,
                                                             "client_status": "online", "name": "x"}), 503)
    proxy.start()
    assert assert_envelope(c.get("/api/user/client_list?user_id=12"), 200)["data"]["total"] == 1
    proxy.stop()
    app.extensions["gpufs"].close()


def test_database_that_never_answers_gives_503_within_connect_timeout(app_config):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections at the TCP level, never speaks
    port = silent.getsockname()[1]
    app = create_app({**app_config, "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/x",
                      "REDIS_URL": "", "DB_CONNECT_TIMEOUT": 2})
    started = time.monotonic()
    assert_envelope(app.test_client().get("/api/models/get"), 503)
    assert time.monotonic() - started < 4
    silent.close()


def test_database_refusing_connections_gives_503(app_config):
    app = create_app({**app_config, "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{free_port()}/x",
                      "REDIS_URL": ""})
    assert_envelope(app.test_client().get("/api/user/client_list?user_id=1"), 503)
