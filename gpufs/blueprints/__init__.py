"""How an API view is declared: `endpoint` loads its input, documents it and dumps its answer."""
import functools

import orjson
from flask import Response, request
from werkzeug.exceptions import RequestEntityTooLarge, UnsupportedMediaType

from ..auth import require_admin
from ..envelope import dumps, respond
from ..errors import Invalid
from ..ext import state
from ..openapi import describe


def endpoint(summary, query=None, body=None, data=None, many=False, conflict=False):
    """Declare a view once: its input schema (`query` or `body`), the schema of its answer's `data`
    (`many`: a list of them), and its summary; the OpenAPI document is built from this.

    The view is called with the loaded input (a dict) and returns the data to dump: rows, a dict,
    None, a `Cached` answer, or a Response it made itself (a stream)."""
    load = (query or body)() if (query or body) else None
    out = data(many=many) if isinstance(data, type) else None

    def decorate(view):
        @functools.wraps(view)
        def run():
            if load is None:
                result = view()
            else:
                result = view(load.load(request.args.to_dict() if query else json_object()))
            if isinstance(result, Response):
                return result
            if isinstance(result, Cached):
                answer, _hit = state().cache.fetch(result.scope, request.endpoint, result.args,
                                                   lambda: dumps(_dump(out, result.produce())), live=result.live)
                return respond(answer)
            return respond(_dump(out, result))

        return describe(summary, query=query, body=body, data=data, many=many, conflict=conflict)(run)

    return decorate


def _dump(out, value):
    return value if out is None else out.dump(value)


class Cached:
    """A view's answer served from the cache when it has it, else `produce()`'s data (see gpufs/cache.py)."""

    def __init__(self, scope, args, produce, live=False):
        self.scope, self.args, self.produce, self.live = scope, dict(args), produce, live


def json_object():
    """The JSON object body: non-JSON is 415, unparsable JSON or a non-object is 400. (A query string
    is loaded from request.args.to_dict(): a repeated parameter counts by its first value.)"""
    if not request.is_json:
        raise UnsupportedMediaType()
    data = request.get_data(cache=False)
    limit = request.max_content_length
    # A chunked body has no Content-Length to refuse up front: werkzeug stops reading at the limit
    # and hands over what it read. One byte more on the input means the body was longer.
    if limit is not None and request.content_length is None and len(data) >= limit \
            and request.environ["wsgi.input"].read(1):
        raise RequestEntityTooLarge()
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as err:
        raise Invalid(f"body: malformed JSON ({err.args[0].split(':')[0]})") from err
    if not isinstance(body, dict):
        raise Invalid("body: must be a JSON object")
    return body


def cfg(key):
    return state().config[key]


def now():
    """The evaluation time of the reads that depend on it (online, health, uptime): the app's clock,
    which a test sets to fix it."""
    return state().clock()


def admin_only(view):
    """Placed above `endpoint`: 403 for a key that is not an admin's, before its input is read."""
    @functools.wraps(view)
    def run(*args, **kwargs):
        require_admin()
        return view(*args, **kwargs)
    return run
