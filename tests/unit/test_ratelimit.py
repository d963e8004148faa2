"""The rate limiter's counting, headers and client identification (no server)."""

from __future__ import annotations

import asyncio
import ipaddress
from types import SimpleNamespace
from typing import Any, cast

import pytest

from app.http.client import address_key, client_ip
from app.ratelimit.middleware import login_username
from app.ratelimit.policy import LocalLimiter, Policy, RedisLimiter
from app.ratelimit.window_table import PROBES, WindowTable
from app.settings import SettingsError, load_settings
from tests.support import free_port

# Windows as the limiter gives them: the window [420, 480) of a minute policy, 10 s in.
END, NOW = 480, 430


def _table(slots: int = 64) -> WindowTable:
    return WindowTable(*WindowTable.allocate(slots))


def test_counts_each_key_separately_within_a_window() -> None:
    table = _table()
    assert [table.hit("a", END, NOW) for _ in range(3)] == [1, 2, 3]
    assert table.hit("b", END, NOW) == 1
    assert table.hit("a", END, NOW) == 4


def test_a_new_window_starts_from_one() -> None:
    table = _table()
    for _ in range(5):
        table.hit("a", END, NOW)
    assert table.hit("a", END + 60, END) == 1
    assert table.hit("a", END + 60, END + 1) == 2


def test_a_full_probe_run_forgets_the_least_counted_key() -> None:
    table = _table(slots=PROBES)  # every key probes the same run of slots
    keys = [f"k{n}" for n in range(PROBES)]
    for n, key in enumerate(keys):
        for _ in range(n + 2):
            table.hit(key, END, NOW)
    assert table.hit("newcomer", END, NOW) == 1
    # The busiest keys keep their counts; the least counted one ("k0") was replaced.
    assert table.hit(keys[-1], END, NOW) == PROBES + 2
    assert table.hit("k0", END, NOW) == 1


def test_a_count_survives_keys_of_other_periods() -> None:
    """Rows of a short window, ending, never free a live row of a long one behind them."""
    table = _table(slots=PROBES)  # every key probes the same run of slots
    hour_end, minute_end = 3600, 60
    # A minute policy's keys take the first rows; an hour policy's key the row after them.
    for n in range(PROBES - 1):
        table.hit(f"minute-{n}|10/60", minute_end, 5)
    logins = [table.hit("ip:192.0.2.1|5/3600", hour_end, 10) for _ in range(5)]
    assert logins == [1, 2, 3, 4, 5]
    # The minute ends; a new minute's keys reuse the rows now free, and the hour count stays.
    assert table.hit("minute-new|10/60", minute_end + 60, 61) == 1
    assert table.hit("ip:192.0.2.1|5/3600", hour_end, 62) == 6
    for n in range(PROBES):
        table.hit(f"minute-late-{n}|10/60", minute_end + 60, 70)
    assert table.hit("ip:192.0.2.1|5/3600", hour_end, 71) == 7


def test_policies_of_different_periods_through_the_limiter() -> None:
    """`RATE_LIMIT_AUTH=5/hour` beside `RATE_LIMIT=1200/minute` in one (crowded) table."""
    limiter = LocalLimiter(_table(slots=PROBES))
    login, general = Policy.parse("5/hour"), Policy.parse("1200/minute")
    now = 7200.0 + 30
    assert [limiter.hit_now("ip:a", login, now).allowed for _ in range(6)] == [True] * 5 + [False]
    # General requests of many clients, into the next minutes, in the same slots.
    for minute in range(3):
        for n in range(2 * PROBES):
            limiter.hit_now(f"ip:c{n}", general, now + 60 * minute)
    assert not limiter.hit_now("ip:a", login, now + 150).allowed


def test_decision_admits_up_to_the_limit_and_says_so_in_headers() -> None:
    limiter = LocalLimiter(_table())
    policy = Policy.parse("3/minute")
    now = 600.0 + 15  # 15 s into a minute window
    decisions = [limiter.hit_now("ip:1.2.3.4", policy, now) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert decisions[-1].headers() == [
        (b"RateLimit-Limit", b"3"),
        (b"RateLimit-Remaining", b"0"),
        (b"RateLimit-Reset", b"45"),
        (b"RateLimit-Policy", b"3;w=60"),
    ]
    # The next window admits again.
    assert limiter.hit_now("ip:1.2.3.4", policy, 660.0).allowed


def _request(peer: str, forwarded: str | None = None) -> Any:
    headers = {} if forwarded is None else {"x-forwarded-for": forwarded}
    return SimpleNamespace(ip=peer, headers=headers)


PROXIES = (ipaddress.ip_network("10.0.0.0/8"),)


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        ("203.0.113.9", "198.51.100.1", (), "203.0.113.9"),  # no proxies trusted
        ("203.0.113.9", "198.51.100.1", PROXIES, "203.0.113.9"),  # peer is not a proxy
        ("10.0.0.2", "198.51.100.1", PROXIES, "198.51.100.1"),
        ("10.0.0.2", "6.6.6.6, 198.51.100.1, 10.0.0.3", PROXIES, "198.51.100.1"),  # spoof
        ("10.0.0.2", None, PROXIES, "10.0.0.2"),
        ("10.0.0.2", "10.0.0.4, 10.0.0.3", PROXIES, "10.0.0.4"),
    ],
)
def test_client_ip_believes_forwarded_for_only_from_trusted_proxies(
    peer: str, forwarded: str | None, trusted: tuple[Any, ...], expected: str
) -> None:
    assert client_ip(_request(peer, forwarded), trusted) == expected


