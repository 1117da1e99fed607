"""Schedulers: delayed callbacks on the event loop, or on a hand-driven clock for tests."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable

import anyio
import anyio.abc

__all__ = ["LoopScheduler", "ManualScheduler"]


class _Scope:
    def __init__(self) -> None:
        self.scope: anyio.CancelScope | None = None
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        if self.scope is not None:
            self.scope.cancel()


class LoopScheduler:
    """Runs delayed callbacks as tasks of a task group, on the loop's clock.

    Under trio's ``MockClock`` the delays are virtual, which keeps tests fast.
    """

    def __init__(self, task_group: anyio.abc.TaskGroup, clock: Callable[[], float] = anyio.current_time) -> None:
        self._task_group = task_group
        #: The loop's clock (pass the backend's own function: it is on the hot path).
        self.now = clock

    def call_later(self, delay: float, callback: Callable[[], None]) -> _Scope:
        handle = _Scope()

        async def run() -> None:
            with anyio.CancelScope() as scope:
                handle.scope = scope
                if handle.cancelled:
                    return
                await anyio.sleep(delay)
                callback()

        self._task_group.start_soon(run)
        return handle


class _Entry:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualScheduler:
    """A scheduler whose clock only moves when :meth:`advance` is called (for tests)."""

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._queue: list[tuple[float, int, _Entry, Callable[[], None]]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def call_later(self, delay: float, callback: Callable[[], None]) -> _Entry:
        entry = _Entry()
        heapq.heappush(self._queue, (self._now + max(0.0, delay), next(self._seq), entry, callback))
        return entry

    def advance(self, seconds: float) -> None:
        """Move the clock forward, running every callback that falls due, in order."""
        until = self._now + seconds
        while self._queue and self._queue[0][0] <= until:
            when, _, entry, callback = heapq.heappop(self._queue)
            self._now = max(self._now, when)
            if not entry.cancelled:
                callback()
        self._now = until

    @property
    def pending(self) -> int:
        """Callbacks scheduled and not yet run or cancelled."""
        return sum(1 for _, _, entry, _ in self._queue if not entry.cancelled)
