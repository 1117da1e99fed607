"""The daemon's HTTP API as an ASGI application (Starlette), documented in docs/api.md.

Admin routes (deploy, alias, delete) need ``Authorization: Bearer <token>``
when a token is configured.  Invocation routes never do.

``POST /v1/invoke/{target}`` is the hot path: the app answers it without
Starlette's router, middleware, ``Request`` and ``MutableHeaders``
(:meth:`DaemonApp._invoke_fast`), through the same code as its Starlette route
(:meth:`DaemonApp._invoke`).  Server-Sent Events and every other request go
through Starlette.  The daemon always runs on trio, so invocations use
``trio.CancelScope`` rather than anyio's wrapper of it.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import itertools
import json
import os
import queue
import re
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeAlias

import anyio
import msgspec
import trio
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from wasmhive.actors.errors import InvalidConfig, PayloadTooLarge, UnknownFunction, WasmhiveError
from wasmhive.runtime.deployment import last_actor

from .config import DaemonConfig, FunctionOptions
from .errors import BadRequest, Forbidden, RequestTimeout, ShuttingDown, Starting, Unauthorized, retry_after, status_of
from .metrics import DaemonMetrics
from .service import FunctionService

__all__ = ["AccessLog", "DaemonApp", "build_app"]

_json = msgspec.json.Encoder()
_BODY_READ = "wasmhive.body_read"  # in the ASGI scope: _read_body read the request body to its end
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}\Z")
#: Generated request ids: a random prefix per process, then a counter (unique, and cheap to make).
_REQUEST_ID_PREFIX = os.urandom(8).hex()
_request_numbers = itertools.count()
_INVOKE_PREFIX = "/v1/invoke/"
_OPENAPI = Path(__file__).with_name("openapi.json")
_SCALAR_OPTIONS = {
    "mode": str,
    "timeout": float,
    "memory_limit": int,
    "fuel": int,
    "mailbox_size": int,
    "overflow": str,
    "mailbox_wait": float,
    "instances": int,
}
JSON = "application/json"
#: The cancel scope of a call in flight: trio's on the invoke path, anyio's (on trio) on the streaming path.
_CancelScope: TypeAlias = trio.CancelScope | anyio.CancelScope


class AccessLog:
    """One JSON line per invocation (function, version, actor, outcome, duration, request id).

    Lines are encoded on the event loop and written by a thread of their own,
    so a slow or stalled reader of stderr never holds up requests: past
    ``buffer`` lines waiting, new ones are dropped and counted in ``dropped``.
    """

    def __init__(self, enabled: bool, stream: Any = None, *, buffer: int = 10_000) -> None:
        self.enabled = enabled
        self._stream = stream if stream is not None else sys.stderr
        self._lines: queue.Queue[str | None] = queue.Queue(maxsize=buffer)
        #: Lines dropped because the writer fell ``buffer`` lines behind.
        self.dropped = 0
        self._writer: threading.Thread | None = None

    def write(self, **fields: Any) -> None:
        if not self.enabled:
            return
        if self._writer is None:
            self._writer = threading.Thread(target=self._write_lines, name="wasmhive-access-log", daemon=True)
            self._writer.start()
        try:
            self._lines.put_nowait(_json.encode(fields).decode() + "\n")
        except queue.Full:
            self.dropped += 1

    def close(self, timeout: float = 5.0) -> None:
        """Write the lines still waiting (for up to ``timeout`` seconds) and stop the writer."""
        if self._writer is None:
            return
        with contextlib.suppress(queue.Full):
            self._lines.put(None, timeout=timeout)
        self._writer.join(timeout)
        self._writer = None

    def _write_lines(self) -> None:  # on the writer thread
        while True:
            line = self._lines.get()
            batch: list[str] = []
            while line is not None:
                batch.append(line)
                try:
                    line = self._lines.get_nowait()
                except queue.Empty:
                    break
            if batch:
                with contextlib.suppress(OSError, ValueError):  # a closed or broken stderr loses lines, not calls
                    self._stream.write("".join(batch))
                    self._stream.flush()
            if line is None:
                return


class DaemonApp:
    """Request handlers bound to one service; :meth:`asgi` is the ASGI application."""

    def __init__(
        self,
        service: FunctionService,
        config: DaemonConfig,
        metrics: DaemonMetrics,
        access_log: AccessLog | None = None,
    ) -> None:
        self.service = service
        self.config = config
        self.metrics = metrics
        self.log = access_log or AccessLog(config.server.access_log)
        self._token = config.admin_token()
        self._max_body = config.server.max_body_bytes
        self._timeout = config.server.request_timeout
        #: Set when the daemon stops accepting: /readyz answers 503.
        self.draining = False
        self._calls: set[_CancelScope] = set()
        self._shutdown_cancelled = False
        self.asgi = build_app(self)

    # --- shutdown ----------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Invocations being answered now."""
        return len(self._calls)

    def cancel_calls(self) -> None:
        """The grace period is over: calls still running are answered with 503 ShuttingDown."""
        self._shutdown_cancelled = True
        for scope in list(self._calls):
            scope.cancel()

    # --- probes ------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return _json_response({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        if self.draining:
            return _json_response({"status": "draining"}, 503)
        if not self.service.ready:
            return _json_response({"status": "starting"}, 503)
        body: dict[str, Any] = {"status": "ready", "functions": len(self.service.store.functions())}
        if self.service.broken:
            body["broken"] = self.service.broken
        return _json_response(body)

    async def metrics_page(self, request: Request) -> Response:
        body, content_type = self.metrics.render()
        return Response(body, headers={"content-type": content_type})

    async def openapi(self, request: Request) -> Response:
        return Response(_OPENAPI.read_bytes(), media_type=JSON)

    async def bare(self, request: Request) -> Response:
        """The benchmark's baseline: the request body back, through the same server, no function."""
        body = await self._body(request)
        return Response(body, media_type="application/octet-stream")

    # --- functions ---------------------------------------------------------------------

    async def list_functions(self, request: Request) -> Response:
        return _json_response({"functions": self.service.list()})

    async def show_function(self, request: Request) -> Response:
        return _json_response(self.service.describe(request.path_params["name"]))

    async def deploy(self, request: Request) -> Response:
        self._authorize(request)
        self._check_ready()
        name = request.path_params["name"]
        body = await self._body(request)
        options = _deploy_options(request)
        kind = _module_kind(request, body, options)
        record = await self.service.deploy(name, body, kind=kind, options=options)
        return _json_response(msgspec.to_builtins(record), 201)

    async def delete_function(self, request: Request) -> Response:
        self._authorize(request)
        self._check_ready()
        records = await self.service.delete_function(request.path_params["name"])
        for record in records:
            self.metrics.forget(record.name, record.version)
        return _json_response({"deleted": [r.version for r in records]})

    async def show_version(self, request: Request) -> Response:
        name, version = _version_params(request)
        record = self.service.store.version(name, version)
        return _json_response(msgspec.to_builtins(record))

    async def delete_version(self, request: Request) -> Response:
        self._authorize(request)
        self._check_ready()
        name, version = _version_params(request)
        record = await self.service.delete_version(name, version)
        self.metrics.forget(name, version)
        return _json_response({"deleted": [record.version]})

    async def list_aliases(self, request: Request) -> Response:
        return _json_response({"aliases": self.service.describe(request.path_params["name"])["aliases"]})

    async def set_alias(self, request: Request) -> Response:
        self._authorize(request)
        self._check_ready()
        weights = _weights(await self._body(request))
        name, alias = request.path_params["name"], request.path_params["alias"]
        result = await self.service.set_alias(name, alias, weights)
        return _json_response({"name": name, "alias": alias, "weights": {str(v): w for v, w in result.items()}})

    async def delete_alias(self, request: Request) -> Response:
        self._authorize(request)
        self._check_ready()
        await self.service.delete_alias(request.path_params["name"], request.path_params["alias"])
        return Response(status_code=204)

    # --- invoking ----------------------------------------------------------------------

    async def invoke(self, request: Request) -> Response:
        """The request body is the payload; the response body is the reply (SSE if asked for).

        Only Server-Sent Events come this way in the running daemon: :meth:`_invoke_fast` answers
        the other requests of this route before Starlette sees them.
        """
        if _wants_sse(request.headers.get("accept")):
            return await self.stream(request)
        return await self._invoke(request.path_params["target"], request.scope, request.receive)

    async def _invoke_fast(self, target: str, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /v1/invoke/{target}`` as a plain ASGI app: :meth:`_invoke` without Starlette's machinery.

        What Starlette's middleware would still do here is kept: an unexpected exception (such
        as :class:`ClientDisconnect` while reading the body) is answered with a plain 500, then
        raised for the server to log.
        """
        try:
            response = await self._invoke(target, scope, receive)
        except Exception:
            await PlainTextResponse("Internal Server Error", status_code=500)(scope, receive, send)
            raise
        await response(scope, receive, send)

    async def _invoke(self, target: str, scope: Scope, receive: Receive) -> Response:
        """Call ``target`` with the request body as the payload: the reply, or the error's JSON answer."""
        started = time.perf_counter()
        headers = _headers(scope)
        request_id = _request_id(_latin1(headers.get(b"x-request-id")))
        name, version = target.partition("@")[0], None
        cancel = trio.CancelScope(deadline=trio.current_time() + self._timeout)
        self._calls.add(cancel)
        counted = False  # in flight from resolution on, under the resolved name (never a client's made-up one)
        size, reply, error = 0, b"", None
        try:
            with cancel:
                payload = await self._read_body(scope, receive, _latin1(headers.get(b"content-length")))
                size = len(payload)
                name, version = self.service.resolve(target)
                self.metrics.request_started(name, version)
                counted = True
                key = _latin1(headers.get(b"x-wasmhive-key"))
                reply = await self.service.invoke(name, version, payload, key=key)
            if cancel.cancelled_caught:
                error = self._cancelled(name)
        except WasmhiveError as exc:
            error = exc
        except BaseException:
            if counted:  # (a bug or a cancellation: the gauge must still come down)
                self.metrics.request_finished(name, version, "internal", time.perf_counter() - started)
            raise
        finally:
            self._calls.discard(cancel)
        outcome = "ok" if error is None else type(error).__name__
        elapsed = self._count_finished(name, version, counted, outcome, started)
        if error is None:
            response = _reply_response(reply, version, request_id)
        else:
            response = self._error_answer(error, request_id, version, scope)
        self._log_call(request_id, name, version, outcome, response.status_code, elapsed, size, len(reply))
        return response

    def _count_finished(self, name: str, version: int | None, counted: bool, outcome: str, started: float) -> float:
        """Record a finished call in the metrics (counting it as started if resolution failed); its duration."""
        elapsed = time.perf_counter() - started
        label = self._label(name, version)
        if not counted:
            self.metrics.request_started(label, version)
        self.metrics.request_finished(label, version, outcome, elapsed)
        return elapsed

    def _error_answer(
        self, error: WasmhiveError, request_id: str, version: int | None, scope: Scope, *, sse: bool = False
    ) -> Response:
        """The answer to a failed call: its JSON error (or, for SSE, one ``error`` event) and headers."""
        response = self._error_response(error, request_id)
        if sse:  # still an event stream, so that EventSource clients see the error
            event = _sse_event("error", _error_body(error, request_id))
            wait = response.headers.get("retry-after")
            response = _sse_response([event], status=response.status_code)
            if wait is not None:
                response.headers["retry-after"] = wait
        if version is not None:
            response.headers["x-wasmhive-version"] = str(version)
        response.headers["x-request-id"] = request_id
        _close_if_unread(scope, response)
        return response

    async def stream(self, request: Request) -> Response:
        """Chunks as they are emitted: chunked transfer, or Server-Sent Events when asked for."""
        started = time.perf_counter()
        request_id = _request_id(request.headers.get("x-request-id"))
        target = request.path_params["target"]
        sse = _wants_sse(request.headers.get("accept"))
        name, version = target.partition("@")[0], None
        scope = anyio.CancelScope(deadline=anyio.current_time() + self._timeout)
        self._calls.add(scope)
        counted = False  # as in invoke
        size = 0
        chunks: AsyncIterator[bytes] | None = None
        first: bytes | None = None
        try:
            with scope:
                payload = await self._body(request)
                size = len(payload)
                name, version = self.service.resolve(target)
                self.metrics.request_started(name, version)
                counted = True
                chunks = self.service.stream(name, version, payload, key=request.headers.get("x-wasmhive-key"))
                first = await anext(chunks, None)  # an error before the first chunk gets its own status
            if scope.cancelled_caught:
                raise self._cancelled(name)
        except WasmhiveError as exc:
            self._calls.discard(scope)
            if chunks is not None:
                await chunks.aclose()  # type: ignore[attr-defined]
            outcome = type(exc).__name__
            elapsed = self._count_finished(name, version, counted, outcome, started)
            response = self._error_answer(exc, request_id, version, request.scope, sse=sse)
            self._log_call(request_id, name, version, outcome, response.status_code, elapsed, size, 0)
            return response
        except BaseException:  # a client that left mid-upload, a bug: release what the call holds
            self._calls.discard(scope)
            if counted:
                self.metrics.request_finished(name, version, "internal", time.perf_counter() - started)
            if chunks is not None:
                with anyio.CancelScope(shield=True):
                    await chunks.aclose()  # type: ignore[attr-defined]
            raise
        assert chunks is not None and version is not None
        self._calls.discard(scope)
        relay_scope = anyio.CancelScope(deadline=scope.deadline)
        self._calls.add(relay_scope)
        headers = {"x-request-id": request_id, "x-wasmhive-version": str(version)}
        body = partial(self._relay, chunks=chunks, first=first, scope=relay_scope, sse=sse)
        pump = partial(body, request_id=request_id, name=name, version=version, started=started, size_in=size)
        if sse:
            headers["cache-control"] = "no-cache"
            return _StreamResponse(pump, headers=headers, media_type="text/event-stream")
        return _StreamResponse(pump, headers=headers, media_type="application/octet-stream")

    async def _relay(
        self,
        send: _Send,
        chunks: AsyncIterator[bytes],
        first: bytes | None,
        scope: anyio.CancelScope,
        sse: bool,
        request_id: str,
        name: str,
        version: int,
        started: float,
        size_in: int,
    ) -> None:
        """Send the chunks of a call to the client as they come (run by :class:`_StreamResponse`).

        Not an async generator: a generator that yields inside a cancel scope corrupts
        trio's scope stack when its consumer is cancelled (the client went away).
        """
        sent = 0
        outcome = "ok"
        error: WasmhiveError | None = None
        try:
            with scope:
                chunk = first
                while chunk is not None:
                    sent += len(chunk)
                    await send(_sse_chunk(chunk) if sse else chunk)
                    chunk = await anext(chunks, None)
            if scope.cancelled_caught:
                error = self._cancelled(name)
        except WasmhiveError as exc:
            error = exc
        except anyio.get_cancelled_exc_class():
            outcome = "ClientDisconnected"  # the response's task group was cancelled: the client is gone
            raise
        finally:
            self._calls.discard(scope)
            with anyio.CancelScope(shield=True):
                await chunks.aclose()  # type: ignore[attr-defined]
            if error is not None:
                outcome = type(error).__name__
            elapsed = self._count_finished(name, version, True, outcome, started)
            status = 200 if error is None else status_of(error)
            self._log_call(request_id, name, version, outcome, status, elapsed, size_in, sent)
        if error is not None:
            if sse:
                await send(_sse_event("error", _error_body(error, request_id)))
            else:  # the status is gone: cut the chunked body short, which a client sees as an error
                raise _StreamAborted()
        elif sse:
            await send(_sse_event("done", _json.encode({"version": version, "request_id": request_id})))

    # --- helpers -----------------------------------------------------------------------

    def _label(self, name: str, version: int | None) -> str:
        """Metrics label of a function: unknown names share one, so clients cannot add series."""
        return name if version is not None else "_unresolved"

    def _cancelled(self, name: str) -> WasmhiveError:
        if self._shutdown_cancelled:
            return ShuttingDown("the daemon is shutting down and the grace period is over", function=name)
        return RequestTimeout(f"no answer within server.request_timeout={self._timeout:g} s", function=name)

    def _check_ready(self) -> None:
        """Registry changes wait until the recorded versions are restored (they could race the restore)."""
        if not self.service.ready:
            raise Starting("the daemon is starting: its functions are being restored")

    def _authorize(self, request: Request) -> None:
        if self._token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("this request needs 'Authorization: Bearer <admin token>'")
        if not hmac.compare_digest(token.strip().encode(), self._token.encode()):
            raise Forbidden("the admin token is wrong")

    async def _body(self, request: Request) -> bytes:
        return await self._read_body(request.scope, request.receive, request.headers.get("content-length"))

    async def _read_body(self, scope: Scope, receive: Receive, length: str | None) -> bytes:
        """The request body, at most ``server.max_body_bytes``; ``length`` is the Content-Length header.

        Too large is :class:`PayloadTooLarge`: from the Content-Length before reading, or
        while reading (a chunked body).  The ASGI messages are read as Starlette's
        ``Request.stream`` reads them (a client gone is :class:`ClientDisconnect`).  Once
        the body is read to its end the scope says so (see :func:`_close_if_unread`).
        """
        if length is not None and length.isascii() and length.isdigit() and int(length) > self._max_body:
            raise PayloadTooLarge(
                f"request body of {length} bytes is over server.max_body_bytes={self._max_body}",
                size=int(length),
                limit=self._max_body,
            )
        parts: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.request":
                part: bytes = message.get("body", b"")
                more = message.get("more_body", False)
                size += len(part)
                if size > self._max_body:
                    raise PayloadTooLarge(
                        f"request body is over server.max_body_bytes={self._max_body}", size=size, limit=self._max_body
                    )
                parts.append(part)
            elif message["type"] == "http.disconnect":
                raise ClientDisconnect()
        scope[_BODY_READ] = True
        return b"".join(parts)

    def _error_response(self, error: WasmhiveError, request_id: str) -> Response:
        status = status_of(error)
        response = Response(_error_body(error, request_id), status_code=status, media_type=JSON)
        wait = retry_after(error, anyio.current_time())
        if wait is not None and status in (429, 503):
            response.headers["retry-after"] = str(wait)
        if status == 401:
            response.headers["www-authenticate"] = 'Bearer realm="wasmhive"'
        return response

    def _log_call(
        self,
        request_id: str,
        name: str,
        version: int | None,
        outcome: str,
        status: int,
        elapsed: float,
        size_in: int,
        size_out: int,
    ) -> None:
        if not self.log.enabled:
            return
        actor = last_actor()
        self.log.write(
            ts=round(time.time(), 6),
            request_id=request_id,
            function=name,
            version=version,
            actor=actor.id if actor is not None and version is not None else None,
            outcome=outcome,
            status=status,
            duration_ms=round(elapsed * 1000, 3),
            bytes_in=size_in,
            bytes_out=size_out,
        )

    async def handle_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, WasmhiveError)
        request_id = _request_id(request.headers.get("x-request-id"))
        response = self._error_response(exc, request_id)
        response.headers["x-request-id"] = request_id  # as on invocations: the body names it too
        _close_if_unread(request.scope, response)
        return response


