"""Supervision events and the bus that carries them to metrics, logs and the stress harness."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import anyio
import msgspec

from wasmhive.actors.messages import ExitReason

__all__ = [
    "ChildExited",
    "ChildRestarted",
    "ChildStarted",
    "ChildStopped",
    "Event",
    "EventBus",
    "SupervisorGaveUp",
]

logger = logging.getLogger("wasmhive.supervisors")


class ChildStarted(msgspec.Struct, frozen=True, tag=True):
    """A child started (the first time, or again after a restart)."""

    supervisor: str
    child: str
    at: float


class ChildExited(msgspec.Struct, frozen=True, tag=True):
    """A child ended on its own (not stopped by its supervisor)."""

    supervisor: str
    child: str
    reason: ExitReason
    at: float


class ChildRestarted(msgspec.Struct, frozen=True, tag=True):
    """A child is being restarted after ``delay`` seconds of backoff (restart number ``count``)."""

    supervisor: str
    child: str
    count: int
    delay: float
    at: float


class ChildStopped(msgspec.Struct, frozen=True, tag=True):
    """The supervisor stopped a child (a strategy's sibling restart, scale-down or shutdown)."""

    supervisor: str
    child: str
    reason: ExitReason
    at: float


class SupervisorGaveUp(msgspec.Struct, frozen=True, tag=True):
    """More than ``max_restarts`` restarts within ``period``: the supervisor stopped everything."""

    supervisor: str
    restarts: int
    period: float
    at: float


Event = ChildStarted | ChildExited | ChildRestarted | ChildStopped | SupervisorGaveUp


class EventBus:
    """Fan-out of supervision events to callbacks and to async subscribers.

    Publishing never blocks: a subscriber whose buffer is full loses the
    event, and its ``dropped`` count says how many.
    """

    def __init__(self) -> None:
        self._listeners: list[Callable[[Event], None]] = []
        self._streams: list[_Subscription] = []
        self.published = 0

    def listen(self, callback: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``callback(event)`` for every event; returns a function that stops it."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback) if callback in self._listeners else None

    def subscribe(self, buffer: int = 1000) -> _Subscription:
        """An async iterator over the events from now on (use it as a context manager to end it)."""
        subscription = _Subscription(self, buffer)
        self._streams.append(subscription)
        return subscription

    @property
    def subscribers(self) -> int:
        """Async subscriptions still open."""
        return len(self._streams)

    def publish(self, event: Event) -> None:
        self.published += 1
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                logger.exception("supervision event listener failed")
        for stream in list(self._streams):
            stream._offer(event)

    def _remove(self, subscription: _Subscription) -> None:
        if subscription in self._streams:
            self._streams.remove(subscription)


class _Subscription:
    def __init__(self, bus: EventBus, buffer: int) -> None:
        self._bus = bus
        self._send, self._receive = anyio.create_memory_object_stream[Event](buffer)
        self.dropped = 0

    def _offer(self, event: Event) -> None:
        try:
            self._send.send_nowait(event)
        except anyio.WouldBlock:
            self.dropped += 1
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self._bus._remove(self)

    def close(self) -> None:
        self._bus._remove(self)
        self._send.close()

    async def __aenter__(self) -> _Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
        self._receive.close()

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._events()

    async def _events(self) -> AsyncIterator[Event]:
        try:
            async for event in self._receive:
                yield event
        finally:  # the consumer stopped (break, cancellation): stop buffering for it
            self.close()

    async def receive(self) -> Event:
        """The next event."""
        return await self._receive.receive()
