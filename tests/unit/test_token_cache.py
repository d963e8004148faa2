from __future__ import annotations

import time

import pytest

from app.token_cache import VerifiedTokens


def test_claims_are_kept_until_the_token_expires() -> None:
    cache = VerifiedTokens(leeway=0)
    claims = cache.put("a.b.c", {"user_id": 7, "exp": time.time() + 60})
    assert cache.get("a.b.c") is claims
    assert cache.get("a.b.d") is None
    with pytest.raises(TypeError):
        claims["user_id"] = 8  # type: ignore[index]  # shared between requests: read-only


def test_an_expired_token_is_dropped_so_full_verification_reports_it() -> None:
    cache = VerifiedTokens(leeway=5)
    cache.put("late", {"exp": time.time() - 1})  # still within the leeway
    assert cache.get("late") is not None
    cache.put("gone", {"exp": time.time() - 6})
    assert cache.get("gone") is None
    assert len(cache) == 1


def test_a_full_cache_forgets_its_oldest_half() -> None:
    cache = VerifiedTokens(leeway=0, max_tokens=4)
    for n in range(5):
        cache.put(f"t{n}", {"exp": time.time() + 60})
    assert [cache.get(f"t{n}") is not None for n in range(5)] == [False, False, True, True, True]
