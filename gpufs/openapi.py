"""The OpenAPI 3 document, built with apispec from the marshmallow schemas, and its Swagger UI page.

Served under the API prefix by init_app: <prefix>/openapi.json (a bare document, the one
response under the prefix that is not the envelope) and <prefix>/docs, whose scripts and
styles come from the swagger-ui-bundle package: the page fetches nothing from the internet.
"""
import re
from dataclasses import dataclass

import orjson
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Response, current_app, request, send_from_directory, url_for
from markupsafe import escape

from . import schemas
from .ext import state

bp = Blueprint("gpufs_openapi", __name__)
API_VERSION = "1.0.0"
BODY_MEDIA = "application/json"


@dataclass(frozen=True)
class Op:
    """How one endpoint is documented, attached to its view by `describe`: its input schema, the
    `data` of its success envelope (a schema class, a list of them with many=True, or a plain
    OpenAPI schema dict) and, for the few answers that are not the envelope, their media type."""

    summary: str
    query: type | None = None
    body: type | None = None
    data: object = None
    many: bool = False
    conflict: bool = False
    media: str | None = None  # set: a bare (not enveloped) answer of this type, schema `data`


def describe(summary, **kwargs):
    """A decorator attaching an endpoint's declaration (an Op) to its view, where build() reads it."""
    def attach(view):
        view.openapi = Op(summary, **kwargs)
        return view
    return attach


EMPTY_LIST = {"type": "array", "maxItems": 0, "items": {}}
NULL = {"nullable": True, "enum": [None], "description": "always null"}

TAGS = {  # in the order the page shows them
    "user": "Client registry and fleet monitoring (the published API)",
    "models": "Model catalogue (the published API)",
    "client": "Heartbeat ingestion from the GPU machines",
    "docs": "This documentation",
}
ERRORS = {
    "400": "Invalid input: `message` names each field and what was expected, joined by `; `",
    "404": "No such client for this user, or no such route",
    "405": "Method not allowed",
    "409": "Conflict: owned by another user, or version_code taken",
    "413": "Body larger than MAX_BODY_BYTES",
    "415": "Body is not application/json",
    "500": "Internal error (details only in the server log)",
    "503": "PostgreSQL unreachable or timed out: try again shortly",
}


