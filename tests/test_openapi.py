"""The OpenAPI document: valid OpenAPI 3, complete (every API route and method of the app), built
from the marshmallow schemas; and the Swagger UI page served from local files only."""
import re

import pytest
from flask import Flask
from openapi_spec_validator import validate

from gpufs import create_app, init_app

METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}


@pytest.fixture(scope="module")
def app(urls):
    """One app for the module: the document needs no rows, so no table is emptied for it."""
    return create_app({**urls, "MIGRATE_ON_START": False})


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def document(client):
    resp = client.get("/api/openapi.json")
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    return resp.get_json()


def openapi_path(rule):
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def test_openapi_document_is_valid_openapi_3(document):
    validate(document)
    assert document["openapi"].startswith("3.")


def test_openapi_document_is_bare_not_enveloped(document):
    assert "success" not in document and {"openapi", "info", "paths", "components"} <= set(document)


def test_every_api_route_of_the_app_is_documented_with_its_methods(app, document):
    api_rules = [r for r in app.url_map.iter_rules() if r.rule.startswith("/api/")]
    assert len(api_rules) >= 12
    for rule in api_rules:
        path = openapi_path(rule.rule)
        assert path in document["paths"], path
        for method in rule.methods & METHODS:
            op = document["paths"][path].get(method.lower())
            assert op is not None, f"{method} {path}"
            assert not op.get("x-undocumented"), f"{method} {path} has no declaration (gpufs.blueprints.endpoint)"
    assert not [p for p in document["paths"] if not p.startswith("/api/")]  # nothing outside the prefix


def test_query_parameters_come_from_the_schemas(document):
    params = {p["name"]: p for p in document["paths"]["/api/user/client_list"]["get"]["parameters"]}
    assert set(params) == {"user_id", "client_id", "status", "name", "valid_status"}
    assert params["user_id"]["required"] is True and params["user_id"]["in"] == "query"
    assert params["user_id"]["schema"]["maxLength"] == 32
    assert params["status"]["schema"]["enum"] == ["active", "online", "offline", "maintenance", "error"]
    assert params["client_id"]["schema"]["pattern"] == "^[0-9a-fA-F]{32}$"
    health = {p["name"] for p in document["paths"]["/api/user/client_health"]["get"]["parameters"]}
    assert {"user_id", "client_id", "start_date", "end_date", "limit", "before"} <= health


def test_request_bodies_and_success_envelopes_come_from_the_schemas(document):
    insert = document["paths"]["/api/user/insert_client"]["post"]
    ref = insert["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body = document["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    assert {"user_id", "client_id", "client_status", "name", "os_type"} <= set(body["properties"])
    assert set(body["required"]) == {"user_id", "client_id", "client_status", "name"}

    envelope = document["paths"]["/api/user/client_list"]["get"]["responses"]["200"]["content"][
        "application/json"]["schema"]
    assert set(envelope["required"]) == {"success", "data", "message", "timestamp"}
    listing = document["components"]["schemas"][envelope["properties"]["data"]["$ref"].rsplit("/", 1)[-1]]
    assert set(listing["properties"]) == {"total", "devices"}
    item = document["components"]["schemas"]["ClientItem"]["properties"]
    assert {"client_id", "client_name", "client_status", "os_type", "device_name", "tflops", "cpu_usage",
            "memory_usage", "storage_usage", "health", "last_online", "created_at", "uptime_days"} <= set(item)


def test_error_responses_are_the_envelope(document):
    responses = document["paths"]["/api/user/insert_client"]["post"]["responses"]
    assert {"200", "400", "409", "413", "415", "500", "503"} <= set(responses)
    error = document["components"]["schemas"]["ErrorEnvelope"]
    assert error["properties"]["success"]["enum"] == [False]
    assert document["components"]["responses"]["Error400"]["content"]["application/json"]["schema"] == \
        {"$ref": "#/components/schemas/ErrorEnvelope"}


def test_token_mode_documents_bearer_auth(app_config):
    c = create_app({**app_config, "AUTH_MODE": "token"}).test_client()
    doc = c.get("/api/openapi.json").get_json()  # public, like the docs page: no key needed
    validate(doc)
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert "401" in doc["paths"]["/api/models/get"]["get"]["responses"]
    assert c.get("/api/docs").status_code == 200
    assert c.get("/api/docs/swagger-ui.css", buffered=True).status_code == 200
    assert c.get("/api/models/get").status_code == 401


def test_docs_page_uses_only_local_assets(client):
    resp = client.get("/api/docs")
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    page = resp.get_data(as_text=True)
    assert "/api/openapi.json" in page and "validatorUrl: null" in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # nothing from another host
    for asset in re.findall(r'(?:src|href)="([^"]+)"', page):
        got = client.get(asset, buffered=True)
        assert got.status_code == 200 and len(got.data) > 100, asset


def test_docs_asset_outside_the_bundle_is_an_enveloped_404(client):
    resp = client.get("/api/docs/../../../etc/passwd")
    assert resp.status_code == 404
    assert client.get("/api/docs/nope.js").get_json()["success"] is False


def test_embedded_app_serves_its_document_under_its_prefix(app_config):
    host = Flask("portal")

    @host.get("/")
    def home():
        return "portal"

    init_app(host, url_prefix="/fleet/api", config=app_config)
    c = host.test_client()
    doc = c.get("/fleet/api/openapi.json").get_json()
    validate(doc)
    assert "/fleet/api/user/client_list" in doc["paths"] and "/" not in doc["paths"]
    assert "/fleet/api/openapi.json" in c.get("/fleet/api/docs").get_data(as_text=True)
