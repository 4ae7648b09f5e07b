"""The dashboard as deployed: token mode, a database outage, inside a host app, behind nginx under a sub-path."""
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest
from flask import Flask
from psycopg2.extensions import make_dsn, parse_dsn
from selenium.webdriver.common.by import By
from werkzeug.serving import make_server

from gpufs import create_app, init_app

from .browser import (
    OPENER,
    call,
    card_text,
    chrome,
    gunicorn,
    heartbeat,
    ok,
    register,
    requested_urls,
    shoot,
    tool_or_skip,
    wait_for,
)
from .conftest import free_port


@pytest.fixture
def driver(tmp_path, request):
    browser = chrome(tmp_path / "profile")
    yield browser
    shoot(browser, request.node.name)
    browser.quit()


def visible(driver, element_id):
    return driver.find_element(By.ID, element_id).is_displayed()


def test_token_mode_asks_for_a_key_rejects_a_wrong_one_and_keeps_it_in_the_session_only(
        driver, urls, app_config, tmp_path):
    user = str(700000 + uuid.uuid4().int % 100000)
    app = create_app({**app_config, "AUTH_MODE": "token"})
    result = app.test_cli_runner().invoke(args=["gpufs", "token", "create", "--user", user])
    app.extensions["gpufs"].close()
    key = result.stdout.strip().splitlines()[0].split(": ")[1]
    with gunicorn(urls, tmp_path, AUTH_MODE="token") as base:
        client_id = register(base, user, "token-box", key=key)
        heartbeat(base, client_id, [50], key=key)
        driver.get(f"{base}/dashboard/")
        wait_for(driver, lambda d: visible(d, "auth-key"))
        assert driver.find_element(By.ID, "auth-key").get_attribute("type") == "password"
        driver.find_element(By.ID, "auth-key").send_keys("not-a-key")
        driver.find_element(By.ID, "auth-user").send_keys(user)
        driver.find_element(By.CSS_SELECTOR, "#auth button[type=submit]").click()
        wait_for(driver, lambda d: d.find_element(By.ID, "auth-message").text.startswith("Key rejected"))
        assert driver.find_elements(By.CSS_SELECTOR, "#fleet > li") == []
        driver.find_element(By.ID, "auth-key").send_keys(key)
        driver.find_element(By.CSS_SELECTOR, "#auth button[type=submit]").click()
        wait_for(driver, lambda d: "token-box" in card_text(d, client_id))
        assert not visible(driver, "auth")
        assert driver.execute_script("return sessionStorage.getItem('gpufs.key')") == key
        assert driver.execute_script("return document.cookie + JSON.stringify(localStorage)") == "{}"
        assert not [u for u in requested_urls(driver) if key in u or "not-a-key" in u]
        assert key not in driver.current_url


class Outage:
    """A TCP relay in front of PostgreSQL that the test can cut and restore: a real outage seen
    through a real socket, without touching the shared database server."""

    def __init__(self, target):
        self.target = target  # (host, port), or the path of a Unix socket
        self.port = free_port()
        self.open = []
        self.listener = None
        self.restore()

    def restore(self):
        self.listener = socket.create_server(("127.0.0.1", self.port), reuse_port=False)
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def cut(self):
        try:
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept(), freeing the port
        except OSError:
            pass
        self.listener.close()
        for sock in self.open:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        self.open.clear()

    def _accept(self, listener):
        while True:
            try:
                near, _ = listener.accept()
            except OSError:
                return
            if isinstance(self.target, str):
                far = socket.socket(socket.AF_UNIX)
                far.connect(self.target)
            else:
                far = socket.create_connection(self.target)
            self.open += [near, far]
            for a, b in ((near, far), (far, near)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass


def test_error_banner_shows_a_database_outage_and_clears_when_it_is_back(driver, urls, server, tmp_path):
    user = "out" + uuid.uuid4().hex[:12]
    client_id = register(server, user, "outage-box")
    heartbeat(server, client_id, [50])
    dsn = parse_dsn(urls["DATABASE_URL"])
    host, port = dsn.get("host") or "127.0.0.1", dsn.get("port") or "5432"
    relay = Outage(f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, int(port)))
    relayed = make_dsn(**{**dsn, "host": "127.0.0.1", "port": str(relay.port)})
    try:
        # No Redis here: a cached answer would hide the outage the banner has to show.
        with gunicorn(urls, tmp_path, DATABASE_URL=relayed, REDIS_URL="", DB_CONNECT_TIMEOUT="2") as base:
            driver.get(f"{base}/dashboard/?user_id={user}")
            wait_for(driver, lambda d: "outage-box" in card_text(d, client_id))
            assert not visible(driver, "banner")
            relay.cut()
            wait_for(driver, lambda d: visible(d, "banner"))
            assert "Server unavailable (503)" in driver.find_element(By.ID, "banner").text
            assert "outage-box" in card_text(driver, client_id)  # the last figures stay, under the banner
            shoot(driver, "dashboard-outage")
            relay.restore()
            wait_for(driver, lambda d: not visible(d, "banner"))
    finally:
        relay.cut()


