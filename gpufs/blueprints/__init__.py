"""Helpers shared by the API views: load input with a schema, serve through the cache."""
import functools
from types import MappingProxyType

import orjson
from flask import request
from werkzeug.exceptions import UnsupportedMediaType

from ..auth import authorize_user
from ..db import state
from ..envelope import dumps, respond
from ..errors import Invalid


def load_args(schema):
    """Validate the query string (a repeated parameter counts by its first value) and check the caller
    may act for its user_id."""
    data = _load_query(schema, request.query_string)
    authorize_user(data.get("user_id"))
    return data


@functools.lru_cache(maxsize=4096)
def _load_query(schema, query_string):
    # Dashboards poll the same few query strings; their validation is a pure function of the
    # text (no query field depends on the clock), so it is done once per string. Read-only:
    # the same mapping serves every request with that string.
    return MappingProxyType(schema.load(request.args.to_dict()))


def load_json(schema):
    """Validate a JSON object body (non-JSON is 415, unparsable JSON or a non-object is 400) and check
    the caller may act for its user_id."""
    data = schema.load(json_object())
    authorize_user(data.get("user_id"))
    return data


def json_object():
    if not request.is_json:
        raise UnsupportedMediaType()
    try:
        body = orjson.loads(request.get_data(cache=False))
    except orjson.JSONDecodeError as err:
        raise Invalid(f"body: malformed JSON ({err.args[0].split(':')[0]})") from err
    if not isinstance(body, dict):
        raise Invalid("body: must be a JSON object")
    return body


def cached_response(scope, name, args, produce, live=False):
    """Answer from the cache when it has the value, else from `produce()` (data to serialize)."""
    body, _hit = state().cache.fetch(scope, name, args, lambda: dumps(produce()), live=live)
    return respond(body)


def cfg(key):
    return state().config[key]
