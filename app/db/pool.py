"""The worker's database handle: the asyncpg pool behind a fair queue, every wait bounded.

`asyncpg.Pool.fetchrow` and friends wait forever for a free connection; a request that needs
the database must instead fail fast (503) when the pool is exhausted or the server is gone.

Waiters are served first come, first served. asyncpg's pool hands connections out through an
`asyncio.Queue`, which is not fair: a released connection wakes the longest waiter, but a
request that arrives before that waiter runs takes the connection, and under load some
requests lose that race again and again (the tail, not the median, grows). `FairQueue` (one
turn per pool connection, handed out in arrival order) decides who goes next; the pool's queue
behind it then has a free connection for every turn holder
(tests/unit/test_pool_turns.py).

Every wait has one deadline. A call waits at most DB_ACQUIRE_TIMEOUT for a connection (the
turn, then the pool, reconnecting included), and the statement gets what is left of
DB_COMMAND_TIMEOUT after that wait, so a whole call ends within DB_COMMAND_TIMEOUT. A
statement that times out, or whose caller is cancelled, ends its connection
(`TerminatingConnection`) instead of waiting on a server that may never answer. Connections
are never recycled by asyncpg inside a call (app/db/wiring.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import asyncpg
from asyncpg import connect_utils

from app.db.batch import Batched, KeyedReads, PageReads, RowInserts

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

log = logging.getLogger("app.pool")

# Cancel requests sent after a connection was ended, kept until done (a task nobody
# references may be collected mid-flight).
_cancels: set[asyncio.Task[None]] = set()


class TerminatingConnection(asyncpg.Connection):  # type: ignore[misc]
    """A pool connection that ends itself when a statement overruns its timeout or its caller
    is cancelled.

    asyncpg's own answer is a CancelRequest on a second connection, after which the
    connection waits, up to command_timeout again, for the server to acknowledge it: its
    release does, and so does every later statement on it (a transaction's ROLLBACK too).
    Against a hung server, one that accepts but never answers, that doubled the time to a
    503, and readiness took its own timeout plus command_timeout
    (tests/server/test_outage.py). Ending the connection frees the caller at once; the pool
    opens a new one when it is next needed. The CancelRequest still goes out, in the
    background, so a server that is only slow stops the statement instead of running it for
    nobody.
    """

    # Set once a statement was abandoned: the connection ends without going back to the pool.
    ending = False

    def _cancel_current_command(
        self, waiter: asyncio.Future[None], cancel_waiter: asyncio.Future[None] | None = None
    ) -> None:
        del waiter, cancel_waiter  # completed when the connection ends (protocol.abort)
        protocol = self._protocol
        self.ending = True
        # Ended on the next loop step: asyncpg's timeout callback, which called this, has yet
        # to give the caller its TimeoutError (ending it now would replace that with
        # "connection was closed in the middle of operation"). `Database.release` may end it
        # sooner.
        self._loop.call_soon(self._end)
        cancel = self._loop.create_task(
            _send_cancel(
                self._loop,
                self._addr,
                self._params,
                protocol.backend_pid,
                protocol.backend_secret,
                self._config.command_timeout,
            )
        )
        _cancels.add(cancel)
        cancel.add_done_callback(_cancels.discard)

    def _end(self) -> None:
        if not self.is_closed():
            self.terminate()


async def _send_cancel(
    loop: asyncio.AbstractEventLoop,
    addr: Any,
    params: Any,
    backend_pid: int,
    backend_secret: int,
    timeout: float | None,
) -> None:
    """Ask the server to stop a statement whose connection was ended; best effort, bounded."""
    try:
        async with asyncio.timeout(timeout or 5.0):
            await connect_utils._cancel(  # noqa: SLF001 (asyncpg's own cancel request)
                loop=loop,
                addr=addr,
                params=params,
                backend_pid=backend_pid,
                backend_secret=backend_secret,
            )
    except (OSError, TimeoutError) as exc:
        log.debug("cancel request for backend %d not delivered: %r", backend_pid, exc)


class FairQueue:
    """At most `count` holders at once; the others wait in arrival order, each at most `timeout`
    seconds (then `acquire` raises TimeoutError).

    An `asyncio.Semaphore` (fair since Python 3.11.1) inside `asyncio.timeout` would do, but
    makes a Timeout object and a timer per wait, on the hot path of every request. Here all
    waits are equally long, so deadlines come in arrival order and one timer, armed for the
    oldest waiter, serves the whole line.
    """

    __slots__ = ("free", "timeout", "timer", "waiters")

    def __init__(self, count: int, timeout: float) -> None:
        self.free = count
        self.timeout = timeout
        # (deadline, future) per waiter, oldest first. A future here is pending, or done and
        # not yet removed: its task was cancelled while waiting (see `acquire`).
        self.waiters: deque[tuple[float, asyncio.Future[None]]] = deque()
        self.timer: asyncio.TimerHandle | None = None

    async def acquire(self) -> float | None:
        """Take a turn; returns the deadline the wait ran to, or None when there was no wait."""
        # `free` is only above zero when nobody waits: `release` hands a turn straight to the
        # oldest waiter, so a new arrival can never overtake the line.
        if self.free:
            self.free -= 1
            return None
        loop = asyncio.get_running_loop()
        entry = (loop.time() + self.timeout, loop.create_future())
        self.waiters.append(entry)
        if self.timer is None:
            self.timer = loop.call_at(entry[0], self._expire, loop)
        try:
            await entry[1]
            return entry[0]
        except asyncio.CancelledError:
            # The task was cancelled (the client went away). Leave the line, or, if the turn
            # was handed over just before, pass it on.
            waiter = entry[1]
            if waiter.cancelled():
                try:
                    self.waiters.remove(entry)
                except ValueError:
                    pass
            elif waiter.exception() is None:
                self.release()
            raise

    def release(self) -> None:
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()[1]
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1

    @property
    def waiting(self) -> int:
        return len(self.waiters)

    def _expire(self, loop: asyncio.AbstractEventLoop) -> None:
        self.timer = None
        waiters = self.waiters
        now = loop.time()
        while waiters and waiters[0][0] <= now:
            waiter = waiters.popleft()[1]
            if not waiter.done():
                waiter.set_exception(TimeoutError("no database connection was free in time"))
        if waiters:
            self.timer = loop.call_at(waiters[0][0], self._expire, loop)


class Database:
    """`fetch` / `fetchrow` / `fetchval` / `execute` on a pool connection held for one call."""

    __slots__ = (
        "acquire_timeout",
        "batch_limit",
        "batches",
        "command_timeout",
        "pool",
        "queue",
    )

    def __init__(
        self,
        pool: asyncpg.Pool,
        acquire_timeout: float,
        command_timeout: float | None = None,
        batch_limit: int = 0,
    ) -> None:
        self.pool = pool
        self.acquire_timeout = acquire_timeout
        # The statement's budget after a wait for a connection; None: the pool's own timeout.
        self.command_timeout = command_timeout
        self.queue = FairQueue(pool.get_max_size(), acquire_timeout)
        # The most reads one batched statement serves (app/db/batch.py); 0 or 1: no batching.
        self.batch_limit = batch_limit
        # The batching readers and writers, by their statement (one per statement and worker).
        self.batches: dict[str, Batched[Any]] = {}

    def keyed_reads(self, one_sql: str, many_sql: str, key_column: str) -> KeyedReads:
        """The batching reader of rows by key of `many_sql` over this pool (app/db/batch.py)."""
        found = self.batches.get(many_sql)
        if not isinstance(found, KeyedReads):
            found = KeyedReads(self, one_sql, many_sql, key_column, self.batch_limit)
            self.batches[many_sql] = found
        return found

    def page_reads(self, one_sql: str, types: Sequence[str], order: Sequence[str]) -> PageReads:
        """The batching reader of pages of `one_sql` over this pool; `types` are its
        parameters' PostgreSQL types, `order` its ORDER BY terms."""
        found = self.batches.get(one_sql)
        if not isinstance(found, PageReads):
            found = self.batches[one_sql] = PageReads(self, one_sql, types, order, self.batch_limit)
        return found

    def row_inserts(self, one_sql: str, many_sql: str, key_column: str) -> RowInserts:
        """The batching writer of rows by `one_sql` / `many_sql` over this pool."""
        found = self.batches.get(many_sql)
        if not isinstance(found, RowInserts):
            found = RowInserts(self, one_sql, many_sql, key_column, self.batch_limit)
            self.batches[many_sql] = found
        return found

    @property
    def waiting(self) -> int:
        """Calls waiting for a connection now (a gauge, app/ops/metrics.py)."""
        return self.queue.waiting

    async def acquire(self) -> asyncpg.Connection:
        """A pool connection within `acquire_timeout`, else TimeoutError; give it back with
        `release`."""
        return (await self.take_connection())[0]

    async def take_connection(self) -> tuple[asyncpg.Connection, float | None]:
        """A connection, and the deadline its turn's wait ran to (None: there was no wait)."""
        waited_until = await self.queue.acquire()
        deadline = waited_until
        if deadline is None:
            deadline = asyncio.get_running_loop().time() + self.acquire_timeout
        try:
            # The same deadline as the turn's: with a turn there is a pool connection for it,
            # but it may have to be opened first (its last one ended, or the pool is still
            # growing to its size), and a connect to a hung server never returns by itself.
            async with asyncio.timeout_at(deadline):
                return await self.pool.acquire(), waited_until
        except BaseException:
            self.queue.release()
            raise

    def statement_timeout(self, waited_until: float | None) -> float | None:
        """What is left of `command_timeout` after the wait for a connection."""
        if waited_until is None or self.command_timeout is None:
            return None  # no wait: the pool connection's own command_timeout
        waited = asyncio.get_running_loop().time() - (waited_until - self.acquire_timeout)
        left = self.command_timeout - waited
        if left <= 0:
            raise TimeoutError("the wait for a database connection used the statement's time")
        return left

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection for several statements (a transaction, the ORM's turn), under one
        deadline: all of them together get what one statement would have, the rest of
        `command_timeout` after the wait (None: each statement the pool connection's own).
        One that overruns is cancelled, which ends its connection (`TerminatingConnection`),
        and the deadline raises TimeoutError here."""
        conn, waited_until = await self.take_connection()
        try:
            left = self.statement_timeout(waited_until)
            async with asyncio.timeout(self.command_timeout if left is None else left):
                yield conn
        finally:
            await self.release(conn)

    async def release(self, conn: asyncpg.Connection) -> None:
        try:
            connection = conn._con  # noqa: SLF001 (the pool proxy's; None once given back)
            if connection is None:
                return  # it ended itself, which gave its pool slot back
            if getattr(connection, "ending", False):  # a TerminatingConnection's
                # Ended here, before asyncpg's release (a task of its own) could run after
                # the end and find its slot already given back.
                connection.terminate()
                return
            await self.pool.release(conn)
        finally:
            self.queue.release()

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        conn, waited_until = await self.take_connection()
        try:
            timeout = self.statement_timeout(waited_until)
            return await conn.fetch(query, *args, timeout=timeout)  # type: ignore[no-any-return]
        finally:
            await self.release(conn)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        conn, waited_until = await self.take_connection()
        try:
            timeout = self.statement_timeout(waited_until)
            return await conn.fetchrow(query, *args, timeout=timeout)
        finally:
            await self.release(conn)

    async def fetchval(self, query: str, *args: Any) -> Any:
        conn, waited_until = await self.take_connection()
        try:
            timeout = self.statement_timeout(waited_until)
            return await conn.fetchval(query, *args, timeout=timeout)
        finally:
            await self.release(conn)

    async def execute(self, query: str, *args: Any) -> str:
        conn, waited_until = await self.take_connection()
        try:
            timeout = self.statement_timeout(waited_until)
            return await conn.execute(query, *args, timeout=timeout)  # type: ignore[no-any-return]
        finally:
            await self.release(conn)


class TracedDatabase(Database):
    """A `Database` that wraps every query in a client span (used only when tracing is on)."""

    __slots__ = ("tracer",)

    def __init__(
        self,
        pool: asyncpg.Pool,
        acquire_timeout: float,
        tracer: Tracer,
        command_timeout: float | None = None,
    ) -> None:
        super().__init__(pool, acquire_timeout, command_timeout)
        self.tracer = tracer

    def _span(self, operation: str, query: str) -> Any:
        from opentelemetry.trace import SpanKind

        return self.tracer.start_as_current_span(
            f"db.{operation}",
            kind=SpanKind.CLIENT,
            attributes={
                "db.system": "postgresql",
                "db.operation": operation,
                "db.statement": query,
            },
        )

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        with self._span("fetch", query):
            return await super().fetch(query, *args)

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        with self._span("fetchrow", query):
            return await super().fetchrow(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        with self._span("fetchval", query):
            return await super().fetchval(query, *args)

    async def execute(self, query: str, *args: Any) -> str:
        with self._span("execute", query):
            return await super().execute(query, *args)


def untraced(db: Database) -> Database:
    """`db` without spans: for a worker's background polls (token revocations, gauges), which
    are no request; a root trace per poll would bury the real ones (`tests/api/test_tracing.py`
    counts one query span per request). The same pool and the same turns."""
    if not isinstance(db, TracedDatabase):
        return db
    plain = Database.__new__(Database)
    for name in Database.__slots__:
        setattr(plain, name, getattr(db, name))
    return plain
