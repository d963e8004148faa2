"""Pins the sanic-jwt defect `app.auth.authorize` works around.

sanic-jwt 1.8's `@scoped` answers a token without the scope with 401, where the SPEC wants 403
(it passes `status_code=403` to Sanic's `Unauthorized`, which swallows it). When this test
fails, upstream has changed: re-read app/auth/__init__.py's docstring and consider `@scoped` again.
"""

from __future__ import annotations

from typing import Any

from sanic import Request, Sanic, json
from sanic_jwt import Initialize, scoped
from sanic_testing.reusable import ReusableClient

from app.auth.endpoints import _loop_for_sanic_jwt
from tests.support import free_port

SECRET = "upstream-probe-secret-32-bytes-long!!"


def _probe_app() -> Sanic[Any, Any]:
    app: Sanic[Any, Any] = Sanic("sanic_jwt_probe")

    async def authenticate(request: Request) -> dict[str, Any]:
        return {"user_id": 1}

    async def scopes(user: dict[str, Any]) -> list[str]:
        return ["items:read"]

    with _loop_for_sanic_jwt():
        Initialize(app, authenticate=authenticate, add_scopes_to_payload=scopes, secret=SECRET)

    @app.post("/write")
    @scoped("items:write")
    async def write(request: Request) -> Any:
        return json({"ok": True})

    return app


def test_upstream_scoped_still_answers_401_for_a_missing_scope() -> None:
    with ReusableClient(_probe_app(), port=free_port()) as client:
        _, login = client.post("/auth", json={})
        token = login.json["access_token"]
        _, resp = client.post("/write", headers={"Authorization": f"Bearer {token}"})
    assert resp.json["reasons"] == ["Invalid scope."]
    assert resp.status == 401, "sanic-jwt answers a missing scope itself now: app/auth/__init__.py"
