"""A typed client of the daemon's HTTP API (docs/api.md), on a synchronous :class:`httpx.Client`.

::

    from wasmhive.runtime.daemon.client import DaemonClient

    with DaemonClient("http://127.0.0.1:8080", token="...") as daemon:
        daemon.deploy("echo", "examples/echo.wat")              # -> the new version's record
        reply, headers = daemon.invoke("echo@prod", b"hi")       # headers["x-wasmhive-version"]
        for chunk in daemon.stream("lines", b"a\\nb\\n"):
            ...
        daemon.set_alias("echo", "prod", {2: 90, 3: 10})

Every failure raises :class:`DaemonError`: an error answer of the daemon
(``status``, ``kind`` and ``message`` from its JSON body), or
:class:`DaemonUnreachable` when there is no daemon to answer.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Final
from urllib.parse import quote

import httpx

from .config import ADMIN_TOKEN_ENV

__all__ = [
    "DEFAULT_URL",
    "URL_ENV",
    "DaemonClient",
    "DaemonError",
    "DaemonUnreachable",
    "ReplyStream",
]

#: Where the CLI looks for the daemon unless told otherwise.
DEFAULT_URL: Final = "http://127.0.0.1:8080"
#: The environment variable that overrides :data:`DEFAULT_URL`.
URL_ENV: Final = "WASMHIVE_URL"

_KIND_TYPES: Final = {"wasm": "application/wasm", "js": "application/javascript"}
_SUFFIX_KINDS: Final = {".wasm": "wasm", ".wat": "wasm", ".js": "js", ".mjs": "js"}


class DaemonError(Exception):
    """The daemon answered with an error, or could not be talked to.

    ``status`` is the HTTP status (0 when there was no answer), ``kind`` the
    error's name from the JSON body (``UnknownFunction``, ``Unauthorized``,
    ...: the daemon's error class; ``HTTP <status>`` for a body that is not
    wasmhive's), ``message`` its message, ``function`` the function concerned
    and ``request_id`` the request's id, when the daemon gave them.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        kind: str = "DaemonError",
        function: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.kind = kind
        self.function = function
        self.request_id = request_id

    def __str__(self) -> str:
        return f"{self.kind}: {self.message}"


class DaemonUnreachable(DaemonError):
    """No answer: nothing listens at the URL, the connection broke, or the daemon took too long."""


def _error_from_body(body: Any, status: int, request_id: str | None) -> DaemonError | None:
    """The :class:`DaemonError` that a JSON error body (``{"error": kind, "message": ...}``) describes."""
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        return None
    function = body.get("function")
    given = body.get("request_id") or request_id
    return DaemonError(
        str(body.get("message", "")),
        status=status,
        kind=body["error"],
        function=function if isinstance(function, str) else None,
        request_id=str(given) if given else None,
    )


def _error_from_response(response: httpx.Response) -> DaemonError:
    """A :class:`DaemonError` from an error answer (its body already read): JSON, an SSE error event, or text."""
    status = response.status_code
    request_id = response.headers.get("x-request-id")
    texts = [response.text]
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        texts = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
    for text in texts:
        try:
            body = json.loads(text)
        except ValueError:
            continue
        error = _error_from_body(body, status, request_id)
        if error is not None:
            return error
    text = response.text.strip()
    if len(text) > 200:
        text = text[:200] + "..."
    reason = text or response.reason_phrase or "no body"
    request = response.request
    return DaemonError(
        f"{reason} ({request.method} {request.url.path})", status=status, kind=f"HTTP {status}", request_id=request_id
    )


