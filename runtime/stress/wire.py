"""What an HTTP invoke came back with, as the harness counts it: a reply, a typed error, or an untyped one.

* A ``200`` is a reply.
* A JSON error body ``{"error": kind, "message": ...}`` whose ``kind`` names a
  :class:`~wasmhive.actors.errors.WasmhiveError` subclass (the runtime's own,
  or the daemon's from :mod:`wasmhive.runtime.daemon.errors`) becomes that
  class again, through :func:`~wasmhive.actors.errors.error_from_info`.
* A transport failure becomes one of the harness's own typed kinds below.
  Except for :class:`ConnectionFailed` (nothing was sent) its outcome is
  *indeterminate*: the request may or may not have run.  The daemon's
  execution trace settles which (docs/stress.md, "Daemon target").
* Anything else (a non-JSON ``500``, an unknown kind, a body that is not
  wasmhive's) is an :class:`UntypedAnswer`, which is *not* a WasmhiveError:
  the checker's ``typed_errors`` invariant fails on it.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

import wasmhive.runtime.daemon.errors  # noqa: F401  (registers the daemon's error kinds by name)
from wasmhive.actors.errors import ErrorInfo, WasmhiveError, error_from_info

__all__ = [
    "ClientTimeout",
    "ConnectionFailed",
    "ConnectionReset",
    "TransportError",
    "UntypedAnswer",
    "error_from_answer",
    "error_from_transport",
]


class TransportError(WasmhiveError):
    """The harness's HTTP client got no answer.  The subclasses say how."""


class ConnectionFailed(TransportError):
    """No connection (refused: the daemon is down; or none within the deadline).  The request was not sent."""


class ConnectionReset(TransportError):
    """The connection broke (reset or closed) after the request was sent, before the whole answer came.

    Indeterminate: the request may have run.
    """


class ClientTimeout(TransportError):
    """No answer within the scenario's ``deadline`` (the client's timeout).  Indeterminate."""


class UntypedAnswer(Exception):
    """An answer that is neither a reply nor a typed error (deliberately not a WasmhiveError)."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text[:200]}")
        self.status = status


def error_from_answer(status: int, body: bytes) -> WasmhiveError | UntypedAnswer:
    """The error a non-200 answer stands for: typed if its JSON body names a known kind, else untyped."""
    try:
        data: Any = json.loads(body)
    except ValueError:
        return UntypedAnswer(status, body.decode(errors="replace"))
    kind = data.get("error") if isinstance(data, dict) else None
    message = data.get("message") if isinstance(data, dict) else None
    if not isinstance(kind, str) or not isinstance(message, str):
        return UntypedAnswer(status, body.decode(errors="replace"))
    function = data.get("function")
    info = ErrorInfo(kind, message, function if isinstance(function, str) else None)
    try:
        error = error_from_info(info)
    except TypeError:  # a class whose constructor needs more than a message
        return UntypedAnswer(status, f"{kind}: {message}")
    if type(error).__name__ != kind:  # error_from_info falls back to WasmhiveError for unknown kinds
        return UntypedAnswer(status, f"unknown error kind {kind!r}: {message}")
    return error


def error_from_transport(exc: httpx.TransportError, function: str) -> TransportError | None:
    """The typed kind of an httpx transport failure (None for one that is not about the connection)."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)):  # nothing was sent
        return ConnectionFailed(text, function=function)
    if isinstance(exc, httpx.TimeoutException):  # connect, read, write and pool timeouts
        return ClientTimeout(text, function=function)
    if isinstance(exc, (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError, httpx.CloseError)):
        return ConnectionReset(text, function=function)
    return None