_Send = Callable[[bytes], Awaitable[None]]


class _StreamAborted(Exception):
    """Raised by a chunked body after its call failed: the response ends without its last chunk."""


class _StreamResponse(Response):
    """Sends each chunk as soon as it is produced; stops early when the client goes away.

    ``pump(send)`` produces the body by awaiting ``send(chunk)`` for each chunk.
    It is called before anything else can be cancelled, so that its own clean-up
    always runs; the status line goes out with the first chunk (or at the end).
    When the pump raises :class:`_StreamAborted` the response ends without
    its final empty chunk: the server closes the connection and the client
    sees a cut body (its status line was already sent).
    """

    def __init__(self, pump: Callable[[_Send], Awaitable[None]], *, headers: dict[str, str], media_type: str) -> None:
        super().__init__(None, headers=headers, media_type=media_type)
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]  # chunked
        self._pump = pump

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        started = False

        async def start() -> None:
            nonlocal started
            if not started:
                started = True
                await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})

        async def send_chunk(chunk: bytes) -> None:
            await start()
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        async with anyio.create_task_group() as group:

            async def watch_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                group.cancel_scope.cancel()

            group.start_soon(watch_disconnect)
            try:
                await self._pump(send_chunk)
            except _StreamAborted:
                group.cancel_scope.cancel()
                return
            await start()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            group.cancel_scope.cancel()


