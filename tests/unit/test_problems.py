"""The error table is looked up along the exception's class hierarchy (app/http/errors.py)."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest
from sanic import Request, Sanic
from sanic.compat import Header
from sanic.exceptions import HTTPException
from sanic_jwt.exceptions import SanicJWTException

from app.auth.tokens import AuthError, NotAuthenticated
from app.http.errors import FRAMEWORK_PROBLEMS, ProblemHandler, unhandled
from app.items.store import ItemNotFound
from app.problems import DOMAIN_PROBLEMS, PROBLEMS


class VanishedItem(ItemNotFound):
    """A subclass nobody mapped: it gets its parent's entry."""


class Unmapped(Exception):
    pass


@pytest.fixture(scope="module")
def app() -> Sanic[Any, Any]:
    return Sanic("problems")


def _answer(app: Sanic[Any, Any], exc: Exception) -> tuple[int, dict[str, Any]]:
    request = Request(b"/items/7", Header(), "1.1", "GET", None, app)
    response = ProblemHandler(PROBLEMS).default(request, exc)
    return response.status, orjson.loads(response.body or b"")


def test_the_domain_table_adds_to_the_framework_table_and_replaces_nothing() -> None:
    assert not FRAMEWORK_PROBLEMS.keys() & DOMAIN_PROBLEMS.keys()
    assert len(PROBLEMS) == len(FRAMEWORK_PROBLEMS) + len(DOMAIN_PROBLEMS)


def test_a_subclass_of_a_mapped_exception_gets_its_parents_entry(app: Sanic[Any, Any]) -> None:
    handler = ProblemHandler(PROBLEMS)
    assert handler.responder(VanishedItem) is PROBLEMS[ItemNotFound]
    status, body = _answer(app, VanishedItem(7))
    assert (status, body["detail"], body["instance"]) == (404, "item 7 does not exist", "/items/7")


def test_the_first_mapped_class_of_the_mro_wins() -> None:
    # NotAuthenticated is both an AuthError and a SanicJWTException, in that order.
    assert NotAuthenticated.__mro__.index(AuthError) < NotAuthenticated.__mro__.index(
        SanicJWTException
    )
    assert ProblemHandler(PROBLEMS).responder(NotAuthenticated) is PROBLEMS[AuthError]


def test_an_unmapped_exception_is_a_logged_500(
    app: Sanic[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    assert ProblemHandler(PROBLEMS).responder(Unmapped) is unhandled
    with caplog.at_level(logging.ERROR, logger="app.errors"):
        status, body = _answer(app, Unmapped("secret detail"))
    assert (status, body["detail"]) == (500, "The server failed to handle this request.")
    assert "unhandled error on GET /items/7" in caplog.text


def test_each_exception_type_is_looked_up_along_its_mro_once() -> None:
    handler = ProblemHandler({HTTPException: unhandled})
    first = handler.responder(VanishedItem)
    # The answer is kept per type: a table changed afterwards (never done) is not looked at.
    handler.table[ItemNotFound] = PROBLEMS[ItemNotFound]
    assert handler.responder(VanishedItem) is first is unhandled
