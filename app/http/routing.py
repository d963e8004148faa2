"""The service's router: Sanic's, with integers in paths in one spelling and more resolved
paths remembered."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sanic.models.handler_types import RouteHandler
from sanic.router import Router as SanicRouter
from sanic_routing.route import Route

# Sanic remembers the last 1,024 (path, method, host) it resolved. Every item has its own path,
# so GET /items/{id} over a working set of more ids than that resolves almost every request
# anew: 24k instructions, 6 % of a cached hit (bench/README.md). This remembers as many paths
# as the item cache holds items by default (CACHE_MAX_ITEMS), and only short ones: the key is
# the client's path and Host, so a longer key is resolved every time and the cache stays under
# ~10 MB per worker whatever clients send. Only matches are kept: a 404 or 405 is not.
ROUTE_CACHE_SIZE = 10_000
CACHED_KEY_CHARS = 128


# What an `<name:int>` segment may look like; `canonical_int` holds it to it.
INT_SEGMENT = r"^-?(0|[1-9][0-9]*)$"


def canonical_int(text: str) -> int:
    """An integer path segment in its one decimal spelling, else ValueError (no route).

    Sanic casts `<name:int>` with `int()`, which also takes `+5`, `05`, `1_0` and spaces: one
    item would answer at many URLs, each its own entry in any HTTP cache on the way, and
    none of them invalidated with the real one.
    """
    value = int(text)
    if str(value) != text:
        raise ValueError(f"{text!r} is not an integer in its decimal spelling")
    return value


class Router(SanicRouter):
    def __init__(self) -> None:
        super().__init__()
        self.register_pattern("int", canonical_int, INT_SEGMENT)
        self._resolved = lru_cache(maxsize=ROUTE_CACHE_SIZE)(self._get)

    def get(  # type: ignore[override]
        self, path: str, method: str, host: str | None
    ) -> tuple[Route, RouteHandler, dict[str, Any]]:
        if len(path) + len(host or "") > CACHED_KEY_CHARS:
            return self._get(path, method, host)
        return self._resolved(path, method, host)
