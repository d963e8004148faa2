"""The items resource: list, create, read, replace, patch, delete."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import asyncpg
import orjson
from sanic import Blueprint, HTTPResponse, Request
from sanic_ext import validate

from app.auth.tokens import require_scope
from app.constants import JSON, MERGE_PATCH, SCOPE_WRITE
from app.http.bodies import accepts
from app.http.responses import Response
from app.items import idempotency, openapi, store
from app.items.conditional import etag, if_match, none_match
from app.items.pagination import encode_cursor, parse_list_query
from app.items.schemas import ItemIn, ItemPatch

bp = Blueprint("items", url_prefix="/items")

_DUMPS_OPTIONS = orjson.OPT_UTC_Z


def _item_body(row: Mapping[str, Any]) -> bytes:
    return orjson.dumps(dict(row), option=_DUMPS_OPTIONS)


def _item_response(row: Mapping[str, Any], status: int = 200, **headers: str) -> HTTPResponse:
    headers["ETag"] = etag(row["version"])
    return Response(_item_body(row), status=status, headers=headers, content_type=JSON)


def invalidate_cached(request: Request, item_id: int) -> None:
    """A write to `item_id` committed: drop it, and every list page, from every worker's read
    cache before replying."""
    cache = request.app.ctx.item_cache
    if cache is not None:
        cache.invalidate(item_id)


# `ctx_auth_read`: needs a token with items:read (or items:write) when AUTH_REQUIRED_FOR_READS.
@bp.get("", ctx_auth_read=True)
@openapi.list_items
async def list_items(request: Request) -> HTTPResponse:
    """List items, one keyset-paginated page at a time."""
    # Blank values kept: `limit=` is a malformed limit (400), not an absent one.
    query = parse_list_query(request.get_args(keep_blank_values=True))
    cache = request.app.ctx.item_cache
    if cache is not None and not cache.max_pages:
        cache = None  # CACHE_MAX_PAGES=0: items only
    page = cache.get_page(query) if cache is not None else None
    if page is not None:
        body, next_cursor = page.body, page.next_cursor
    else:
        seen = cache.snapshot_pages() if cache is not None else None
        rows, has_more = await store.list_items(request.app.ctx.db, query)
        next_cursor = encode_cursor(query.sort, rows[-1]) if has_more else None
        body = orjson.dumps(
            {"items": rows, "next_cursor": next_cursor},
            option=_DUMPS_OPTIONS,
        )
        if seen is not None:
            cache.put_page(query, seen, body, next_cursor)
    # From the request as sent, never cached: equivalent queries share a page, not a link.
    headers = {}
    if next_cursor is not None:
        params = [(k, v) for k, values in request.args.items() if k != "cursor" for v in values]
        params.append(("cursor", next_cursor))
        headers["Link"] = f'<{request.path}?{urlencode(params)}>; rel="next"'
    return Response(body, headers=headers, content_type=JSON)


@bp.post("")
@openapi.create_item
@require_scope(SCOPE_WRITE)
@accepts(JSON)
@validate(json=ItemIn)
async def create_item(request: Request, body: ItemIn) -> HTTPResponse:
    """Create an item; with `Idempotency-Key`, retries get the first response back."""
    data = body.model_dump()
    key = idempotency.key_of(request)
    if key is None:
        row = await store.create_item(request.app.ctx.db, data)
        invalidate_cached(request, row["id"])  # ids are never reused, unless the table was reset
        return _item_response(row, 201, Location=f"/items/{row['id']}")

    created: list[int] = []

    async def create(conn: asyncpg.Connection) -> idempotency.StoredResponse:
        row = await store.create_item(conn, data)
        created.append(row["id"])
        headers = {"Location": f"/items/{row['id']}", "ETag": etag(row["version"])}
        headers["Content-Type"] = JSON
        return idempotency.StoredResponse(201, headers, _item_body(row), row["id"])

    try:
        return await idempotency.create_item_once(request, key, data, create)
    finally:
        # Here, not in `create`: the row commits with the stored response, after `create`
        # returns, and a page read between a bump and that commit would be cached without
        # it. Also when it failed (nothing committed, or a lost commit reply): a spare bump.
        for item_id in created:
            invalidate_cached(request, item_id)


@bp.get("/<item_id:int>", ctx_auth_read=True)
@openapi.get_item
async def get_item(request: Request, item_id: int) -> HTTPResponse:
    """Read one item; `If-None-Match` with its current ETag gives 304."""
    cache = request.app.ctx.item_cache
    entry = cache.get(item_id) if cache is not None else None
    if entry is not None:
        version, body = entry.version, entry.body
    else:
        seen = cache.snapshot(item_id) if cache is not None else None
        row = await store.get_item(request.app.ctx.db, item_id)
        version, body = row["version"], _item_body(row)
        if seen is not None:
            cache.put(item_id, seen, version, body)
    if none_match(request.headers.get("if-none-match"), version):
        return Response(status=304, headers={"ETag": etag(version)})
    return Response(body, headers={"ETag": etag(version)}, content_type=JSON)


@bp.put("/<item_id:int>")
@openapi.replace_item
@require_scope(SCOPE_WRITE)
@accepts(JSON)
@validate(json=ItemIn)
async def replace_item(request: Request, item_id: int, body: ItemIn) -> HTTPResponse:
    """Replace an item whole; `If-Match` makes it conditional."""
    row = await store.replace_item(
        request.app.ctx.db, item_id, body.model_dump(), if_match(request.headers.get("if-match"))
    )
    invalidate_cached(request, item_id)
    return _item_response(row)


@bp.patch("/<item_id:int>")
@openapi.patch_item
@require_scope(SCOPE_WRITE)
@accepts(JSON, MERGE_PATCH)
@validate(json=ItemPatch)
async def patch_item(request: Request, item_id: int, body: ItemPatch) -> HTTPResponse:
    """Change some fields of an item (JSON merge patch); `If-Match` makes it conditional."""
    row = await store.patch_item(
        request.app.ctx.db, item_id, body.changes(), if_match(request.headers.get("if-match"))
    )
    invalidate_cached(request, item_id)
    return _item_response(row)


@bp.delete("/<item_id:int>")
@openapi.delete_item
@require_scope(SCOPE_WRITE)
async def delete_item(request: Request, item_id: int) -> HTTPResponse:
    """Delete an item; `If-Match` makes it conditional."""
    await store.delete_item(request.app.ctx.db, item_id, if_match(request.headers.get("if-match")))
    invalidate_cached(request, item_id)
    return Response(status=204)