def build(app, prefix):
    """The OpenAPI document of every gpufs route registered on `app` under `prefix`."""
    spec = APISpec(title="gpuf-s API", version=API_VERSION, openapi_version="3.0.3",
                   plugins=[_Plugin()],
                   info={"description": "GPU fleet status: clients, heartbeats, monitoring and models. "
                                        "Every response under the prefix is the envelope "
                                        "{success, data, message, timestamp}."})
    for name, text in TAGS.items():
        spec.tag({"name": name, "description": text})
    spec.components.schema("ErrorEnvelope", _error_envelope())
    for code, text in ERRORS.items():
        spec.components.response(f"Error{code}", {"description": text, "content": {
            BODY_MEDIA: {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}})
    token_auth = state(app).config["AUTH_MODE"] == "token"
    if token_auth:
        spec.components.security_scheme("bearer", {"type": "http", "scheme": "bearer"})
        spec.options["security"] = [{"bearer": []}]
        for code, text in (("401", "Missing or unknown Bearer token"), ("403", "Token may not act for this user")):
            spec.components.response(f"Error{code}", {"description": text, "content": {
                BODY_MEDIA: {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}}})

    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if not rule.endpoint.startswith("gpufs_") or not _under(rule.rule, prefix):
            continue
        operations = {}
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            operations[method.lower()] = _operation(app, rule, method, token_auth)
        spec.path(path=_openapi_path(rule.rule), operations=operations)
    return spec.to_dict()


def _under(path, prefix):
    return not prefix or path == prefix or path.startswith(prefix + "/")


def _openapi_path(rule):
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def _operation(app, rule, method, token_auth):
    tag = rule.endpoint.split(".")[0].removeprefix("gpufs_")
    doc = getattr(app.view_functions[rule.endpoint], "openapi", None) or Op("(not described)", data={})
    if doc.media:
        op = {"summary": doc.summary, "tags": ["docs"], "security": [],
              "responses": {"200": {"description": doc.summary, "content": {doc.media: {"schema": doc.data}}}}}
        op["parameters"] = [{"in": "path", "name": arg, "required": True, "schema": {"type": "string"}}
                            for arg in sorted(rule.arguments)]
        if rule.arguments:  # an asset name that does not exist
            op["responses"]["404"] = {"$ref": "#/components/responses/Error404"}
        return op
    op = {"summary": doc.summary, "operationId": f"{tag}_{rule.endpoint.split('.')[-1]}", "tags": [tag],
          "responses": {"200": {"description": "Success: `data` as below", "content": {
              BODY_MEDIA: {"schema": _success_envelope(doc.data, doc.many)}}}}}
    if doc.summary == "(not described)":
        op["x-undocumented"] = True
    if doc.query is not None:
        op["parameters"] = [{"in": "query", "schema": doc.query}]
    if doc.body is not None:
        op["requestBody"] = {"required": True, "content": {BODY_MEDIA: {"schema": doc.body}}}
    codes = ["400", "404", "405", "500", "503"]
    if method == "POST":
        codes += ["413", "415"]
    if doc.conflict:
        codes.append("409")
    if token_auth:
        codes += ["401", "403"]
    for code in sorted(codes):
        op["responses"][code] = {"$ref": f"#/components/responses/Error{code}"}
    return op


def _success_envelope(data, many):
    if many:
        data = {"type": "array", "items": data}
    return {"type": "object", "required": ["success", "data", "message", "timestamp"], "properties": {
        "success": {"type": "boolean", "enum": [True]},
        "data": data,
        "message": {"type": "string", "example": "Operation successful"},
        "timestamp": {"type": "string", "format": "date-time", "example": "2025-07-29T17:55:48.826362Z"}}}


def _error_envelope():
    return {"type": "object", "required": ["success", "data", "message", "timestamp"], "properties": {
        "success": {"type": "boolean", "enum": [False]},
        "data": NULL,
        "message": {"type": "string", "example": "client_id: must be 32 hexadecimal characters"},
        "timestamp": {"type": "string", "format": "date-time", "example": "2025-07-29T17:55:48.826362Z"}}}


class _Plugin(MarshmallowPlugin):
    """The marshmallow plugin taught our field types (they subclass marshmallow's or bare Field)."""

    def init_spec(self, spec):
        super().init_spec(spec)
        self.map_to_openapi_type(schemas.Instant, "string", "date-time")
        self.map_to_openapi_type(schemas.Time, "string", "date-time")
        self.map_to_openapi_type(schemas.DayOrInstant, "string", None)
        self.converter.add_attribute_function(_field_details)


def _field_details(self, field, **kwargs):
    if isinstance(field, schemas.ClientId):
        return {"pattern": schemas.HEX32.pattern, "example": "6e1131b4b9cc454aa6ce3294ab860b2d"}
    if isinstance(field, schemas.DayOrInstant):
        return {"description": "a UTC day YYYY-MM-DD (whole day, inclusive) or an ISO 8601 time",
                "example": "2025-07-29"}
    if isinstance(field, schemas.QueryBool):
        return {"description": "true, false, 1 or 0 (any case)"}
    return {}


# ---- routes ---------------------------------------------------------------------------------

@bp.get("/openapi.json")
@describe("This document (OpenAPI 3, not enveloped)", media=BODY_MEDIA, data={"type": "object"})
def openapi_json():
    docs = current_app.extensions.setdefault("gpufs_openapi", {})
    root = request.script_root or "/"
    if root not in docs:
        document = build(current_app, state().prefix)
        document["servers"] = [{"url": root}]
        docs[root] = orjson.dumps(document, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_INDENT_2)
    return Response(docs[root], mimetype="application/json")


@bp.get("/docs")
@describe("This document rendered by Swagger UI", media="text/html", data={"type": "string"})
def docs():
    assets = {name: escape(url_for(".docs_asset", filename=name)) for name in (
        "swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "favicon-32x32.png")}
    spec_url = orjson.dumps(url_for(".openapi_json")).decode().replace("<", "\\u003c")
    page = _PAGE.format(spec_url=spec_url, **{k.replace("-", "_").replace(".", "_"): v for k, v in assets.items()})
    return Response(page, mimetype="text/html")


@bp.get("/docs/<path:filename>")
@describe("Scripts and styles of the Swagger UI page", media="application/octet-stream",
          data={"type": "string", "format": "binary"})
def docs_asset(filename):
    from swagger_ui_bundle import swagger_ui_path  # only the docs page needs the package
    return send_from_directory(swagger_ui_path, filename, max_age=86400)


# validatorUrl null: Swagger UI would otherwise send the document to an online validator.
_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>gpuf-s API</title>
  <link rel="stylesheet" href="{swagger_ui_css}">
  <link rel="icon" type="image/png" href="{favicon_32x32_png}">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{swagger_ui_bundle_js}"></script>
  <script src="{swagger_ui_standalone_preset_js}"></script>
  <script>
    window.onload = function () {{
      window.ui = SwaggerUIBundle({{
        url: {spec_url}, dom_id: "#swagger-ui", deepLinking: true, validatorUrl: null,
        presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset], layout: "StandaloneLayout"
      }});
    }};
  </script>
</body>
</html>
"""
