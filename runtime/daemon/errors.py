"""HTTP statuses of wasmhive's typed errors, and the errors only the daemon raises.

Every error response has a JSON body ``{"error": kind, "message": ...}``
where ``kind`` is the error's class name (``GuestTrap``, ``CircuitOpen``, ...).
"""

from __future__ import annotations

import math

from wasmhive.actors.errors import (
    ActorCrashed,
    AlreadyDeployed,
    CallTimeout,
    CircuitOpen,
    GuestError,
    GuestFault,
    InvalidConfig,
    InvalidModule,
    MailboxFull,
    Overloaded,
    PayloadTooLarge,
    RuntimeClosed,
    UnknownFunction,
    WasmhiveError,
)

from .store import StoreError, VersionInUse

__all__ = [
    "BadRequest",
    "Forbidden",
    "RequestTimeout",
    "ShuttingDown",
    "Starting",
    "Unauthorized",
    "VersionUnavailable",
    "retry_after",
    "status_of",
]


class BadRequest(WasmhiveError):
    """The request itself is malformed (not the payload a guest rejects: that is GuestError)."""


class Unauthorized(WasmhiveError):
    """An admin request without ``Authorization: Bearer <token>``."""


class Forbidden(WasmhiveError):
    """An admin request with the wrong token."""


class RequestTimeout(WasmhiveError):
    """The request took longer than ``server.request_timeout``."""


class VersionUnavailable(WasmhiveError):
    """The version a target resolved to is recorded but could not be started (see /readyz)."""


class Starting(WasmhiveError):
    """The daemon has just started and is still restoring its functions (see /readyz)."""


class ShuttingDown(WasmhiveError):
    """The daemon is stopping and the grace period for calls in flight is over."""


# Most specific first: the first class an error is an instance of decides.
_STATUSES: tuple[tuple[type[WasmhiveError], int], ...] = (
    (UnknownFunction, 404),
    (PayloadTooLarge, 413),
    (Unauthorized, 401),
    (Forbidden, 403),
    (VersionInUse, 409),
    (AlreadyDeployed, 409),
    (BadRequest, 400),
    (InvalidConfig, 400),
    (InvalidModule, 400),
    (Overloaded, 429),
    (MailboxFull, 429),
    (CircuitOpen, 503),
    (RuntimeClosed, 503),
    (ShuttingDown, 503),
    (Starting, 503),
    (VersionUnavailable, 503),
    (CallTimeout, 504),
    (RequestTimeout, 504),
    (GuestError, 422),
    (GuestFault, 502),
    (ActorCrashed, 502),
    (StoreError, 500),
)


def status_of(error: WasmhiveError) -> int:
    """The HTTP status of a typed error (500 for one this table does not know)."""
    for cls, status in _STATUSES:
        if isinstance(error, cls):
            return status
    return 500


def retry_after(error: WasmhiveError, now: float) -> int | None:
    """Seconds a client should wait before trying again (``Retry-After``), if the error says.

    ``now`` is the event loop's clock, the one breakers keep ``retry_at`` on.
    """
    if isinstance(error, CircuitOpen):
        at = error.details.get("retry_at")
        if isinstance(at, (int, float)):
            return max(1, math.ceil(at - now))
        return 1
    if isinstance(error, (Overloaded, MailboxFull, ShuttingDown, RuntimeClosed, Starting)):
        return 1
    return None
