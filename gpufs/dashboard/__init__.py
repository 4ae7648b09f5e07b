"""The web dashboard: a few pages and plain ES modules that call only the public JSON API.

Every URL a page uses is relative to the page (the pages sit side by side under the mount
prefix), so the same files work at /dashboard, under a host app's prefix, and behind a proxy
that serves the whole app under a sub-path without telling it.
"""
import posixpath

from flask import Blueprint, render_template

from ..db import state

bp = Blueprint("gpufs_dashboard", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static")

# No inline script or style anywhere, so the policy can be this strict: nothing but our own files.
POLICY = "default-src 'self'; base-uri 'self'; form-action 'self'; frame-ancestors 'self'"
PAGES = {"board": "Fleet", "client": "Client", "models": "Models", "alerts": "Alerts"}


def default_prefix(api_prefix):
    """`<api prefix>/../dashboard`: /dashboard beside /api."""
    return posixpath.normpath(posixpath.join(api_prefix or "/", "..", "dashboard"))


def mount(app, api_prefix, prefix):
    """Register the pages under `prefix`; the API they call lives under `api_prefix`."""
    app.register_blueprint(bp, url_prefix=prefix.rstrip("/"))
    app.extensions["gpufs"].dashboard_prefix = prefix.rstrip("/")
    app.extensions["gpufs"].dashboard_api = posixpath.relpath(api_prefix or "/", prefix.rstrip("/") or "/")


def _page(name):
    s = state()
    return render_template(f"dashboard/{name}.html", page=name, pages=PAGES, api=s.dashboard_api,
                           auth_mode=s.config["AUTH_MODE"], temp_warning=s.config["TEMP_WARNING_C"])


@bp.get("/")
def board():
    return _page("board")


@bp.get("/client")
def client():
    return _page("client")


@bp.get("/models")
def models():
    return _page("models")


@bp.get("/alerts")
def alerts():
    return _page("alerts")


@bp.after_request
def _headers(response):
    response.headers["Content-Security-Policy"] = POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    return response
