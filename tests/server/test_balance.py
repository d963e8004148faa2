"""Keep-alive connections move from a crowded worker to an idle one (app/balance.py)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time

import psutil

from tests.server.test_workers import server_workers

CLIENTS = 40


class Client:
    """One keep-alive HTTP/1.1 connection that reconnects when the server says close."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.reconnects = 0

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)

    async def get(self, path: str) -> int:
        if self.writer is None:
            await self.connect()
            self.reconnects += 1
        assert self.reader is not None and self.writer is not None
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode().lower()
        length = int(head.split("content-length: ", 1)[1].split("\r\n", 1)[0])
        await self.reader.readexactly(length)
        if "connection: close" in head:
            await self.close()
        return int(head.split(" ", 2)[1])

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


def _connections_per_worker(workers: list[psutil.Process], port: int) -> list[int]:
    return [
        sum(
            1
            for c in w.net_connections("tcp")
            if c.laddr.port == port and c.status == "ESTABLISHED"
        )
        for w in workers
    ]


def test_connections_pile_on_one_worker_then_spread_evenly(live: str) -> None:
    port = int(live.rsplit(":", 1)[1])
    workers = server_workers(live)
    assert len(workers) == 2
    stopped = workers[1]

    async def run() -> tuple[list[int], int, list[int], list[int], int]:
        clients = [Client(port) for _ in range(CLIENTS)]
        # With one worker stopped, the other accepts every connection: a 40/0 start.
        stopped.send_signal(signal.SIGSTOP)
        try:
            await asyncio.gather(*(c.connect() for c in clients))
            await asyncio.gather(*(c.get("/health") for c in clients))
            before = _connections_per_worker(workers, port)
            # Balancing may already have begun: the running worker can close some of these
            # once its shared count shows it crowded (slow machines reach that interval).
            shed = sum(c.writer is None for c in clients)
        finally:
            stopped.send_signal(signal.SIGCONT)
        # Each client keeps requesting on its own, so reconnects come one at a time, as they
        # would from independent clients (a lock-step burst goes to whichever worker wakes).
        deadline = time.monotonic() + 4

        async def keep_requesting(client: Client) -> list[int]:
            statuses = []
            while time.monotonic() < deadline:
                statuses.append(await client.get("/health"))
            return statuses

        per_client = await asyncio.gather(*(keep_requesting(c) for c in clients))
        statuses = [status for statuses in per_client for status in statuses]
        after = _connections_per_worker(workers, port)
        reconnects = sum(c.reconnects for c in clients)
        await asyncio.gather(*(c.close() for c in clients))
        return before, shed, after, statuses, reconnects

    before, shed, after, statuses, reconnects = asyncio.run(run())
    # Every connection went to the running worker: it holds them, or closed them after a reply.
    assert before[1] == 0 and before[0] + shed == CLIENTS, (before, shed)
    # Every request answered; the crowded worker closed connections only between responses.
    assert set(statuses) == {200}
    assert sum(after) == CLIENTS
    # Fair share 20 each, plus the slack of 1 and one interval's worth of staleness.
    assert max(after) - min(after) <= 6, after
    assert reconnects < CLIENTS, reconnects