class ReplyStream(Iterator[bytes]):
    """The chunks of a streamed call, as they arrive (from :meth:`DaemonClient.stream`).

    The call has already been answered with 200 when this exists: ``headers``
    holds the response headers (``x-wasmhive-version``, ``x-request-id``).
    Iterating reads the body; the response is closed at its end, on an error,
    or by :meth:`close` / leaving a ``with`` block.

    A call can still fail after its first chunk.  Read as Server-Sent Events
    (``events=True``, the default of :meth:`DaemonClient.stream`), iterating
    then raises the call's own error (``GuestError``, ``GuestTrap``, ...,
    ``status`` 200 as the status line was already sent); read as a plain
    chunked body, whose failure can only cut it short, it raises a
    :class:`DaemonError` of kind ``StreamAborted``.
    """

    def __init__(self, response: httpx.Response, url: str, *, events: bool) -> None:
        self._response = response
        self._url = url
        self._events = events
        self._chunks = self._read_events() if events else self._read_chunks()
        self.headers: httpx.Headers = response.headers

    @property
    def version(self) -> int | None:
        """The version that answers (``x-wasmhive-version``)."""
        value = self.headers.get("x-wasmhive-version")
        return int(value) if value is not None and value.isdigit() else None

    @property
    def request_id(self) -> str | None:
        """The request's id (``x-request-id``)."""
        value: str | None = self.headers.get("x-request-id")
        return value

    def __iter__(self) -> ReplyStream:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._chunks)
        except StopIteration:
            self.close()
            raise
        except httpx.RemoteProtocolError:
            self.close()
            raise self._aborted() from None
        except httpx.TransportError as exc:
            self.close()
            raise _transport_error(exc, self._url) from None
        except BaseException:
            self.close()
            raise

    def _aborted(self) -> DaemonError:
        why = "the connection ended early" if self._events else "the daemon cut the stream short"
        return DaemonError(
            f"the call failed after its first chunks: {why} (the daemon's log has request {self.request_id})",
            status=self._response.status_code,
            kind="StreamAborted",
            request_id=self.request_id,
        )

    def _read_chunks(self) -> Iterator[bytes]:
        for chunk in self._response.iter_bytes():
            if chunk:
                yield chunk

    def _read_events(self) -> Iterator[bytes]:
        """Chunks from ``chunk`` / ``chunk-base64`` events; ``error`` raises; the stream must end with ``done``."""
        event = "message"
        data: list[str] = []
        for line in self._response.iter_lines():
            if line:
                if line.startswith(":"):
                    continue
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "event":
                    event = value
                elif field == "data":
                    data.append(value)
                continue
            payload = "\n".join(data)
            if event == "chunk" and payload:
                yield payload.encode()
            elif event == "chunk-base64" and payload:
                yield base64.b64decode(payload)
            elif event == "error":
                try:
                    body = json.loads(payload)
                except ValueError:
                    body = None
                error = _error_from_body(body, self._response.status_code, self.request_id)
                raise error or DaemonError(payload, status=self._response.status_code, kind="StreamError")
            elif event == "done":
                return
            event, data = "message", []
        raise self._aborted()

    def close(self) -> None:
        """Stop reading and release the connection."""
        self._response.close()

    def __enter__(self) -> ReplyStream:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _transport_error(exc: httpx.TransportError, url: str) -> DaemonUnreachable:
    if isinstance(exc, httpx.TimeoutException):
        what = {
            httpx.ConnectTimeout: "connecting took too long",
            httpx.ReadTimeout: "no answer in time",
            httpx.WriteTimeout: "sending the request took too long",
            httpx.PoolTimeout: "no free connection in time",
        }.get(type(exc), "timed out")
        return DaemonUnreachable(f"cannot reach the daemon at {url}: {what}", kind="DaemonUnreachable")
    detail = str(exc) or type(exc).__name__
    return DaemonUnreachable(f"cannot reach the daemon at {url}: {detail}", kind="DaemonUnreachable")


