"""Typed API errors and the handlers that turn every failure under the API prefix into the envelope."""
import logging

import psycopg2
from flask import g, request
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

from .envelope import respond

log = logging.getLogger("gpufs")


class ApiError(Exception):
    status = 500
    message = "internal server error"

    def __init__(self, message=None):
        super().__init__(message or self.message)
        self.message = message or self.message


class Invalid(ApiError):
    status = 400
    message = "invalid request"


class Unauthorized(ApiError):
    status = 401
    message = "authorization: a valid Bearer token is required"


class Forbidden(ApiError):
    status = 403
    message = "forbidden"


class NotFound(ApiError):
    status = 404
    message = "not found"


class Conflict(ApiError):
    status = 409
    message = "conflict"


class Unavailable(ApiError):
    status = 503
    message = "database unavailable, try again shortly"


def flatten(messages, prefix=""):
    """marshmallow's nested error dict as 'field: message' strings, dotted for nested fields."""
    out = []
    if isinstance(messages, dict):
        for key, value in messages.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            out.extend(flatten(value, "" if key == "_schema" and not prefix else name))
    elif isinstance(messages, list) and messages and all(isinstance(m, str) for m in messages):
        text = " ".join(m.rstrip(".") for m in messages)
        out.append(f"{prefix}: {text}" if prefix else text)
    elif isinstance(messages, list):
        for item in messages:
            out.extend(flatten(item, prefix))
    else:
        out.append(f"{prefix}: {messages}" if prefix else str(messages))
    return out


def validation_message(err):
    return "; ".join(flatten(err.messages))


CONFLICTS = {
    "client_models_name_version_code_key": "version_code: already used by another version of this model",
}

_HTTP_MESSAGES = {
    404: "no such route",
    405: "method not allowed",
    413: "request body too large",
    415: "content type must be application/json",
}


def register(app, prefix):
    """Envelope errors under `prefix`; elsewhere defer to whatever the host app had."""
    previous = {code: dict(handlers) for code, handlers in app.error_handler_spec.get(None, {}).items()}

    def is_ours():
        path = request.path
        return path == prefix or path.startswith(prefix.rstrip("/") + "/")

    def on_api_error(err):
        return respond(None, err.status, err.message)

    def on_validation(err):
        return respond(None, 400, validation_message(err))

    def on_http(err):
        if not is_ours():
            handler = _host_handler(previous, err)
            return handler(err) if handler else err
        headers = {"Allow": ", ".join(err.valid_methods)} if getattr(err, "valid_methods", None) else None
        message = _HTTP_MESSAGES.get(err.code) or (err.description or err.name)
        if err.code == 400:
            message = err.description if err.description and "browser" not in err.description else "malformed request"
        return respond(None, err.code, message, headers=headers)

    def on_database_down(err):
        if isinstance(err, psycopg2.errors.QueryCanceled):
            log.warning("statement timeout on %s %s", request.method, request.path)
            return respond(None, 503, "database timed out, try again shortly")
        log.warning("database unreachable on %s %s: %s", request.method, request.path, str(err).strip())
        g.gpufs_db_broken = True
        if not is_ours():
            raise err
        return respond(None, 503, Unavailable.message)

    def on_unique_violation(err):
        # Only constraints whose conflict is the client's doing are named; others stay generic.
        message = CONFLICTS.get(err.diag.constraint_name, "conflicts with an existing record")
        return respond(None, 409, message)

    def on_unexpected(err):
        log.exception("unhandled error on %s %s", request.method, request.path)
        if not is_ours():
            raise err
        return respond(None, 500, "internal server error")

    app.register_error_handler(ApiError, on_api_error)
    app.register_error_handler(ValidationError, on_validation)
    app.register_error_handler(HTTPException, on_http)
    # Per-code too: a host's own handler for, say, 404 would otherwise win over ours under
    # the prefix. Register the host's handlers before init_app; they keep serving its pages.
    for code in (400, 404, 405, 413, 415):
        app.register_error_handler(code, on_http)
    app.register_error_handler(psycopg2.errors.UniqueViolation, on_unique_violation)
    app.register_error_handler(psycopg2.OperationalError, on_database_down)
    app.register_error_handler(psycopg2.InterfaceError, on_database_down)
    app.register_error_handler(Exception, on_unexpected)


def _host_handler(previous, err):
    for code_or_none in (err.code, None):
        for cls, handler in previous.get(code_or_none, {}).items():
            if isinstance(err, cls):
                return handler
    return None
