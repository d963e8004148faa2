"""DEV_USER: a development convenience that production refuses (app/settings.py)."""

from __future__ import annotations

import asyncio

import pytest

from app.auth import dev_user
from app.settings import SettingsError, load_settings

SECRET = "0123456789abcdef0123456789abcdef"
PRODUCTION = {"ENV": "production", "DATABASE_URL": "postgres://u@db/items", "JWT_SECRET": SECRET}


def test_development_makes_the_dev_user_by_default() -> None:
    assert load_settings(env_file=None).dev_user == "dev"
    assert load_settings(env_file=None, DEV_USER="alice").dev_user == "alice"
    assert load_settings(env_file=None, DEV_USER="").dev_user is None


def test_production_never_makes_a_user() -> None:
    settings = load_settings(env_file=None, **PRODUCTION)
    assert settings.dev_user is None
    # Nothing to make: returns before any connection (the URL points at no server).
    asyncio.run(dev_user.ensure(settings))


def test_production_refuses_to_start_with_dev_user_set() -> None:
    with pytest.raises(SettingsError, match="DEV_USER: development only"):
        load_settings(env_file=None, DEV_USER="dev", **PRODUCTION)


def test_a_bad_dev_user_name_is_refused() -> None:
    with pytest.raises(SettingsError, match="DEV_USER"):
        load_settings(env_file=None, DEV_USER="no spaces")


def test_the_token_command_says_what_to_do_without_a_server(tmp_path: object) -> None:
    settings = load_settings(env_file=None, DATA_DIR=str(tmp_path))
    with pytest.raises(dev_user.DevUserError, match="start the server first"):
        dev_user.fetch_token(settings)
