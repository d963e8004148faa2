"""Request bodies: every JSON body is parsed here, by one strict RFC 8259 parser (orjson).

Sanic's default parser (ujson) takes `01`, `NaN`, `Infinity` and lone UTF-16 surrogates
(`"\\ud800"`), and turns an empty body into None. A surrogate then fails wherever the text is
encoded (asyncpg, hashlib, orjson.dumps), as a 500. orjson refuses every one of these, so a
body that is not one JSON text is answered 400 saying what is wrong and where, before a
handler, the database or a hash function sees any of it. `create_app` makes `JsonRequest`
the request class: `request.json` everywhere (sanic-ext's `@validate`, the auth endpoints,
sanic-jwt's refresh) goes through `parse_json`. tests/api/test_strict_json.py checks each case
on every route that takes a body.

Numbers are read as doubles, as RFC 8259 section 6 allows ("implementations will approximate
JSON numbers within the expected precision"): exact for every price the API accepts, and
`1.0000000000000001` is the double 1.0. A number beyond a double's range (`1e400`) is valid
JSON that orjson refuses: such a body is parsed again, exactly (numbers as Decimal), by
Python's json module held to the same rules, so a price of 1e400 breaks the price rule (422)
instead of being malformed (400). tests/unit/test_bodies.py checks both parsers refuse the
same texts.

Before any parse, `require_media_type` (or the `accepts` decorator) refuses a body sent as
another media type with the one 415 every route answers; tests/api/test_auth.py and
tests/api/items/test_errors.py check its texts.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from decimal import Decimal
from functools import wraps
from typing import Any, NoReturn

import orjson
from sanic import HTTPResponse, Request
from sanic.exceptions import HTTPException

# orjson's error for a number beyond a double's range (tests/unit/test_bodies.py pins it).
_OVERFLOW = "number is infinity"


class MalformedJson(ValueError):
    """The body is not one RFC 8259 JSON text; the message says what is wrong and where."""


def parse_json(body: bytes) -> Any:
    """The JSON text in `body`, else MalformedJson (empty, not UTF-8, or not RFC 8259)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if exc.msg.startswith(_OVERFLOW):
            try:
                return _parse_exact(body)
            except (ValueError, TypeError, RecursionError):
                pass  # not RFC 8259 JSON elsewhere too: orjson's verdict stands
        if not body.strip():
            raise MalformedJson("the body is empty") from None
        raise MalformedJson(f"{exc.msg} (line {exc.lineno}, column {exc.colno})") from None


def _parse_exact(body: bytes) -> Any:
    """`body` with its numbers as Decimal; raises (ValueError, TypeError) where orjson would.

    Python's json module takes `NaN` and `Infinity` (refused here), lone surrogates (refused
    by encoding the result again) and UTF-16 or UTF-32 bytes (decoded strictly as UTF-8
    first, which also refuses a byte order mark).
    """
    value = json.loads(body.decode("utf-8"), parse_float=Decimal, parse_constant=_no_constant)
    orjson.dumps(value, default=str)
    return value


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


class JsonRequest(Request):
    """Sanic's request, with `request.json` parsed by `parse_json` and its errors kept."""

    __slots__ = ()

    def load_json(self, loads: Callable[[bytes], Any] | None = None) -> Any:
        # Sanic's own version turns every parse error into one vague 400 and an empty body
        # into None; the one parser of the app is used whatever a caller passes.
        del loads
        self.parsed_json = parse_json(self.body)
        return self.parsed_json


def json_object(request: Request) -> dict[str, Any] | None:
    """The body when it is a JSON object, else None; never raises.

    For code that looks at a body before its handler does (the login limit per username):
    the parse is kept on the request, so the handler does not parse it again.
    """
    try:
        body = request.json
    except MalformedJson:
        return None
    return body if isinstance(body, dict) else None


class UnsupportedMediaType(HTTPException):
    """The body is not sent as a media type the route reads: answered 415."""

    status_code = 415
    quiet = True


def require_media_type(request: Request, *media_types: str) -> None:
    """Raise UnsupportedMediaType unless the body's Content-Type is one of `media_types`."""
    sent = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if sent not in media_types:
        raise UnsupportedMediaType(
            f"Send the body as {' or '.join(media_types)}, not {sent or 'nothing'}."
        )


Handler = Callable[..., Awaitable[HTTPResponse]]


def accepts(*media_types: str) -> Callable[[Handler], Handler]:
    """Guard a handler with `require_media_type` (placed above `@validate`: checked first)."""

    def decorator(handler: Handler) -> Handler:
        @wraps(handler)
        async def checked(request: Request, *args: Any, **kwargs: Any) -> HTTPResponse:
            require_media_type(request, *media_types)
            return await handler(request, *args, **kwargs)

        return checked

    return decorator
