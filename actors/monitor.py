"""Monitors: one-shot notification that an actor has ended."""

from __future__ import annotations

import anyio

from .messages import Down

__all__ = ["Monitor"]


class Monitor:
    """Receives exactly one :class:`Down` when the monitored actor ends.

    A monitor of an actor that is already dead holds its ``Down`` from the start.
    """

    def __init__(self, down: Down | None = None) -> None:
        self._down = down
        self._event: anyio.Event | None = None

    @property
    def down(self) -> Down | None:
        """The ``Down`` message, once the actor has ended."""
        return self._down

    def deliver(self, down: Down) -> None:
        """Called (on the loop thread) by the ending actor."""
        if self._down is None:
            self._down = down
            if self._event is not None:
                self._event.set()

    async def receive(self) -> Down:
        """Wait for the ``Down`` message."""
        if self._down is None:
            if self._event is None:
                self._event = anyio.Event()
            await self._event.wait()
        else:
            await anyio.lowlevel.checkpoint()
        assert self._down is not None
        return self._down
