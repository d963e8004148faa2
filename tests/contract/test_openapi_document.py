"""The served OpenAPI document is valid and describes every route the way the SPEC says."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate
from openapi_spec_validator.versions import consts, get_spec_version

pytestmark = pytest.mark.contract

PROBLEM_JSON = "application/problem+json"
WRITES = {
    ("/items", "post"),
    ("/items/{item_id}", "put"),
    ("/items/{item_id}", "patch"),
    ("/items/{item_id}", "delete"),
}

AUTH = {
    ("/auth", "post"),
    ("/auth/refresh", "post"),
    ("/auth/me", "get"),
    ("/auth/verify", "get"),
    ("/auth/logout", "post"),
}


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def _response(document: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in response:
        name = response["$ref"].rsplit("/", 1)[1]
        resolved: dict[str, Any] = document["components"]["responses"][name]
        return resolved
    return response


def test_the_document_validates_for_the_version_it_declares(
    openapi_document: dict[str, Any],
) -> None:
    assert get_spec_version(openapi_document) == consts.OPENAPIV30
    validate(openapi_document)  # raises on the first error


def test_no_schema_uses_openapi_31_nullable(openapi_document: dict[str, Any]) -> None:
    text = str(openapi_document)
    assert "'null'" not in text
    assert "$defs" not in text


def test_every_item_route_and_probe_is_documented(openapi_document: dict[str, Any]) -> None:
    documented = {(path, method) for path, method, _ in _operations(openapi_document)}
    assert {
        ("/health", "get"),
        ("/health/ready", "get"),
        ("/items", "get"),
        ("/items/{item_id}", "get"),
        *WRITES,
        *AUTH,
    } <= documented


def test_every_operation_has_a_summary_and_no_catch_all_response(
    openapi_document: dict[str, Any],
) -> None:
    for path, method, operation in _operations(openapi_document):
        assert operation.get("summary"), (path, method)
        assert operation["responses"], (path, method)
        assert "default" not in operation["responses"], (path, method)


def test_every_error_response_is_problem_json(openapi_document: dict[str, Any]) -> None:
    for path, method, operation in _operations(openapi_document):
        if not path.startswith(("/items", "/auth")):
            continue
        for status, response in operation["responses"].items():
            content = _response(openapi_document, response).get("content", {})
            if int(status) >= 400:
                assert list(content) == [PROBLEM_JSON], (path, method, status)


def test_writes_need_a_bearer_token_and_say_401_and_403(openapi_document: dict[str, Any]) -> None:
    schemes = openapi_document["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": schemes["bearerAuth"]["description"],
    }
    for path, method, operation in _operations(openapi_document):
        if (path, method) in WRITES:
            assert operation["security"] == [{"bearerAuth": []}], (path, method)
            assert {"401", "403"} <= set(operation["responses"]), (path, method)
            unauthorized = _response(openapi_document, operation["responses"]["401"])
            assert unauthorized["headers"]["WWW-Authenticate"]["required"] is True


def test_auth_routes_are_described_under_their_own_tag(openapi_document: dict[str, Any]) -> None:
    paths = openapi_document["paths"]
    schemas = openapi_document["components"]["schemas"]
    for path, method in AUTH:
        operation = paths[path][method]
        assert operation["tags"] == ["auth"], (path, method)
        assert "~" not in operation["operationId"], "sanic-ext's generated id: undocumented"
        # Login and logout take no token; refresh takes the (possibly expired) access token.
        secured = path in {"/auth/refresh", "/auth/me", "/auth/verify"}
        assert operation.get("security") == ([{"bearerAuth": []}] if secured else None)
    login = paths["/auth"]["post"]
    assert login["requestBody"]["required"] is True
    assert login["requestBody"]["content"] == {
        "application/json": {"schema": {"$ref": "#/components/schemas/CredentialsIn"}}
    }
    assert schemas["CredentialsIn"]["required"] == ["username", "password"]
    assert set(login["responses"]) == {"200", "400", "401", "413", "415", "429", "503"}
    assert login["responses"]["200"]["content"] == {
        "application/json": {"schema": {"$ref": "#/components/schemas/TokensOut"}}
    }
    assert {"access_token", "refresh_token"} <= set(schemas["TokensOut"]["required"])
    failed = _response(openapi_document, login["responses"]["401"])
    assert failed["headers"]["WWW-Authenticate"]["required"] is True
    assert set(paths["/auth/logout"]["post"]["responses"]) >= {"204", "400", "415"}


def test_request_bodies_are_required_named_components(openapi_document: dict[str, Any]) -> None:
    paths = openapi_document["paths"]
    post = paths["/items"]["post"]["requestBody"]
    assert post["required"] is True
    assert post["content"] == {
        "application/json": {"schema": {"$ref": "#/components/schemas/ItemIn"}}
    }
    patch = paths["/items/{item_id}"]["patch"]["requestBody"]
    assert patch["required"] is True
    assert set(patch["content"]) == {"application/json", "application/merge-patch+json"}
    item_in = openapi_document["components"]["schemas"]["ItemIn"]
    assert item_in["required"] == ["name", "price"]
    assert item_in["additionalProperties"] is False
    assert item_in["properties"]["sku"]["nullable"] is True


def test_list_parameters_carry_their_bounds(openapi_document: dict[str, Any]) -> None:
    params = {p["name"]: p for p in openapi_document["paths"]["/items"]["get"]["parameters"]}
    assert params["limit"]["schema"]["minimum"] == 1
    assert params["limit"]["schema"]["maximum"] == 100
    assert params["sort"]["schema"]["enum"] == [
        "id",
        "-id",
        "price",
        "-price",
        "created_at",
        "-created_at",
    ]
    assert params["q"]["schema"]["maxLength"] == 200
    assert {"cursor", "min_price", "max_price"} <= set(params)


def test_headers_are_documented(openapi_document: dict[str, Any]) -> None:
    paths = openapi_document["paths"]
    created = paths["/items"]["post"]["responses"]["201"]["headers"]
    assert created["ETag"]["required"] and created["Location"]["required"]
    assert "Link" in paths["/items"]["get"]["responses"]["200"]["headers"]
    limited = _response(openapi_document, paths["/items"]["get"]["responses"]["429"])
    assert limited["headers"]["Retry-After"]["required"] is True
    assert {"RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"} <= set(limited["headers"])


def test_swagger_ui_and_its_files_are_served_by_the_app(docs_server: str) -> None:
    page = httpx.get(f"{docs_server}/docs", timeout=10)
    assert page.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert len(assets) == 3
    for asset in assets:
        assert asset.startswith("/docs/swagger-ui/"), asset
        response = httpx.get(f"{docs_server}{asset}", timeout=10)
        assert response.status_code == 200, asset
        assert response.headers["content-type"].startswith(("text/css", "text/javascript"))
    redirect = httpx.get(f"{docs_server}/docs/oauth2-redirect.html", timeout=10)
    assert redirect.status_code == 200
    assert "swaggerUIRedirectOauth2" in redirect.text


def test_api_responses_keep_the_strict_content_security_policy(docs_server: str) -> None:
    assert httpx.get(f"{docs_server}/items").headers["content-security-policy"] == (
        "default-src 'none'; frame-ancestors 'none'"
    )
    assert (
        "script-src 'self'" in httpx.get(f"{docs_server}/docs").headers["content-security-policy"]
    )
