"""Swagger UI at /docs, served from the `swagger-ui-bundle` package: it works with no internet.

sanic-ext's page loads Swagger UI from `OAS_UI_SWAGGER_CDN_URL`/`OAS_UI_SWAGGER_VERSION`;
both point at a route here. Its `/docs/oauth2-redirect.html` fetches a page from a CDN on
first use, so that route answers with the packaged copy instead.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

from sanic import HTTPResponse, Request, Sanic, html
from sanic.exceptions import NotFound
from sanic.response import file
from swagger_ui_bundle import swagger_ui_path

SWAGGER_UI_VERSION = swagger_ui_path.name.removeprefix("swagger-ui-")
ASSETS_URL = "/docs/swagger-ui"
# sanic-ext's page asks for `.min` names; the package ships the same minified files without it.
ASSETS = {
    "swagger-ui.min.css": "swagger-ui.css",
    "swagger-ui-bundle.min.js": "swagger-ui-bundle.js",
    "swagger-ui-standalone-preset.min.js": "swagger-ui-standalone-preset.js",
    "favicon-32x32.png": "favicon-32x32.png",
}
# The URL holds the version, so a browser may keep the files for good.
_CACHE_FOREVER = {"Cache-Control": "public, max-age=31536000, immutable"}

CONFIG: dict[str, Any] = {
    "API_TITLE": "Items API",
    "API_VERSION": version("items-service"),
    "API_DESCRIPTION": (
        "Items stored in PostgreSQL. Reads are public; writes need a bearer token with the "
        "`items:write` scope (Authorize, then Try it out). Every error is "
        "`application/problem+json` (RFC 9457)."
    ),
    "OAS_UI_DEFAULT": "swagger",
    "OAS_UI_REDOC": False,
    "OAS_UI_SWAGGER_HTML_TITLE": "Items API",
    "OAS_UI_SWAGGER_CDN_URL": ASSETS_URL,
    "OAS_UI_SWAGGER_VERSION": SWAGGER_UI_VERSION,
    "SWAGGER_UI_CONFIGURATION": {
        # Keep the bearer token across reloads, so "Try it out" stays authorised.
        "persistAuthorization": True,
        "displayRequestDuration": True,
        "docExpansion": "list",
        "operationsSorter": "alpha",
        "tagsSorter": "alpha",
    },
}


async def asset(request: Request, release: str, name: str) -> HTTPResponse:  # noqa: ARG001
    """A Swagger UI file from the installed package."""
    if release != SWAGGER_UI_VERSION or name not in ASSETS:
        raise NotFound(f"No Swagger UI file {release}/{name} here.")
    return await file(swagger_ui_path / ASSETS[name], headers=dict(_CACHE_FOREVER))


_OAUTH2_REDIRECT = (swagger_ui_path / "oauth2-redirect.html").read_text(encoding="utf-8")


async def oauth2_redirect(request: Request) -> HTTPResponse:  # noqa: ARG001
    """Swagger UI's OAuth2 redirect page, from the installed package."""
    return html(_OAUTH2_REDIRECT)


def register(app: Sanic[Any, Any]) -> None:
    """Serve the Swagger UI files; call after `Extend(app)` with `CONFIG` applied."""
    app.add_route(asset, f"{ASSETS_URL}/<release:str>/<name:str>", name="swagger_ui_asset")
    redirect = app.router.name_index.get(f"{app.name}.openapi.oauth2-redirect")
    if redirect is not None:
        redirect.handler = oauth2_redirect
