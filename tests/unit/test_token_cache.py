from __future__ import annotations

import asyncio
import time

import pytest

from app.auth.token_cache import RevokedTokens, Verdict, VerifiedTokens


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


def test_a_token_older_than_its_users_version_is_revoked() -> None:
    revoked = RevokedTokens()
    revoked.update({7: 2}, time.monotonic())
    assert revoked.verdict({"user_id": 7, "token_version": 1}) is Verdict.REVOKED
    assert revoked.verdict({"user_id": 7}) is Verdict.REVOKED  # minted before versions: 0
    assert revoked.verdict({"user_id": 7, "token_version": 2}) is Verdict.ACCEPTED
    assert revoked.verdict({"user_id": 8, "token_version": 0}) is Verdict.ACCEPTED  # unchanged


def test_what_a_worker_knows_goes_stale_after_max_age() -> None:
    revoked = RevokedTokens(max_age=1.0)
    claims = {"user_id": 8}
    assert revoked.verdict(claims) is Verdict.UNKNOWN  # never polled
    revoked.update({}, time.monotonic() - 0.5)
    assert revoked.fresh
    assert revoked.verdict(claims) is Verdict.ACCEPTED
    revoked.update({}, time.monotonic() - 1.5)
    assert not revoked.fresh
    assert revoked.verdict(claims) is Verdict.UNKNOWN


def test_the_poller_keeps_polling_after_a_failure_and_answers_who_waits() -> None:
    async def run() -> tuple[list[str], bool, bool]:
        revoked = RevokedTokens()
        answers: list[str] = []

        async def poll() -> dict[int, int]:
            answers.append("poll")
            if len(answers) == 1:
                raise ConnectionRefusedError("database down")
            return {7: 3}

        # A long interval: the second poll happens only because a request asked for it.
        poller = asyncio.get_running_loop().create_task(revoked.follow(poll, interval=60))
        await asyncio.sleep(0.05)
        stale_after_failure = not revoked.fresh
        await revoked.poll_now(timeout=5)
        poller.cancel()
        return answers, stale_after_failure, revoked.fresh and revoked.versions == {7: 3}

    answers, stale_after_failure, fresh_after_asking = asyncio.run(run())
    assert answers == ["poll", "poll"]
    assert stale_after_failure
    assert fresh_after_asking
