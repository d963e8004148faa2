"""`FairQueue` and `Database` (app/db/pool.py): who gets the next pool connection, and for how long
one may wait.

The first tests drive `FairQueue` alone, the rest run a real asyncpg pool through `Database`. Every
await is bounded (`bounded`): a deadline that is never armed fails a test in seconds instead of
hanging the run.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import asyncpg
import pytest

from app.db.pool import Database, FairQueue
from tests.support import bounded


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.fixture
def black_hole() -> Iterator[str]:
    """A DSN whose server accepts TCP connections and never answers (a hung PostgreSQL: the
    kernel completes the handshake into the listen backlog)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"postgres://postgres@127.0.0.1:{listener.getsockname()[1]}/postgres"


def test_turns_go_in_arrival_order_and_a_newcomer_cannot_overtake() -> None:
    async def scenario() -> list[str]:
        turns = FairQueue(1, timeout=5)
        granted: list[str] = []

        async def take(name: str) -> None:
            await turns.acquire()
            granted.append(name)

        await bounded(turns.acquire())  # held by the test
        waiters = [asyncio.create_task(take(name)) for name in "abc"]
        await _settle()
        assert turns.waiting == 3
        turns.release()  # to a; a has not run yet...
        late = asyncio.create_task(take("late"))  # ...and a newcomer must not get in first
        await _settle()
        assert granted == ["a"]
        for _ in range(3):
            turns.release()
            await _settle()
        await bounded(asyncio.gather(*waiters, late))
        assert turns.free == 0 and turns.waiting == 0
        turns.release()
        assert turns.free == 1
        return granted

    assert asyncio.run(scenario()) == ["a", "b", "c", "late"]


def test_a_waiter_gives_up_after_the_timeout_and_no_turn_is_lost() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        turns = FairQueue(1, timeout=0.05)
        await bounded(turns.acquire())
        started = loop.time()
        first = asyncio.create_task(turns.acquire())
        await asyncio.sleep(0.02)
        second = asyncio.create_task(turns.acquire())  # its own deadline, 20 ms later
        with pytest.raises(TimeoutError):
            await bounded(first)
        assert 0.045 <= loop.time() - started < 0.5
        assert not second.done()
        with pytest.raises(TimeoutError):
            await bounded(second)
        assert turns.waiting == 0 and turns.timer is None
        turns.release()
        assert turns.free == 1
        await bounded(turns.acquire(), 0.01)  # at once: nothing is queued

    asyncio.run(scenario())


def test_a_cancelled_waiter_leaves_the_line() -> None:
    async def scenario() -> None:
        turns = FairQueue(1, timeout=5)
        await bounded(turns.acquire())
        gone = asyncio.create_task(turns.acquire())
        next_in_line = asyncio.create_task(turns.acquire())
        await _settle()
        gone.cancel()
        await _settle()
        assert turns.waiting == 1
        turns.release()
        await bounded(next_in_line, 1)
        turns.release()
        assert turns.free == 1 and turns.waiting == 0

    asyncio.run(scenario())


def test_a_turn_handed_to_a_waiter_cancelled_before_it_ran_is_passed_on() -> None:
    async def scenario() -> None:
        turns = FairQueue(1, timeout=5)
        await bounded(turns.acquire())
        unlucky = asyncio.create_task(turns.acquire())
        next_in_line = asyncio.create_task(turns.acquire())
        await _settle()
        turns.release()  # the turn is unlucky's now...
        unlucky.cancel()  # ...but its task is cancelled before it resumes
        await bounded(next_in_line, 1)
        assert unlucky.cancelled()
        turns.release()
        assert turns.free == 1 and turns.waiting == 0

    asyncio.run(scenario())


def test_connections_are_handed_out_in_arrival_order(database_url: str) -> None:
    """60 queries on a pool of 3 each start in the order they asked. asyncpg's own queue lets a
    newcomer take a connection that was already promised to a woken waiter: with its order
    (`pool.acquire` / `pool.release` here) queries started 10 to 24 places from their arrival,
    in every one of 12 runs, loaded or not.

    Newcomers arrive one per loop step in bursts of six, so they run in the same steps as the
    releases: that is where asyncpg's queue reorders. (Arrivals 1 ms apart hid it in most runs,
    and let a waiter woken for its turn resume one step after a newcomer that found another turn
    free, a harmless swap that failed this test under load.)"""

    async def scenario() -> tuple[list[int], list[int]]:
        pool = await bounded(asyncpg.create_pool(database_url, min_size=3, max_size=3))
        db = Database(pool, acquire_timeout=10)
        started: list[int] = []
        try:

            async def query(n: int) -> None:
                conn = await db.acquire()
                started.append(n)
                try:
                    await conn.execute("SELECT pg_sleep(0.002)")
                finally:
                    await db.release(conn)

            async def arrivals() -> list[int]:
                tasks, order = [], []
                for n in range(60):
                    tasks.append(asyncio.create_task(query(n)))
                    order.append(n)
                    await asyncio.sleep(0 if n % 6 else 0.003)
                await asyncio.gather(*tasks)
                return order

            order = await bounded(arrivals(), 10)
            assert pool.get_idle_size() == 3 and db.waiting == 0
            return order, started
        finally:
            await bounded(pool.close())

    order, started = asyncio.run(scenario())
    assert started == order


