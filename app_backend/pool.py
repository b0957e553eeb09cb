"""A bounded pool of "database connections", the resource the v1 bug exhausts.

``GET /`` records every request in a database through a connection borrowed from this
pool, as a real web service would. The database is simulated in-process
(:class:`FakeDatabase`) so the demo needs no extra container, but the pool behaves like a
real one: at most ``size`` connections are checked out at once and :meth:`acquire` waits,
without any timeout, for one to come back. The pool itself is correct; the course's bug is
a caller that forgets :meth:`ConnectionPool.release` (see ``app_backend/server.py``).
"""

from __future__ import annotations

import asyncio
import itertools


class FakeDatabase:
    """Stands in for the real database: a single counter row."""

    __slots__ = ("_requests",)

    def __init__(self) -> None:
        self._requests = 0

    @property
    def requests(self) -> int:
        """How many requests have been recorded so far."""
        return self._requests

    def increment(self) -> int:
        """Add one request and return the new total (1-based)."""
        self._requests += 1
        return self._requests


class Connection:
    """One connection to :class:`FakeDatabase`; only usable while checked out."""

    __slots__ = ("_db", "id")

    def __init__(self, db: FakeDatabase, connection_id: int) -> None:
        self._db = db
        self.id = connection_id

    async def next_request_number(self) -> int:
        """Record one request and return its 1-based number.

        A real driver would await a network round trip here; the in-process database answers
        at once, which keeps the throughput benchmark about the web stack.
        """
        return self._db.increment()

    def __repr__(self) -> str:
        return f"<Connection {self.id}>"


class ConnectionPool:
    """At most ``size`` :class:`Connection` objects checked out at a time.

    Connections are opened lazily, as most real pools do, so a large ``size`` costs nothing
    until it is used.
    """

    def __init__(self, size: int, db: FakeDatabase | None = None) -> None:
        if size < 1:
            raise ValueError(f"pool size must be at least 1, got {size}")
        self._size = size
        self._db = db if db is not None else FakeDatabase()
        self._slots = asyncio.Semaphore(size)
        self._idle: list[Connection] = []
        self._checked_out: set[Connection] = set()
        self._ids = itertools.count(1)
        self._waiting = 0

    @property
    def db(self) -> FakeDatabase:
        """The database the connections talk to."""
        return self._db

    @property
    def size(self) -> int:
        """Maximum number of connections checked out at once."""
        return self._size

    @property
    def in_use(self) -> int:
        """Connections currently checked out (and not released)."""
        return len(self._checked_out)

    @property
    def waiting(self) -> int:
        """Callers blocked in :meth:`acquire`: with the v1 bug, the hanging requests."""
        return self._waiting

    async def acquire(self) -> Connection:
        """Check out a connection, waiting as long as it takes for a free slot.

        There is deliberately no timeout: a real pool with a generous timeout looks the same
        from the outside (requests pile up), and the hang is what the lesson observes.
        """
        # The counter only becomes visible to others if the semaphore makes us wait,
        # because acquire() returns without yielding when a slot is free.
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        connection = self._idle.pop() if self._idle else Connection(self._db, next(self._ids))
        self._checked_out.add(connection)
        return connection

    def release(self, connection: Connection) -> None:
        """Give a checked-out connection back and wake one waiter.

        Raises :class:`RuntimeError` if ``connection`` is not checked out of this pool, so a
        double release cannot silently grow the pool beyond ``size``.
        """
        if connection not in self._checked_out:
            raise RuntimeError(f"{connection!r} is not checked out of this pool")
        self._checked_out.remove(connection)
        self._idle.append(connection)
        self._slots.release()
