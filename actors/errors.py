"""The typed errors of wasmhive.

Every error a user can cause derives from :class:`WasmhiveError` and names the
function it concerns.  Errors cross the mailbox (and later process and network
boundaries) as :class:`ErrorInfo` structs; :func:`error_from_info` turns one
back into the same exception type with the same attributes.

Errors split in two families:

* :class:`GuestFault` and its subclasses end the actor that raised them (the
  guest trapped, ran out of time, memory or fuel, or broke the ABI);
* every other error leaves the actor alive.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

__all__ = [
    "AbiError",
    "ActorCrashed",
    "ActorKilled",
    "AlreadyDeployed",
    "CallTimeout",
    "CircuitOpen",
    "ErrorInfo",
    "FuelExhausted",
    "GuestError",
    "GuestFault",
    "GuestTrap",
    "HostError",
    "InvalidConfig",
    "InvalidModule",
    "MailboxFull",
    "OutOfMemory",
    "Overloaded",
    "PayloadTooLarge",
    "RuntimeClosed",
    "UnknownFunction",
    "WasmhiveError",
    "error_from_info",
]


class ErrorInfo(msgspec.Struct, frozen=True):
    """An error as data: what crosses a mailbox or a wire instead of an exception."""

    type: str
    message: str
    function: str | None = None
    details: dict[str, Any] = {}


_ERROR_TYPES: dict[str, type[WasmhiveError]] = {}


class WasmhiveError(Exception):
    """Base class of every error wasmhive raises on purpose.

    ``function`` names the deployed function concerned (``None`` when no
    function is involved); ``details`` holds the error's extra fields, which
    subclasses expose as attributes.
    """

    #: Whether the error ends the actor that produced it.
    fatal: ClassVar[bool] = False

    def __init__(self, message: str, *, function: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.function = function
        self.details = details

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _ERROR_TYPES[cls.__name__] = cls

    def __str__(self) -> str:
        if self.function is None:
            return self.message
        return f"{self.function}: {self.message}"

    def to_info(self) -> ErrorInfo:
        """This error as an :class:`ErrorInfo` struct."""
        return ErrorInfo(type(self).__name__, self.message, self.function, self.details)


_ERROR_TYPES["WasmhiveError"] = WasmhiveError


def error_from_info(info: ErrorInfo) -> WasmhiveError:
    """Rebuild the typed exception that :meth:`WasmhiveError.to_info` described."""
    cls = _ERROR_TYPES.get(info.type, WasmhiveError)
    return cls(info.message, function=info.function, **info.details)


class InvalidModule(WasmhiveError):
    """The bytes are not a usable module: not wasm, or missing/mistyped ABI exports or imports."""


class InvalidConfig(WasmhiveError, ValueError):
    """A runtime or deployment option has a value that cannot work; the message names it.

    Also a ``ValueError``, so that when msgspec builds a config struct whose
    ``__post_init__`` raises it (``PoolPolicy``, ``RuntimeConfig``, ...), the
    ``ValidationError`` says where in the document the bad table is.
    """


class UnknownFunction(WasmhiveError):
    """No function is deployed under that name."""


class AlreadyDeployed(WasmhiveError):
    """A function of that name is already deployed; undeploy it first."""


class PayloadTooLarge(WasmhiveError):
    """A request payload is over the runtime's ``max_payload_bytes``."""

    @property
    def size(self) -> int:
        return int(self.details.get("size", 0))

    @property
    def limit(self) -> int:
        return int(self.details.get("limit", 0))


class MailboxFull(WasmhiveError):
    """The actor's mailbox is full (``reject``), or stayed full past the wait deadline (``wait``)."""


class RuntimeClosed(WasmhiveError):
    """The runtime is shutting down or closed; the message was not handled."""


class Overloaded(WasmhiveError):
    """Too much at once: the function's bulkhead is full, or no actor became available in time."""


class CircuitOpen(WasmhiveError):
    """The function's circuit breaker is open: the call was not attempted.

    ``retry_at`` is the time on the runtime's clock (the event loop's,
    ``anyio.current_time()``) at which the breaker will let a probe call
    through, or None if it is forced open or its half-open probes are all busy.
    """

    @property
    def retry_at(self) -> float | None:
        value = self.details.get("retry_at")
        return None if value is None else float(value)


class GuestError(WasmhiveError):
    """The guest reported an application error through ``fail``; the actor lives on."""


class ActorCrashed(WasmhiveError):
    """The message was queued (or sent) to an actor that died before handling it.

    ``reason`` is the exit reason's kind (``trap``, ``timeout``, ...).
    """

    @property
    def reason(self) -> str:
        return str(self.details.get("reason", "unknown"))


class GuestFault(WasmhiveError):
    """Base of the errors that end the actor: the guest can no longer be trusted."""

    fatal = True
    #: The exit-reason kind an actor dies with when this error ends it.
    exit_kind: ClassVar[str] = "fault"


class CallTimeout(GuestFault):
    """The call ran past its deployment's timeout and was interrupted."""

    exit_kind = "timeout"


class ActorKilled(GuestFault):
    """The actor was killed while handling this call (a hard stop after its grace period)."""

    exit_kind = "killed"


class OutOfMemory(GuestFault):
    """The guest hit its deployment's memory limit (a refused ``memory.grow`` and then a trap)."""

    exit_kind = "oom"


class FuelExhausted(GuestFault):
    """The guest used up its per-call fuel (instruction budget)."""

    exit_kind = "fuel"


class GuestTrap(GuestFault):
    """The guest trapped; ``trap_code`` and ``backtrace`` say where and why."""

    exit_kind = "trap"

    @property
    def trap_code(self) -> str | None:
        code = self.details.get("trap_code")
        return None if code is None else str(code)

    @property
    def backtrace(self) -> list[str]:
        return list(self.details.get("backtrace", []))


class HostError(GuestFault):
    """Host code serving the guest failed unexpectedly (a bug or a failing store).

    The guest is not to blame, but its call was cut off halfway, so the actor
    ends as it would after a fault.
    """

    exit_kind = "host"


class AbiError(GuestFault):
    """The guest broke ABI v1: a pointer outside its memory, undecodable msgpack, ..."""

    exit_kind = "abi"