def _normalize_url(url: str) -> str:
    """``host:port`` -> ``http://host:port``; no trailing slash."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    return url.rstrip("/")


def _segment(value: str) -> str:
    """One path segment, percent-encoded (so that a ``/`` in a name cannot reach another route)."""
    return quote(value, safe="@")


class DaemonClient:
    """A client of one daemon: ``url`` its base URL, ``token`` the admin token (deploy, alias, delete).

    ``timeout`` is httpx's: seconds for connecting, and between bytes of an
    answer (a long call needs a long one), or an :class:`httpx.Timeout`.
    ``transport`` replaces the network (tests).  Use it as a context manager,
    or call :meth:`close`.
    """

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        *,
        timeout: float | httpx.Timeout = 60.0,
        connect_timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = _normalize_url(url)
        self.token = token or None
        if not isinstance(timeout, httpx.Timeout):
            timeout = httpx.Timeout(timeout, connect=min(connect_timeout, timeout))
        self._http = httpx.Client(base_url=self.url, timeout=timeout, transport=transport, trust_env=False)

    @classmethod
    def from_env(cls, **kwargs: Any) -> DaemonClient:
        """A client of ``$WASMHIVE_URL`` (default :data:`DEFAULT_URL`) with ``$WASMHIVE_ADMIN_TOKEN``."""
        return cls(os.environ.get(URL_ENV) or DEFAULT_URL, os.environ.get(ADMIN_TOKEN_ENV), **kwargs)

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def __enter__(self) -> DaemonClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- plumbing --------------------------------------------------------------------------

    def _admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _request(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        try:
            response = self._http.request(method, path, content=content, headers=headers, params=params)
        except httpx.TransportError as exc:
            raise _transport_error(exc, self.url) from None
        if response.is_error:
            raise _error_from_response(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self._request(method, path, **kwargs)
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise DaemonError(
                f"expected a JSON object from {method} {path}, got {response.text[:100]!r}",
                status=response.status_code,
                kind="BadResponse",
            )
        return data

    # --- functions -------------------------------------------------------------------------

    def deploy(
        self,
        name: str,
        path_or_bytes: str | os.PathLike[str] | bytes,
        kind: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Upload a module (wasm binary or WAT) or JavaScript source as the next version of ``name``.

        ``kind`` is ``"wasm"`` or ``"js"``; by default a file's suffix decides
        (``.wasm``, ``.wat``, ``.js``), else the daemon tells from the bytes.
        ``options`` are deploy options (``timeout``, ``instances``, ``pool``, ...;
        docs/api.md).  Returns the version's record (``version``, ``digest``, ...).
        """
        if isinstance(path_or_bytes, bytes):
            module = path_or_bytes
        else:
            path = Path(path_or_bytes)
            module = path.read_bytes()
            kind = kind or _SUFFIX_KINDS.get(path.suffix.lower())
        headers = self._admin_headers()
        headers["Content-Type"] = _KIND_TYPES.get(kind or "", "application/octet-stream")
        if options:
            headers["X-Wasmhive-Options"] = json.dumps(dict(options), separators=(",", ":"))
        params = {"kind": kind} if kind else None
        return self._json("POST", f"/v1/functions/{_segment(name)}", content=module, headers=headers, params=params)

    def functions(self) -> list[dict[str, Any]]:
        """Every function: ``{"name", "versions": [1, 2], "aliases": {"latest": {"2": 100}}}``."""
        functions = self._json("GET", "/v1/functions").get("functions")
        return list(functions) if isinstance(functions, list) else []

    def function(self, name: str) -> dict[str, Any]:
        """One function: ``{"name", "versions": [record + "status", ...], "aliases": {...}}``."""
        return self._json("GET", f"/v1/functions/{_segment(name)}")

    def set_alias(self, name: str, alias: str, weights: Mapping[int, int]) -> dict[str, Any]:
        """Point ``alias`` at versions with weights (``{3: 100}``, or ``{2: 90, 3: 10}`` for a canary)."""
        body = json.dumps({str(v): w for v, w in weights.items()}).encode()
        headers = {**self._admin_headers(), "Content-Type": "application/json"}
        return self._json(
            "PUT", f"/v1/functions/{_segment(name)}/aliases/{_segment(alias)}", content=body, headers=headers
        )

    def delete_function(self, name: str) -> dict[str, Any]:
        """Remove every version and alias of ``name``: ``{"deleted": [versions]}``."""
        return self._json("DELETE", f"/v1/functions/{_segment(name)}", headers=self._admin_headers())

    def delete_version(self, name: str, version: int) -> dict[str, Any]:
        """Remove one version (refused with ``VersionInUse`` while an alias other than ``latest`` uses it)."""
        return self._json(
            "DELETE", f"/v1/functions/{_segment(name)}/versions/{int(version)}", headers=self._admin_headers()
        )

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove an alias (``latest`` cannot be removed)."""
        self._request(
            "DELETE", f"/v1/functions/{_segment(name)}/aliases/{_segment(alias)}", headers=self._admin_headers()
        )

    # --- calling ---------------------------------------------------------------------------

    @staticmethod
    def _call_headers(key: str | None, request_id: str | None) -> dict[str, str]:
        headers = {"Content-Type": "application/octet-stream"}
        if key is not None:
            headers["X-Wasmhive-Key"] = key
        if request_id is not None:
            headers["X-Request-Id"] = request_id
        return headers

    def invoke(
        self, target: str, data: bytes | str = b"", key: str | None = None, *, request_id: str | None = None
    ) -> tuple[bytes, httpx.Headers]:
        """Call ``name``, ``name@alias`` or ``name@version`` with ``data``: (reply, response headers).

        ``key`` routes calls with the same key to the same actor; the headers
        carry ``x-wasmhive-version`` and ``x-request-id``.
        """
        payload = data.encode() if isinstance(data, str) else data
        response = self._request(
            "POST", f"/v1/invoke/{_segment(target)}", content=payload, headers=self._call_headers(key, request_id)
        )
        return response.content, response.headers

    def stream(
        self,
        target: str,
        data: bytes | str = b"",
        key: str | None = None,
        *,
        request_id: str | None = None,
        events: bool = True,
    ) -> ReplyStream:
        """Call ``target`` and read its chunks as they are emitted.

        An error before the first chunk raises here, with its status; the
        returned :class:`ReplyStream` yields the chunks (close it when you stop
        early).  ``events`` reads the reply as Server-Sent Events, so that an
        error after the first chunk arrives with its kind and message; without
        it the reply is a plain chunked body (see :class:`ReplyStream`).
        """
        payload = data.encode() if isinstance(data, str) else data
        headers = self._call_headers(key, request_id)
        if events:
            headers["Accept"] = "text/event-stream"
        request = self._http.build_request("POST", f"/v1/stream/{_segment(target)}", content=payload, headers=headers)
        try:
            response = self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise _transport_error(exc, self.url) from None
        if response.is_error:
            try:
                response.read()
            except httpx.TransportError as exc:
                raise _transport_error(exc, self.url) from None
            finally:
                response.close()
            raise _error_from_response(response)
        return ReplyStream(response, self.url, events=events)
