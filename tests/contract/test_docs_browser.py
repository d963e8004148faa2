"""Swagger UI at /docs renders every operation in headless Chromium, with no internet.

Playwright drives Debian's /usr/bin/chromium (scripts/install-browser.sh); it never
downloads a browser. Every request the page makes to another host is refused and recorded,
so a page that still reaches for a CDN fails here instead of rendering from a cache.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from app.auth.users import SCOPE_WRITE
from tests.support import TEST_PASSWORD, create_user_cli

pytestmark = pytest.mark.contract

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} is not installed: run scripts/install-browser.sh (CI does)",
        allow_module_level=True,
    )

from playwright.sync_api import Browser, Page, Route, sync_playwright  # noqa: E402


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def docs_page(browser: Browser, docs_server: str) -> Iterator[tuple[Page, list[str]]]:
    """A fresh page where any request that leaves the server is aborted and recorded."""
    local = urlsplit(docs_server).netloc
    outside: list[str] = []

    def offline(route: Route) -> None:
        if urlsplit(route.request.url).netloc == local:
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context = browser.new_context(viewport={"width": 1280, "height": 2000})
    page = context.new_page()
    page.route("**/*", offline)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page, outside
        assert errors == [], errors
    finally:
        context.close()


def _documented_operations(document: dict[str, Any]) -> set[str]:
    return {
        f"{method.upper()} {path}" for path, item in document["paths"].items() for method in item
    }


def test_swagger_ui_renders_every_operation_offline(
    docs_page: tuple[Page, list[str]], docs_server: str, output_dir: Path
) -> None:
    page, outside = docs_page
    document = httpx.get(f"{docs_server}/docs/openapi.json", timeout=10).json()

    page.goto(f"{docs_server}/docs", wait_until="networkidle")
    page.wait_for_selector(".opblock-summary", timeout=15_000)
    page.screenshot(path=str(output_dir / "docs.png"), full_page=True)

    rendered = set()
    for block in page.locator(".opblock-summary").all():
        method = block.locator(".opblock-summary-method").inner_text().strip()
        path = block.locator(".opblock-summary-path").get_attribute("data-path")
        rendered.add(f"{method} {path}")
    assert rendered == _documented_operations(document)
    assert page.locator(".info .title").inner_text().startswith("Items API")
    assert page.locator(".btn.authorize").is_visible()
    assert outside == []


def test_try_it_out_sends_an_authorised_write(
    docs_page: tuple[Page, list[str]],
    docs_server: str,
    write_token: str | None,
    output_dir: Path,
) -> None:
    if write_token is None:
        pytest.skip("the server has no bearer tokens yet")
    page, outside = docs_page
    page.goto(f"{docs_server}/docs", wait_until="networkidle")

    page.locator(".btn.authorize").first.click()
    page.locator(".auth-container input").first.fill(write_token)
    page.locator(".auth-btn-wrapper .btn.authorize").click()
    page.locator(".btn-done").click()

    operation = page.locator("#operations-items-create_item")
    operation.locator(".opblock-summary").click()
    operation.locator(".try-out__btn").click()
    operation.locator("textarea.body-param__text").fill('{"name": "From Swagger UI", "price": 1.5}')
    operation.locator(".execute").click()
    status = operation.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for(timeout=15_000)
    operation.screenshot(path=str(output_dir / "docs-try-it-out.png"))
    assert status.inner_text().strip() == "201"

    # persistAuthorization: the token survives a reload, so the next "Try it out" is authorised.
    page.reload(wait_until="networkidle")
    page.wait_for_selector(".btn.authorize.locked", timeout=15_000)
    assert outside == []


@pytest.fixture(scope="module")
def docs_user(database_url: str) -> tuple[str, str]:
    """A user to log in with from Swagger UI."""
    username = "docs-login"
    created = create_user_cli(database_url, username, [SCOPE_WRITE])
    assert created.returncode == 0, created.stderr
    return username, TEST_PASSWORD


def test_log_in_with_try_it_out_then_authorize(
    docs_page: tuple[Page, list[str]], docs_server: str, docs_user: tuple[str, str]
) -> None:
    page, outside = docs_page
    username, password = docs_user
    page.goto(f"{docs_server}/docs", wait_until="networkidle")

    login = page.locator("#operations-auth-login")
    login.locator(".opblock-summary").click()
    login.locator(".try-out__btn").click()
    login.locator("textarea.body-param__text").fill(
        json.dumps({"username": username, "password": password})
    )
    login.locator(".execute").click()
    status = login.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for(timeout=15_000)
    assert status.inner_text().strip() == "200"
    body = json.loads(login.locator(".live-responses-table .microlight").first.inner_text())

    page.locator(".btn.authorize").first.click()
    page.locator(".auth-container input").first.fill(body["access_token"])
    page.locator(".auth-btn-wrapper .btn.authorize").click()
    page.locator(".btn-done").click()

    me = page.locator("#operations-auth-me")
    me.locator(".opblock-summary").click()
    me.locator(".try-out__btn").click()
    me.locator(".execute").click()
    status = me.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for(timeout=15_000)
    assert status.inner_text().strip() == "200"
    shown = json.loads(me.locator(".live-responses-table .microlight").first.inner_text())
    assert shown["me"]["username"] == username
    assert outside == []
