"""The item routes stay on the SQL store: no ORM statement runs inside their requests.

The data-access rule (app/items/store.py): hot paths run hand-written SQL through the
worker's `Database`, cold paths use the ORM. A stray ORM call in an item route would still be
bounded and fair (app/db/orm.py), but slower per request, unmeasured by the benchmarks, and
would go unnoticed: this suite notices. It counts every statement a Tortoise client runs while
a request of a real server is being handled (a request middleware marks the request's task),
and checks that the counting sees a route that does use the ORM.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from typing import Any

import pytest
from sanic import HTTPResponse, Request, json
from sanic_testing.reusable import ReusableClient
from tortoise.backends.asyncpg.client import TransactionWrapper
from tortoise.backends.base.client import BaseDBAsyncClient

import models
from app.db.orm import FairQueueClient
from app.db.wiring import orm_client
from app.factory import create_app
from app.settings import Settings
from tests.support import free_port
from tests.tokens import token_headers

# "METHOD /path" of the request the current task is handling; None outside requests (the
# token-revocation poll and the other background tasks, which run on the ORM or SQL by design).
CURRENT_REQUEST: ContextVar[str | None] = ContextVar("current_request", default=None)
# Every way a Tortoise client runs a statement.
EXECUTES = (
    "execute_insert",
    "execute_many",
    "execute_query",
    "execute_query_dict",
    "execute_query_dict_with_affected",
    "execute_script",
)
PROBE = "/test/orm-probe"


def _counted(
    method: Callable[..., Awaitable[Any]], seen: list[tuple[str, str]]
) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(method)
    async def counting(self: BaseDBAsyncClient, query: str, *args: Any, **kwargs: Any) -> Any:
        request = CURRENT_REQUEST.get()
        if request is not None:
            seen.append((request, query))
        return await method(self, query, *args, **kwargs)

    return counting


@pytest.fixture
def orm_statements(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(request, SQL) of each statement an ORM client runs inside a request, from now on."""
    seen: list[tuple[str, str]] = []
    clients = {*FairQueueClient.__mro__, *TransactionWrapper.__mro__}
    for cls in clients:
        if issubclass(cls, BaseDBAsyncClient):
            for name in EXECUTES:
                if name in vars(cls):
                    monkeypatch.setattr(cls, name, _counted(vars(cls)[name], seen))
    return seen


@pytest.fixture
def server(
    settings: Settings, clean_db: str, orm_statements: list[tuple[str, str]]
) -> Iterator[ReusableClient]:
    """A real server whose requests are marked, with one extra route that uses the ORM."""
    del clean_db, orm_statements
    app = create_app(settings)

    # Before every other middleware, so that their statements count too.
    @app.on_request(priority=1_000_000)
    async def mark_request(request: Request) -> None:
        CURRENT_REQUEST.set(f"{request.method} {request.path}")

    async def orm_probe(request: Request) -> HTTPResponse:
        count = await models.Item.all().using_db(orm_client(request.app.ctx.orm)).count()
        return json({"items": count})

    app.add_route(orm_probe, PROBE)
    with ReusableClient(
        app, port=free_port(), client_kwargs={"headers": token_headers()}
    ) as client:
        yield client


def test_the_item_routes_run_no_orm_statement(
    server: ReusableClient, orm_statements: list[tuple[str, str]]
) -> None:
    _, created = server.post("/items", json={"name": "Widget", "price": 9.99})
    assert created.status == 201, created.text
    item = created.json
    path = f"/items/{item['id']}"
    keyed = {"Idempotency-Key": str(uuid.uuid4())}
    for method, url, kwargs, status in [
        ("post", "/items", {"json": {"name": "Keyed", "price": 1}, "headers": keyed}, 201),
        ("post", "/items", {"json": {"name": "Keyed", "price": 1}, "headers": keyed}, 201),
        ("get", path, {}, 200),
        ("get", "/items?limit=5", {}, 200),
        ("get", "/items?sort=price&limit=5", {}, 200),
        ("put", path, {"json": {"name": "Gadget", "price": 2}}, 200),
        ("patch", path, {"json": {"quantity": 5}}, 200),
        ("delete", path, {}, 204),
    ]:
        _, response = getattr(server, method)(url, **kwargs)
        assert response.status == status, (method, url, response.text)
    assert orm_statements == []


def test_the_counting_sees_an_orm_statement_in_a_request(
    server: ReusableClient, orm_statements: list[tuple[str, str]]
) -> None:
    """Without this, the test above would pass with the counting broken."""
    _, response = server.get(PROBE)
    assert response.status == 200, response.text
    assert [request for request, _ in orm_statements] == [f"GET {PROBE}"]
    assert 'FROM "items"' in orm_statements[0][1]
