"""The items resource: list, create, read, replace, patch, delete."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any
from urllib.parse import urlencode

import asyncpg
import orjson
from sanic import Blueprint, HTTPResponse, Request, empty
from sanic_ext import validate

from app import item_store
from app.conditional import etag, if_match, none_match
from app.errors import UnsupportedMediaType
from app.pagination import encode_cursor, parse_list_query
from app.schemas import ItemIn, ItemPatch

bp = Blueprint("items", url_prefix="/items")

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
_DUMPS_OPTIONS = orjson.OPT_UTC_Z

Handler = Callable[..., Awaitable[HTTPResponse]]


def accepts(*media_types: str) -> Callable[[Handler], Handler]:
    """Answer 415 unless the body is one of `media_types` (checked before validation)."""

    def decorator(handler: Handler) -> Handler:
        @wraps(handler)
        async def checked(request: Request, *args: Any, **kwargs: Any) -> HTTPResponse:
            sent = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
            if sent not in media_types:
                raise UnsupportedMediaType(
                    f"Send the body as {' or '.join(media_types)}, not {sent or 'nothing'}."
                )
            return await handler(request, *args, **kwargs)

        return checked

    return decorator


def _item_response(row: asyncpg.Record, status: int = 200, **headers: str) -> HTTPResponse:
    headers["ETag"] = etag(row["version"])
    return HTTPResponse(
        orjson.dumps(dict(row), option=_DUMPS_OPTIONS),
        status=status,
        headers=headers,
        content_type=JSON,
    )


@bp.get("")
async def list_items(request: Request) -> HTTPResponse:
    """List items, one keyset-paginated page at a time."""
    query = parse_list_query(request.args)
    rows, has_more = await item_store.list_items(request.app.ctx.pool, query)
    next_cursor = encode_cursor(query.sort, rows[-1]) if has_more else None
    body = orjson.dumps(
        {"items": [dict(row) for row in rows], "next_cursor": next_cursor}, option=_DUMPS_OPTIONS
    )
    headers = {}
    if next_cursor is not None:
        params = [(k, v) for k, values in request.args.items() if k != "cursor" for v in values]
        params.append(("cursor", next_cursor))
        headers["Link"] = f'<{request.path}?{urlencode(params)}>; rel="next"'
    return HTTPResponse(body, headers=headers, content_type=JSON)


@bp.post("")
@accepts(JSON)
@validate(json=ItemIn)
async def create_item(request: Request, body: ItemIn) -> HTTPResponse:
    """Create an item."""
    row = await item_store.create_item(request.app.ctx.pool, body.model_dump())
    return _item_response(row, 201, Location=f"/items/{row['id']}")


@bp.get("/<item_id:int>")
async def get_item(request: Request, item_id: int) -> HTTPResponse:
    """Read one item; `If-None-Match` with its current ETag gives 304."""
    row = await item_store.get_item(request.app.ctx.pool, item_id)
    if none_match(request.headers.get("if-none-match"), row["version"]):
        return empty(status=304, headers={"ETag": etag(row["version"])})
    return _item_response(row)


@bp.put("/<item_id:int>")
@accepts(JSON)
@validate(json=ItemIn)
async def replace_item(request: Request, item_id: int, body: ItemIn) -> HTTPResponse:
    """Replace an item whole; `If-Match` makes it conditional."""
    row = await item_store.replace_item(
        request.app.ctx.pool, item_id, body.model_dump(), if_match(request.headers.get("if-match"))
    )
    return _item_response(row)


@bp.patch("/<item_id:int>")
@accepts(JSON, MERGE_PATCH)
@validate(json=ItemPatch)
async def patch_item(request: Request, item_id: int, body: ItemPatch) -> HTTPResponse:
    """Change some fields of an item (JSON merge patch); `If-Match` makes it conditional."""
    row = await item_store.patch_item(
        request.app.ctx.pool, item_id, body.changes(), if_match(request.headers.get("if-match"))
    )
    return _item_response(row)


@bp.delete("/<item_id:int>")
async def delete_item(request: Request, item_id: int) -> HTTPResponse:
    """Delete an item; `If-Match` makes it conditional."""
    await item_store.delete_item(
        request.app.ctx.pool, item_id, if_match(request.headers.get("if-match"))
    )
    return empty(status=204)
