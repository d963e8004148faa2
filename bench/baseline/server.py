"""Minimal raw Sanic + asyncpg + orjson items server: the stack's ceiling.

It serves the same three routes and JSON shape as the real service, on the
same ``items`` table, with nothing in between: no middleware, no ORM, no
validation library. ``bench/run.py`` benchmarks it next to the real service
and reports our throughput as a ratio of this one.

Configuration comes from the environment: ``DATABASE_URL``, ``HOST``,
``PORT``, ``WORKERS`` (default 2) and ``DB_POOL_MAX`` (default 10); with ``TLS_CERT`` and
``TLS_KEY`` set it serves HTTPS, through the same Sanic TLS context (TLS 1.2+) as the service.

Run: ``python bench/baseline/server.py``
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from typing import Any

import asyncpg
import orjson
from sanic import Request, Sanic
from sanic.response import HTTPResponse

SELECT_ONE = """
SELECT id, name, description, sku, price, quantity, version, created_at, updated_at
FROM items WHERE id = $1
"""
SELECT_FIRST_PAGE = """
SELECT id, name, description, sku, price, quantity, version, created_at, updated_at
FROM items ORDER BY id LIMIT $1
"""
SELECT_PAGE_AFTER = """
SELECT id, name, description, sku, price, quantity, version, created_at, updated_at
FROM items WHERE id > $1 ORDER BY id LIMIT $2
"""
INSERT_ONE = """
INSERT INTO items (name, description, sku, price, quantity) VALUES ($1, $2, $3, $4, $5)
RETURNING id, name, description, sku, price, quantity, version, created_at, updated_at
"""

JSON = "application/json"
DUMPS_OPTIONS = orjson.OPT_UTC_Z
MAX_PRICE = 9_999_999_999.99
MAX_QUANTITY = 2_147_483_647

app = Sanic("items_baseline")
app.config.ACCESS_LOG = False
app.config.MOTD = False
# sanic-ext is installed for the service; Sanic would load it here too.
app.config.AUTO_EXTEND = False


def item_json(row: asyncpg.Record) -> dict[str, Any]:
    item = dict(row)
    item["price"] = float(item["price"])
    return item


def json_response(
    payload: Any, status: int = 200, headers: dict[str, str] | None = None
) -> HTTPResponse:
    return HTTPResponse(
        orjson.dumps(payload, option=DUMPS_OPTIONS),
        status=status,
        headers=headers,
        content_type=JSON,
    )


def error(status: int, detail: str) -> HTTPResponse:
    return json_response({"status": status, "detail": detail}, status=status)


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(str(last_id).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    padded = cursor + "=" * (-len(cursor) % 4)
    return int(base64.urlsafe_b64decode(padded.encode()))


@app.before_server_start
async def open_pool(app: Sanic[Any, Any]) -> None:
    app.ctx.pool = await asyncpg.create_pool(
        os.environ["DATABASE_URL"],
        min_size=2,
        max_size=int(os.environ.get("DB_POOL_MAX", "10")),
    )


@app.after_server_stop
async def close_pool(app: Sanic[Any, Any]) -> None:
    await app.ctx.pool.close()


@app.get("/health")
async def health(_request: Request) -> HTTPResponse:
    return HTTPResponse(status=200)


@app.get("/items/<item_id:int>")
async def get_item(request: Request, item_id: int) -> HTTPResponse:
    row = await request.app.ctx.pool.fetchrow(SELECT_ONE, item_id)
    if row is None:
        return error(404, "item not found")
    return json_response(item_json(row), headers={"ETag": f'"{row["version"]}"'})


@app.get("/items")
async def list_items(request: Request) -> HTTPResponse:
    try:
        limit = int(request.args.get("limit", "20"))
        cursor = request.args.get("cursor")
        after = decode_cursor(cursor) if cursor else None
    except (ValueError, binascii.Error):
        return error(400, "bad limit or cursor")
    if not 1 <= limit <= 100:
        return error(400, "limit must be 1-100")
    pool = request.app.ctx.pool
    if after is None:
        rows = await pool.fetch(SELECT_FIRST_PAGE, limit + 1)
    else:
        rows = await pool.fetch(SELECT_PAGE_AFTER, after, limit + 1)
    page = rows[:limit]
    next_cursor = encode_cursor(page[-1]["id"]) if len(rows) > limit else None
    return json_response({"items": [item_json(r) for r in page], "next_cursor": next_cursor})


@app.post("/items")
async def create_item(request: Request) -> HTTPResponse:
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        return error(400, "malformed JSON")
    if not isinstance(body, dict):
        return error(422, "body must be an object")
    name = body.get("name")
    price = body.get("price")
    quantity = body.get("quantity", 0)
    description = body.get("description", "")
    sku = body.get("sku")
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 200:
        return error(422, "name: 1-200 characters")
    if isinstance(price, bool) or not isinstance(price, int | float) or not 0 <= price <= MAX_PRICE:
        return error(422, "price: a number in range")
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        return error(422, "quantity: an integer")
    if not 0 <= quantity <= MAX_QUANTITY:
        return error(422, "quantity: out of range")
    if not isinstance(description, str) or len(description) > 2000:
        return error(422, "description: at most 2000 characters")
    if sku is not None and not isinstance(sku, str):
        return error(422, "sku: a string")
    try:
        row = await request.app.ctx.pool.fetchrow(
            INSERT_ONE, name.strip(), description, sku, round(price, 2), quantity
        )
    except asyncpg.UniqueViolationError:
        return error(409, "duplicate sku")
    return json_response(
        item_json(row),
        status=201,
        headers={"Location": f"/items/{row['id']}", "ETag": f'"{row["version"]}"'},
    )


def ssl_files() -> dict[str, str] | None:
    """Sanic's `ssl=` shorthand, as the service passes it: the same context is built from it."""
    cert, key = os.environ.get("TLS_CERT"), os.environ.get("TLS_KEY")
    return {"cert": cert, "key": key} if cert and key else None


if __name__ == "__main__":
    logging.getLogger("sanic.root").setLevel(logging.WARNING)
    app.run(
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8001")),
        workers=int(os.environ.get("WORKERS", "2")),
        access_log=False,
        single_process=False,
        debug=False,
        auto_reload=False,
        ssl=ssl_files(),
    )