@pytest.mark.parametrize("value", ["lots", "10/fortnight", "-1/minute"])
def test_a_malformed_limit_stops_start_up_naming_the_variable(value: str) -> None:
    with pytest.raises(SettingsError, match="RATE_LIMIT"):
        load_settings(env_file=None, RATE_LIMIT=value)


def test_trusted_proxies_are_read_comma_separated() -> None:
    settings = load_settings(env_file=None, TRUSTED_PROXIES="10.0.0.0/8, 192.0.2.7")
    assert settings.TRUSTED_PROXIES == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.0.2.7/32"),
    )
    with pytest.raises(SettingsError, match="TRUSTED_PROXIES"):
        load_settings(env_file=None, TRUSTED_PROXIES="proxy.example")


def test_an_unreachable_redis_falls_back_to_the_machines_own_count() -> None:
    async def hits() -> list[bool]:
        local = LocalLimiter(_table())
        limiter = RedisLimiter(f"redis://127.0.0.1:{free_port()}/0", local)  # nothing listens
        try:
            return [
                (await limiter.hit("ip:1.2.3.4", Policy.parse("2/hour"))).allowed for _ in range(3)
            ]
        finally:
            await limiter.close()

    assert asyncio.run(hits()) == [True, True, False]


def _admit(array: Any, lock: Any, me: int, hits: int, limit: int, admitted: Any) -> None:
    table = WindowTable(array, lock, 2, me)
    admitted[me] = sum(table.hit("busy", END, NOW, limit) <= limit for _ in range(hits))


def test_workers_count_without_the_lock_far_from_the_limit_and_never_past_it() -> None:
    import multiprocessing

    context = multiprocessing.get_context("fork")
    workers = 2
    array, lock = WindowTable.allocate(64, workers)
    admitted = context.Array("q", 2)
    # Two processes race 5,000 hits each against a limit of 6,000: lock-free for most of
    # them, under the lock for the last few before the limit. Never more than 6,000 get in;
    # 6,000 unless a racer is paused between adding and reading as the count crosses the
    # limit, which refuses its one request early (WindowTable's docstring).
    racers = [
        context.Process(target=_admit, args=(array, lock, me, 5000, 6000, admitted))
        for me in range(workers)
    ]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(30)
        assert racer.exitcode == 0
    assert 6000 - workers <= sum(admitted) <= 6000
    # A process without a worker number (under the lock, own column) sees the same total.
    assert WindowTable(array, lock, workers).hit("busy", END, NOW) == 10_001


def test_worker_columns_add_up_to_one_count() -> None:
    workers = 2
    array, lock = WindowTable.allocate(64, workers)
    first, second = WindowTable(array, lock, workers, 0), WindowTable(array, lock, workers, 1)
    assert [first.hit("a", END, NOW), second.hit("a", END, NOW), first.hit("a", END, NOW)] == [
        1,
        2,
        3,
    ]
    # A new window: the row is claimed again with every column back at zero.
    assert [second.hit("a", END + 60, END), first.hit("a", END + 60, END)] == [1, 2]


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("203.0.113.9", "ip:203.0.113.9"),
        ("2001:db8:1:2:aaaa::1", "ip:2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "ip:2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "ip:2001:db8:1:3::/64"),
        ("::ffff:203.0.113.9", "ip:203.0.113.9"),  # a dual-stack socket's IPv4 client
        ("not-an-address", "ip:not-an-address"),
    ],
)
def test_an_ipv6_client_is_counted_by_its_slash_64(address: str, key: str) -> None:
    assert address_key(address) == key


@pytest.mark.parametrize(
    ("body", "username"),
    [
        (b'{"username": "alice", "password": "x"}', "alice"),
        (b'{"username": "alice", "password": ', None),  # malformed: the handler's 400
        (b"", None),
        (b'{"username": "a\\ud800b", "password": "x"}', None),  # a lone surrogate
        (b'{"username": "a\\u0000b", "password": "x"}', None),  # no such name can exist
        (b'{"username": "' + b"a" * 65 + b'", "password": "x"}', None),  # too long to exist
        (b'["alice", "x"]', None),
        (b'{"username": 7}', None),
        (b'{"username": "al ice"}', None),
    ],
)
def test_the_login_username_is_read_only_when_it_could_exist(
    body: bytes, username: str | None
) -> None:
    assert login_username(cast(Any, SimpleNamespace(body=body))) == username
