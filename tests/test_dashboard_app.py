"""The dashboard as the app serves it: where it is mounted, its security headers, the page's config."""
import re

from flask import Flask

from gpufs import init_app

POLICY = "default-src 'self'"


def test_root_redirects_to_the_dashboard_with_a_relative_location(client):
    resp = client.get("/")
    assert resp.status_code == 302
    assert resp.headers["Location"] == "dashboard/"  # relative: right under any proxy sub-path too


def test_every_dashboard_page_and_file_has_a_strict_policy(client):
    for path in ("/dashboard/", "/dashboard/client", "/dashboard/models", "/dashboard/alerts",
                 "/dashboard/static/board.js", "/dashboard/static/dashboard.css"):
        with client.get(path) as resp:  # a file's response holds the file open until closed
            assert resp.status_code == 200, path
            assert resp.headers["Content-Security-Policy"].startswith(POLICY + ";"), path
            assert resp.headers["X-Content-Type-Options"] == "nosniff"


def test_pages_have_no_inline_script_or_style_and_only_relative_urls(client):
    for page in ("", "client", "models", "alerts"):
        html = client.get(f"/dashboard/{page}").get_data(as_text=True)
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), page
        assert "<style" not in html and " style=" not in html and " on" + "click=" not in html
        assert not re.search(r'(src|href)="(/|https?:)', html), page


def test_page_tells_the_script_where_the_api_is_and_the_auth_mode(client):
    html = client.get("/dashboard/").get_data(as_text=True)
    assert 'data-api="../api"' in html and 'data-auth-mode="none"' in html and 'data-temp-warning="85"' in html


def test_token_mode_page_asks_for_a_key(app_config, db):
    from gpufs import create_app
    app = create_app({**app_config, "AUTH_MODE": "token"})
    html = app.test_client().get("/dashboard/").get_data(as_text=True)
    assert 'data-auth-mode="token"' in html and 'type="password"' in html
    app.extensions["gpufs"].close()


def test_dashboard_mounts_in_a_host_app_under_its_prefix(app_config, db):
    host = Flask(__name__)

    @host.errorhandler(404)
    def host_404(err):
        return "host page not found", 404

    init_app(host, url_prefix="/portal/gpufs", config=app_config, dashboard_prefix="/portal/fleet")
    client = host.test_client()
    html = client.get("/portal/fleet/").get_data(as_text=True)
    assert 'data-api="../gpufs"' in html  # /portal/fleet/ + ../gpufs = /portal/gpufs
    with client.get("/portal/fleet/static/api.js") as resp:
        assert resp.status_code == 200
    assert client.get("/portal/fleet/nope").get_data(as_text=True) == "host page not found"
    assert client.get("/dashboard/").status_code == 404
    host.extensions["gpufs"].close()


def test_default_prefix_sits_beside_the_api(app_config, db):
    host = Flask(__name__)
    init_app(host, url_prefix="/v1/gpu", config=app_config)
    assert host.test_client().get("/v1/dashboard/").status_code == 200
    host.extensions["gpufs"].close()


def test_dashboard_prefix_none_mounts_nothing(app_config, db):
    host = Flask(__name__)
    init_app(host, config=app_config, dashboard_prefix=None)
    assert host.test_client().get("/dashboard/").status_code == 404
    assert not any(rule.endpoint.startswith("gpufs_dashboard") for rule in host.url_map.iter_rules())
    host.extensions["gpufs"].close()
