from __future__ import annotations

from typing import Any

import pytest
from sanic import Sanic, empty
from sanic.exceptions import MethodNotAllowed, NotFound

from app.http.routing import CACHED_KEY_CHARS, ROUTE_CACHE_SIZE, Router, canonical_int


@pytest.fixture
def router() -> Router:
    app: Sanic[Any, Any] = Sanic("routing", router=Router())

    @app.get("/items/<item_id:int>")
    async def item(request: Any, item_id: int) -> Any:
        return empty()

    @app.get("/docs/<name:str>")
    async def docs(request: Any, name: str) -> Any:
        return empty()

    app.router.finalize()
    assert isinstance(app.router, Router)
    return app.router


def test_more_paths_than_sanics_cache_are_remembered(router: Router) -> None:
    paths = [f"/items/{n}" for n in range(1, 5001)]
    for path in paths:
        router.get(path, "GET", "localhost")
    first = router._resolved.cache_info()
    for path in paths:
        route, _, params = router.get(path, "GET", "localhost")
        assert route.path == "items/<item_id:int>" and params == {"item_id": int(path[7:])}
    second = router._resolved.cache_info()
    assert second.hits - first.hits == len(paths) and second.misses == first.misses
    assert ROUTE_CACHE_SIZE >= 10_000


def test_a_long_path_or_host_is_resolved_but_not_remembered(router: Router) -> None:
    long_name = "x" * CACHED_KEY_CHARS
    route, _, params = router.get(f"/docs/{long_name}", "GET", None)
    assert params == {"name": long_name}
    router.get("/items/1", "GET", "h" * CACHED_KEY_CHARS)
    assert router._resolved.cache_info().currsize == 0


def test_refusals_are_not_remembered(router: Router) -> None:
    with pytest.raises(NotFound):
        router.get("/nowhere", "GET", None)
    with pytest.raises(MethodNotAllowed):
        router.get("/items/1", "DELETE", None)
    assert router._resolved.cache_info().currsize == 0


@pytest.mark.parametrize("text", ["0", "7", "-7", "9223372036854775808", "-10"])
def test_an_integer_segment_in_its_decimal_spelling_is_taken(text: str) -> None:
    assert canonical_int(text) == int(text)


@pytest.mark.parametrize(
    "text", ["", "05", "+5", "-0", "1_0", " 5", "5 ", "\u0665", "\uff11", "0x10", "1.0", "-", "--1"]
)
def test_any_other_spelling_of_an_integer_is_not(text: str) -> None:
    with pytest.raises(ValueError):
        canonical_int(text)


def test_the_router_sends_other_spellings_nowhere(router: Router) -> None:
    for path in ("/items/05", "/items/+5", "/items/5_0"):
        with pytest.raises(NotFound):
            router.get(path, "GET", None)
    _, _, params = router.get("/items/-5", "GET", None)
    assert params == {"item_id": -5}
