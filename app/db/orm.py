"""The ORM's database client: Tortoise's asyncpg backend, its connections taken from the worker's
`Database`, so an ORM query waits in the same fair queue and ends by the same deadline as the
hand-written SQL (app/db/pool.py).

Without it Tortoise would take connections from the shared asyncpg pool directly: an ORM query
would jump the queue (starving requests that wait their turn) and wait for a connection for as
long as the pool lets it, forever. Here every ORM statement, or every transaction, takes a turn
within DB_ACQUIRE_TIMEOUT and finishes (BEGIN and COMMIT included) within DB_COMMAND_TIMEOUT of
asking for it, else TimeoutError, which the app answers 503 (tests/unit/test_orm_client.py).

Tortoise finds this class through the config's `engine` (`client_class` below,
`tortoise_config` in app/db/wiring.py). Code passes the client explicitly (`using_db=`): the
Tortoise context a request sees is the process-wide fallback, which the several apps of a test
process share, so only the client says whose pool and queue a query uses.
"""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg
from tortoise.backends.asyncpg.client import AsyncpgDBClient, TransactionWrapper
from tortoise.backends.base.client import TransactionContext
from tortoise.exceptions import DBConnectionError, TransactionManagementError

from app.db.pool import Database

log = logging.getLogger("app.db")


class FairQueueClient(AsyncpgDBClient):
    """`AsyncpgDBClient` whose connections come through a `Database` (`fair_pool`): its own over
    its pool until `share` hands it the worker's (the one the SQL uses, and so the same queue).

    (`database`, Tortoise's attribute, is the database's name.)"""

    def __init__(self, *, acquire_timeout: float = 5.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.acquire_timeout = acquire_timeout
        command_timeout = self.extra.get("command_timeout")
        self.command_timeout: float | None = (
            float(command_timeout) if command_timeout is not None else None
        )
        self.fair_pool: Database | None = None

    @property
    def pool(self) -> asyncpg.Pool | None:
        """The asyncpg pool under this client; None until it is opened."""
        return self._pool

    def share(self, database: Database) -> None:
        """Take connections through `database` (over this client's pool) from now on."""
        if database.pool is not self._pool:
            raise ValueError("the Database must be over this client's own pool")
        self.fair_pool = database

    async def create_connection(self, with_db: bool) -> None:
        await super().create_connection(with_db)
        self.fair_pool = Database(self._pool, self.acquire_timeout, self.command_timeout)

    async def _close(self) -> None:
        await super()._close()
        self.fair_pool = None

    async def _opened(self) -> Database:
        fair_pool = self.fair_pool
        if fair_pool is None:
            # Opened on first use, like Tortoise's own client (one opener at a time).
            async with self._pool_init_lock:
                if self.fair_pool is None:
                    await self.create_connection(with_db=True)
                fair_pool = self.fair_pool
        if fair_pool is None:
            raise DBConnectionError("the ORM's connection pool was closed while opening")
        return fair_pool

    def acquire_connection(self) -> Turn:  # type: ignore[override]
        return Turn(self)

    def _in_transaction(self) -> TransactionContext:
        return FairTransaction(TransactionWrapper(self))


class Turn:
    """A connection for one ORM statement (or one transaction): the `Database`'s `held()`, a
    turn in its queue and one deadline over everything run on the connection until it is
    given back (DB_COMMAND_TIMEOUT from asking, wait included).

    The deadline is held open between `__aenter__` and `__aexit__`, so it also bounds the
    statements Tortoise runs inside; one that overruns is cancelled, which ends its
    connection (`TerminatingConnection`) instead of waiting on the server.
    """

    __slots__ = ("client", "held")

    def __init__(self, client: FairQueueClient) -> None:
        self.client = client
        self.held: AbstractAsyncContextManager[asyncpg.Connection] | None = None

    async def __aenter__(self) -> asyncpg.Connection:
        database = await self.client._opened()  # noqa: SLF001 (its own client's)
        held = database.held()
        connection = await held.__aenter__()
        self.held = held
        return connection

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        held, self.held = self.held, None
        if held is not None:
            # Turns the cancellation of an overrun into TimeoutError (raised from here).
            await held.__aexit__(exc_type, exc, tb)


class FairTransaction(TransactionContext):
    """Tortoise's pooled transaction, its connection held through a `Turn`: one turn and one
    deadline for the whole transaction.

    Unlike Tortoise's own, it does not make itself the context's connection: code inside runs
    its queries on the client this returns (`using_db=`)."""

    client: TransactionWrapper

    def __init__(self, client: TransactionWrapper) -> None:
        self.client = client
        self.turn = Turn(client._parent)  # type: ignore[arg-type]  # noqa: SLF001

    async def __aenter__(self) -> TransactionWrapper:
        self.client._connection = await self.turn.__aenter__()  # noqa: SLF001
        try:
            await self.client.begin()
        except BaseException as exc:
            await self.turn.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self.client

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        # The turn leaves with the exception that is on its way out: the deadline's own
        # cancellation, wherever it struck, becomes TimeoutError there.
        outcome = (exc_type, exc, tb)
        try:
            if not self.client._finalized:  # noqa: SLF001
                if exc_type is None:
                    await self.client.commit()
                # A transaction that failed on its own state cannot be rolled back.
                elif exc_type is not TransactionManagementError:
                    try:
                        await self.client.rollback()
                    except (
                        OSError,
                        TimeoutError,
                        asyncpg.PostgresError,
                        asyncpg.InterfaceError,
                    ) as failure:
                        # The body's error is the one to report. The connection is ended when
                        # it is given back if it was abandoned, else the pool rolls it back.
                        log.debug("rollback after %r failed: %r", exc, failure)
        except BaseException as failure:
            outcome = (type(failure), failure, failure.__traceback__)
            raise
        finally:
            await self.turn.__aexit__(*outcome)


# How Tortoise finds the client of an `engine` module.
client_class = FairQueueClient
