"""What a supervisor needs from its children and from the event loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from wasmhive.actors.messages import ExitReason

__all__ = ["Cancel", "ExitCallback", "Scheduler", "Supervisable"]

#: Called on the loop thread with the child and why it ended.
ExitCallback = Callable[[Any, ExitReason], None]


class Supervisable(Protocol):
    """Anything a supervisor can start, watch and stop: a WASM actor or another supervisor.

    Children are started synchronously by a :class:`~wasmhive.supervisors.tree.ChildSpec`'s
    ``start`` function, and report their end through :meth:`on_exit`, on the
    event-loop thread, exactly once.
    """

    @property
    def alive(self) -> bool:
        """True until the child has begun to stop."""
        ...

    def on_exit(self, callback: ExitCallback) -> None:
        """Call ``callback(child, reason)`` when the child ends."""
        ...

    def stop(self, reason: ExitReason) -> None:
        """Stop taking work; end once the work in progress is done."""
        ...

    def kill(self) -> None:
        """End now, interrupting work in progress."""
        ...


class Cancel(Protocol):
    """A scheduled callback that can still be called off."""

    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """Runs a callback on the event loop after a delay (restart backoff, shutdown grace)."""

    def now(self) -> float:
        """The scheduler's clock (seconds)."""
        ...

    def call_later(self, delay: float, callback: Callable[[], None]) -> Cancel:
        """Run ``callback()`` on the loop in ``delay`` seconds, unless cancelled."""
        ...