class _DaemonStarlette(Starlette):
    """The Starlette app, except that ``POST /v1/invoke/{target}`` skips it (see :func:`_fast_invoke_target`)."""

    def __init__(self, handlers: DaemonApp, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._handlers = handlers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = _fast_invoke_target(scope)
        if target is None:
            await super().__call__(scope, receive, send)
        else:
            await self._handlers._invoke_fast(target, scope, receive, send)


def build_app(handlers: DaemonApp) -> Starlette:
    """The routes of the API (docs/api.md), with the fast path for invocations in front."""
    h = handlers
    routes = [
        Route("/healthz", h.healthz, methods=["GET"]),
        Route("/readyz", h.readyz, methods=["GET"]),
        Route("/metrics", h.metrics_page, methods=["GET"]),
        Route("/openapi.json", h.openapi, methods=["GET"]),
        Route("/v1/functions", h.list_functions, methods=["GET"]),
        Route("/v1/functions/{name}", h.show_function, methods=["GET"]),
        Route("/v1/functions/{name}", h.deploy, methods=["POST"]),
        Route("/v1/functions/{name}", h.delete_function, methods=["DELETE"]),
        Route("/v1/functions/{name}/versions/{version:int}", h.show_version, methods=["GET"]),
        Route("/v1/functions/{name}/versions/{version:int}", h.delete_version, methods=["DELETE"]),
        Route("/v1/functions/{name}/aliases", h.list_aliases, methods=["GET"]),
        Route("/v1/functions/{name}/aliases/{alias}", h.set_alias, methods=["PUT"]),
        Route("/v1/functions/{name}/aliases/{alias}", h.delete_alias, methods=["DELETE"]),
        Route("/v1/invoke/{target}", h.invoke, methods=["POST"]),
        Route("/v1/stream/{target}", h.stream, methods=["POST"]),
    ]
    if h.config.server.bench_endpoint:
        routes.append(Route("/v1/bare", h.bare, methods=["POST"]))
    handler: Callable[[Request, Exception], Awaitable[Response]] = h.handle_error
    return _DaemonStarlette(h, routes=routes, exception_handlers={WasmhiveError: handler})


# --- request parsing -------------------------------------------------------------------


def _fast_invoke_target(scope: Scope) -> str | None:
    """The target if the fast path answers this request, else None (Starlette answers it).

    The fast path takes ``POST /v1/invoke/{target}`` without ``Accept: text/event-stream``,
    where the route's ``{target}`` matches: one non-empty segment of the decoded
    ``path``.  Any other request (another method, a ``/`` in the target, even encoded as
    ``%2F``, a trailing slash, a ``root_path``) gets Starlette's own answer: 405, 404, 307.
    """
    if scope["type"] != "http" or scope["method"] != "POST" or scope.get("root_path"):
        return None
    path: str = scope["path"]
    if not path.startswith(_INVOKE_PREFIX):
        return None
    target = path[len(_INVOKE_PREFIX) :]
    if not target or "/" in target:
        return None
    for key, value in scope["headers"]:
        if key == b"accept":  # the first one, as Starlette's Headers.get
            return None if _wants_sse(value.decode("latin-1")) else target
    return target


def _headers(scope: Scope) -> dict[bytes, bytes]:
    """The request headers by (lower-case) name; of a repeated header the first, as Starlette's ``Headers.get``."""
    headers: dict[bytes, bytes] = {}
    for key, value in scope["headers"]:
        headers.setdefault(key, value)
    return headers


def _latin1(value: bytes | None) -> str | None:
    """A header value as text, as Starlette decodes it."""
    return None if value is None else value.decode("latin-1")


def _wants_sse(accept: str | None) -> bool:
    """Whether the Accept header asks for Server-Sent Events."""
    return accept is not None and "text/event-stream" in accept


def _version_params(request: Request) -> tuple[str, int]:
    """The ``{name}`` and ``{version}`` path parameters; a version past SQLite's integers is unknown."""
    name, version = request.path_params["name"], request.path_params["version"]
    if version > 2**63 - 1:
        raise UnknownFunction(f"function {name!r} has no version {version}", function=name)
    return name, version


def _request_id(given: str | None) -> str:
    """The caller's ``X-Request-Id`` if it is a plain token (``_REQUEST_ID``), else a new one."""
    if given is not None and _REQUEST_ID.match(given):
        return given
    return f"{_REQUEST_ID_PREFIX}{next(_request_numbers):08x}"


def _close_if_unread(scope: Scope, response: Response) -> None:
    """Answered before the request body was read to its end (refused, too large): close the connection.

    The server cannot take the next request on it before it has skipped the rest of
    this one's body; without ``Connection: close`` a client that reuses the
    connection finds it closed under its next request.
    """
    if scope.get(_BODY_READ):
        return
    headers = _headers(scope)
    length = _latin1(headers.get(b"content-length"))
    chunked = "chunked" in (_latin1(headers.get(b"transfer-encoding")) or "").lower()
    if chunked or (length is not None and length.strip() not in ("", "0")):
        response.headers["connection"] = "close"


def _deploy_options(request: Request) -> FunctionOptions:
    """Options from the ``X-Wasmhive-Options`` JSON header and scalar query parameters (which win)."""
    data: dict[str, Any] = {}
    header = request.headers.get("x-wasmhive-options")
    if header:
        try:
            parsed = json.loads(header)
        except ValueError:
            raise BadRequest("the X-Wasmhive-Options header is not valid JSON") from None
        if not isinstance(parsed, dict):
            raise BadRequest("the X-Wasmhive-Options header must be a JSON object")
        data.update(parsed)
    for key, value in request.query_params.items():
        if key == "kind":
            data["kind"] = value
        elif key == "secrets":
            data["secrets"] = [s for s in value.split(",") if s]
        elif key in _SCALAR_OPTIONS:
            try:
                data[key] = _SCALAR_OPTIONS[key](value)
            except ValueError:
                raise BadRequest(f"query parameter {key}={value!r} is not a {_SCALAR_OPTIONS[key].__name__}") from None
        else:
            raise BadRequest(f"unknown query parameter {key!r} (options: kind, secrets, {', '.join(_SCALAR_OPTIONS)})")
    try:
        return FunctionOptions.from_json(data)
    except WasmhiveError as exc:
        raise InvalidConfig(exc.message) from None


def _module_kind(request: Request, body: bytes, options: FunctionOptions) -> str:
    """``wasm`` (binary or WAT) or ``js``: from ?kind=, else the content type, else the bytes."""
    if options.kind is not None:
        return options.kind
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in ("application/javascript", "text/javascript", "application/x-javascript"):
        return "js"
    if content_type in ("application/wasm", "text/wat", "application/wat"):
        return "wasm"
    if body.startswith(b"\0asm") or body.lstrip().startswith((b"(module", b"(;", b";;")):
        return "wasm"
    raise BadRequest(
        "cannot tell whether the body is wasm or JavaScript: send Content-Type application/wasm "
        "or application/javascript (or ?kind=wasm|js)"
    )


def _weights(body: bytes) -> dict[int, int]:
    """``3``, ``{"version": 3}`` or ``{"2": 90, "3": 10}`` -> {version: weight}."""
    try:
        data = json.loads(body or b"null")
    except ValueError:
        raise BadRequest('the alias body must be JSON: a version number or {"2": 90, "3": 10}') from None
    if isinstance(data, int) and not isinstance(data, bool):
        return {data: 100}
    if isinstance(data, dict) and set(data) == {"version"} and isinstance(data["version"], int):
        return {data["version"]: 100}
    if isinstance(data, dict) and data:
        weights: dict[int, int] = {}
        for key, weight in data.items():
            if (
                not (str(key).isascii() and str(key).isdigit() and len(str(key)) <= 18)
                or not isinstance(weight, int)
                or isinstance(weight, bool)
            ):
                raise BadRequest(f"alias weights map version numbers to integer weights, got {key!r}: {weight!r}")
            weights[int(key)] = weight
        return weights
    raise BadRequest('the alias body must be a version number or {"2": 90, "3": 10}')


# --- responses -------------------------------------------------------------------------


def _json_response(data: Any, status: int = 200) -> Response:
    return Response(_json.encode(data), status_code=status, media_type=JSON)


def _reply_response(reply: bytes, version: int | None, request_id: str) -> Response:
    """A successful invocation's answer: the reply, without a Content-Type (the bytes are the guest's).

    The headers are appended as byte pairs: ``MutableHeaders`` would look each one up first.
    """
    response = Response(reply)
    if version is not None:
        response.raw_headers.append((b"x-wasmhive-version", str(version).encode("latin-1")))
    response.raw_headers.append((b"x-request-id", request_id.encode("latin-1")))
    return response


def _error_body(error: WasmhiveError, request_id: str) -> bytes:
    body: dict[str, Any] = {"error": type(error).__name__, "message": error.message}
    if error.function is not None:
        # A version runs as the runtime deployment "<name>.<version>": say it the API's way.
        name, dot, version = error.function.rpartition(".")
        if dot and version.isdigit():
            body["function"], body["version"] = name, int(version)
        else:
            body["function"] = error.function
    body["request_id"] = request_id
    return _json.encode(body)


def _sse_event(event: str, data: bytes) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


def _sse_chunk(chunk: bytes) -> bytes:
    """A chunk as an SSE event: text as ``data:`` lines, anything else base64 (``event: chunk-base64``)."""
    try:
        text = chunk.decode()
    except UnicodeDecodeError:
        text = None
    if text is None or "\r" in text:
        return _sse_event("chunk-base64", base64.b64encode(chunk))
    return b"event: chunk\n" + b"".join(b"data: " + line.encode() + b"\n" for line in text.split("\n")) + b"\n"


def _sse_response(events: list[bytes], status: int) -> Response:
    return Response(b"".join(events), status_code=status, media_type="text/event-stream")
