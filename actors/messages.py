"""The messages that cross an actor's mailbox, all msgspec Structs.

Callers never hold an actor object: they hold an :class:`ActorRef` and send
:class:`Invoke` messages; they get back a :class:`Reply` or a :class:`Failed`.
Monitors receive :class:`Down`.  Because everything here is a Struct, the same
messages can be framed as msgpack when an actor lives in another process.
"""

from __future__ import annotations

import enum

import msgspec

from .errors import ErrorInfo

__all__ = [
    "RUNTIME_CLOSING",
    "ActorRef",
    "ActorState",
    "Down",
    "ExitReason",
    "Failed",
    "Invoke",
    "Outcome",
    "Reply",
]


class ActorState(enum.Enum):
    """The life cycle of an actor."""

    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    STOPPING = "stopping"
    STOPPED = "stopped"
    CRASHED = "crashed"


class ActorRef(msgspec.Struct, frozen=True):
    """The address of an actor: what callers hold instead of the actor itself."""

    id: int
    function: str


class Invoke(msgspec.Struct):
    """Run the guest's handler once with ``payload``."""

    payload: bytes


class Reply(msgspec.Struct):
    """A successful call: the bytes the guest emitted (for ``invoke``) then its reply."""

    data: bytes


class Failed(msgspec.Struct):
    """A failed call, with the error as data."""

    error: ErrorInfo


Outcome = Reply | Failed


class ExitReason(msgspec.Struct, frozen=True):
    """Why an actor ended.

    ``kind`` is ``normal`` (stopped on request), ``shutdown`` (the runtime
    closed), ``noproc`` (monitored after it was already gone and forgotten),
    or the ``exit_kind`` of the fault that killed it: ``trap``, ``timeout``,
    ``oom``, ``fuel``, ``abi``.
    """

    kind: str
    message: str = ""

    @property
    def abnormal(self) -> bool:
        """True when the actor died of a fault rather than being stopped."""
        return self.kind not in ("normal", "shutdown")


#: The reason every actor ends with when its runtime closes.
RUNTIME_CLOSING = ExitReason("shutdown", "the runtime is closing")


class Down(msgspec.Struct, frozen=True):
    """Sent to every monitor of an actor when the actor ends."""

    actor: ActorRef
    reason: ExitReason