def test_dashboard_works_inside_a_host_app_under_its_prefix(driver, app_config, db):
    host = Flask(__name__)
    init_app(host, url_prefix="/portal/gpufs", config=app_config, dashboard_prefix="/portal/fleet")
    served = make_server("127.0.0.1", 0, host, threaded=True)
    thread = threading.Thread(target=served.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{served.server_port}"
    try:
        user = "host" + uuid.uuid4().hex[:8]
        client_id = uuid.uuid4().hex
        ok(call(base, "/portal/gpufs/user/insert_client", {"user_id": user, "client_id": client_id,
                                                           "client_status": "online", "name": "hosted-box"}))
        driver.get(f"{base}/portal/fleet/?user_id={user}")
        wait_for(driver, lambda d: "hosted-box" in card_text(d, client_id))
        assert {u.split("?")[0] for u in requested_urls(driver) if "/user/" in u} >= {
            f"{base}/portal/gpufs/user/client_status_list", f"{base}/portal/gpufs/user/client_stat"}
    finally:
        served.shutdown()
        served.server_close()
        host.extensions["gpufs"].close()


def test_dashboard_works_behind_nginx_under_a_sub_path(driver, server):
    nginx = tool_or_skip("nginx", "apt-get install nginx")
    prefix = Path(tempfile.mkdtemp(prefix="gpufs-nginx-"))
    prefix.chmod(0o755)
    (prefix / "temp").mkdir()
    (prefix / "temp").chmod(0o777)  # workers run as nobody when the test runs as root
    port = free_port()
    # The whole app under /gpu/, the prefix stripped and never told to the app.
    (prefix / "nginx.conf").write_text(f"""
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/temp/body;
    proxy_temp_path {prefix}/temp/proxy;
    fastcgi_temp_path {prefix}/temp/fastcgi;
    uwsgi_temp_path {prefix}/temp/uwsgi;
    scgi_temp_path {prefix}/temp/scgi;
    server {{
        listen 127.0.0.1:{port};
        location /gpu/ {{ proxy_pass {server}/; }}
        location / {{ return 404; }}
    }}
}}
""")
    proc = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", "stderr"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        user = "ngx" + uuid.uuid4().hex[:8]
        client_id = register(server, user, "proxied-box")
        driver.get(f"{base}/gpu/")
        wait_for(driver, lambda d: d.current_url == f"{base}/gpu/dashboard/")
        driver.get(f"{base}/gpu/dashboard/?user_id={user}")
        wait_for(driver, lambda d: "proxied-box" in card_text(d, client_id))
        assert f"{base}/gpu/api/user/client_status_list?user_id={user}" in requested_urls(driver)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(prefix, ignore_errors=True)


def test_shipped_nginx_site_serves_the_dashboard(server):
    from .test_nginx import start_nginx, stop_nginx
    tool_or_skip("nginx", "apt-get install nginx")
    prefix = Path(tempfile.mkdtemp(prefix="gpufs-nginx-"))
    proc, base = start_nginx(prefix, int(server.rsplit(":", 1)[1]))
    try:
        with OPENER.open(base + "/dashboard/", timeout=10) as resp:
            assert resp.status == 200 and resp.headers["Content-Security-Policy"].startswith("default-src 'self'")
            assert b'data-api="../api"' in resp.read()
        with OPENER.open(base + "/dashboard/static/board.js", timeout=10) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/javascript")
    finally:
        stop_nginx(proc)
        shutil.rmtree(prefix, ignore_errors=True)
