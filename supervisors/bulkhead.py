"""A bulkhead: a cap on the calls of one function running at once, with a bounded FIFO wait."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.lowlevel
import msgspec

from wasmhive.actors.errors import InvalidConfig, Overloaded

__all__ = ["Bulkhead", "BulkheadPolicy"]


class BulkheadPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Limits of a :class:`Bulkhead` (defaults as resilience4j's semaphore bulkhead).

    Invalid values raise :class:`~wasmhive.actors.errors.InvalidConfig` naming the field.
    """

    #: Calls allowed inside at once, >= 1.
    max_concurrent: int = 25
    #: Longest wait for a slot (seconds), >= 0; 0 rejects at once when full,
    #: ``math.inf`` waits as long as it takes.
    max_wait: float = 0.0

    def __post_init__(self) -> None:
        if self.max_concurrent < 1:
            raise InvalidConfig(f"max_concurrent must be >= 1, got {self.max_concurrent}")
        if math.isnan(self.max_wait) or self.max_wait < 0:
            raise InvalidConfig(f"max_wait must be >= 0, got {self.max_wait}")


class Bulkhead:
    """At most ``policy.max_concurrent`` callers of ``function`` inside :meth:`slot` at once.

    A caller that finds the bulkhead full waits in line (first come, first
    served) up to ``policy.max_wait`` seconds for a slot, then gets
    :class:`~wasmhive.actors.errors.Overloaded`.  A freed slot goes straight
    to the first caller in line, so later arrivals cannot overtake it.  A
    caller cancelled while waiting leaves the line and holds no slot.  Waits
    use anyio, so they run on the event loop's clock (trio's ``MockClock`` in
    tests).  Meant for one event loop; not thread-safe.
    """

    def __init__(self, policy: BulkheadPolicy, function: str) -> None:
        self.policy = policy
        self.function = function
        self._in_flight = 0
        self._rejected = 0
        self._line: deque[anyio.Event] = deque()

    @property
    def in_flight(self) -> int:
        """Callers inside a slot now (a slot handed to a waiter not yet resumed included)."""
        return self._in_flight

    @property
    def waiting(self) -> int:
        """Callers waiting in line for a slot."""
        return len(self._line)

    @property
    def rejected(self) -> int:
        """Callers turned away with ``Overloaded`` since the bulkhead was made."""
        return self._rejected

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the body of an ``async with``; raises ``Overloaded`` if none frees in time."""
        await anyio.lowlevel.checkpoint_if_cancelled()
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    def try_acquire(self) -> bool:
        """Take a free slot now if there is one (pair it with :meth:`release`)."""
        if self._in_flight < self.policy.max_concurrent and not self._line:
            self._in_flight += 1
            return True
        return False

    async def acquire(self) -> None:
        """Take a slot (pair it with :meth:`release`).

        A free slot is taken at once, without yielding or a cancellation check
        (nothing waited; the call that follows checks).  Otherwise the caller
        waits in line up to ``max_wait``.
        """
        # A freed slot goes to the line first, so a non-empty line means no free slot;
        # the second test only makes the FIFO rule explicit.
        if self._in_flight < self.policy.max_concurrent and not self._line:
            self._in_flight += 1
            return
        await anyio.lowlevel.checkpoint_if_cancelled()
        if self.policy.max_wait <= 0:
            raise self._reject()
        granted = anyio.Event()
        self._line.append(granted)
        try:
            with anyio.move_on_after(self.policy.max_wait):
                await granted.wait()
        except BaseException:
            self._leave_line(granted)
            raise
        if not granted.is_set():
            self._leave_line(granted)
            raise self._reject()

    def _leave_line(self, granted: anyio.Event) -> None:
        """A waiter gives up: pass on the slot it was handed, or just leave the line."""
        if granted.is_set():
            self.release()
        else:
            self._line.remove(granted)

    def release(self) -> None:
        """Free a slot: hand it to the first waiter, or count it free."""
        if self._line:
            self._line.popleft().set()
        else:
            self._in_flight -= 1

    def _reject(self) -> Overloaded:
        self._rejected += 1
        policy = self.policy
        return Overloaded(
            f"bulkhead full: {self._in_flight} of max_concurrent={policy.max_concurrent} calls running,"
            f" no slot freed within max_wait={policy.max_wait}s ({len(self._line)} waiting)",
            function=self.function,
            max_concurrent=policy.max_concurrent,
            max_wait=policy.max_wait,
        )