def test_the_whole_wait_for_a_connection_is_bounded_once(database_url: str) -> None:
    """A turn that comes late, with no idle connection behind it (the ORM holds it), waits only
    what is left of `acquire_timeout`, not a second `acquire_timeout`."""

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        pool = await bounded(asyncpg.create_pool(database_url, min_size=1, max_size=1))
        db = Database(pool, acquire_timeout=0.4)
        held = await bounded(pool.acquire())  # taken outside `Database`, as the ORM's are
        try:
            first = asyncio.create_task(db.acquire())  # the turn, then 0.4 s on the pool
            await asyncio.sleep(0.1)
            started = loop.time()
            with pytest.raises(TimeoutError):
                await bounded(db.acquire())  # 0.3 s for a turn, then what is left: nothing
            elapsed = loop.time() - started
            with pytest.raises(TimeoutError):
                await bounded(first)
            return elapsed
        finally:
            await bounded(pool.release(held))
            await bounded(pool.close())

    assert asyncio.run(scenario()) < 0.55


def test_a_caller_queued_behind_a_held_turn_gets_its_timeout_well_within_a_second(
    database_url: str,
) -> None:
    """A pool of one whose only turn is held (by a `Database` caller, as a slow request holds
    it): the next caller queues for the turn and must give up at `acquire_timeout`."""

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        pool = await bounded(asyncpg.create_pool(database_url, min_size=1, max_size=1))
        db = Database(pool, acquire_timeout=0.2)
        try:
            held = await bounded(db.acquire())
            try:
                started = loop.time()
                with pytest.raises(TimeoutError):
                    await bounded(db.fetchval("SELECT 1"))
                elapsed = loop.time() - started
                assert db.waiting == 0
            finally:
                await bounded(db.release(held))
            assert await bounded(db.fetchval("SELECT 1")) == 1  # the turn came back
            return elapsed
        finally:
            await bounded(pool.close())

    assert asyncio.run(scenario()) < 0.8


def test_a_turn_whose_idle_connection_must_reconnect_waits_only_the_acquire_timeout(
    database_url: str, black_hole: str
) -> None:
    """The pool counts a connection idle, but handing it out means opening a new one first
    (here: the pool's connections expired, and the server now never answers). That connect
    is bounded by the same deadline as the turn, not by the connect timeout (30 s here)."""

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        pool = await bounded(asyncpg.create_pool(database_url, min_size=1, max_size=1))
        db = Database(pool, acquire_timeout=0.2)
        try:
            assert pool.get_idle_size() == 1
            pool.set_connect_args(black_hole, timeout=30)
            await bounded(pool.expire_connections())
            assert pool.get_idle_size() == 1  # still looks ready to hand out
            started = loop.time()
            with pytest.raises(TimeoutError):
                await bounded(db.fetchval("SELECT 1"))
            return loop.time() - started
        finally:
            pool.terminate()

    assert asyncio.run(scenario()) < 0.8


def test_a_statement_after_a_wait_gets_what_is_left_of_the_command_timeout(
    database_url: str,
) -> None:
    """Wait and statement together stay within `command_timeout`: 0.4 s in the line leaves a
    statement 0.6 s of 1 s."""

    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        pool = await bounded(asyncpg.create_pool(database_url, min_size=1, max_size=1))
        db = Database(pool, acquire_timeout=0.5, command_timeout=1.0)
        try:
            held = await bounded(db.acquire())
            loop.call_later(0.4, lambda: asyncio.ensure_future(db.release(held)))
            started = loop.time()
            with pytest.raises(TimeoutError):
                await bounded(db.fetchval("SELECT pg_sleep(5)"))
            return loop.time() - started
        finally:
            pool.terminate()

    assert 0.9 <= asyncio.run(scenario()) < 1.4
