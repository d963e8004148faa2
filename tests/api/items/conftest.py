"""The items suites share one real Sanic server per module, over a table emptied per test.

Building an app costs about 0.35 s (sanic-ext adds HEAD and OPTIONS routes, and every route
change recompiles the router), which would dominate these few hundred tests. Sharing one
server within a module keeps each test as isolated as a fresh app would, because the only
state left between tests is in the database, which `clean_db` empties: per-process state that
a TRUNCATE cannot reset (the read cache, rate-limit counters) is switched off here. Suites that
test that state (cache, rate limits) live outside this package and keep the per-test app.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sanic_testing.reusable import ReusableClient

from app.factory import create_app
from tests.support import app_settings, free_port


def _write_headers(request: pytest.FixtureRequest) -> dict[str, str]:
    """`Authorization` with scope items:write, when the suite provides one (writes need it)."""
    try:
        headers: dict[str, str] = request.getfixturevalue("write_headers")
    except pytest.FixtureLookupError:
        return {}
    return headers


@pytest.fixture(scope="module")
def module_client(request: pytest.FixtureRequest, database_url: str) -> Iterator[ReusableClient]:
    settings = app_settings(database_url, RATE_LIMIT="off", CACHE_ENABLED=False)
    headers = _write_headers(request)
    app = create_app(settings)
    with ReusableClient(app, port=free_port(), client_kwargs={"headers": headers}) as client:
        yield client


@pytest.fixture
def client(module_client: ReusableClient, clean_db: str) -> ReusableClient:
    """The module's server, over an empty `items` table (identity restarted)."""
    del clean_db
    return module_client
