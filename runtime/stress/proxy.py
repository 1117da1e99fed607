"""A TCP proxy between the harness's client and the daemon, with toxics (toxiproxy style).

The client talks to the proxy (``127.0.0.1:<any port>``); every connection is
forwarded to the daemon.  Two toxics, switched on and off by the scenario's
fault windows (through the :class:`FaultSchedule`):

* **latency** (``slow_connection`` faults): every chunk the daemon sends back
  waits ``latency +/- jitter`` seconds (seeded per chunk) before it is
  forwarded, while the fault is active.  As toxiproxy's ``latency`` toxic on
  the downstream direction.
* **reset_peer** (``reset_connection`` faults): the proxy reads the HTTP/1.1
  requests going up (head and ``Content-Length`` body) for their
  ``X-Request-Id``.  When a request the schedule marked has been forwarded
  whole, the client's connection is reset: ``SO_LINGER`` 0, then close,
  so the client gets an RST and never sees the answer.  The upstream
  connection is kept until the answer starts (the call ran, or failed, in
  the daemon) and then closed.  The request's outcome is indeterminate for
  the client; the daemon's execution trace settles it.

A connection the daemon refuses (it is down) is reset at once.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Callable

import anyio
import anyio.abc

from .history import FaultRecord, History
from .schedule import FaultSchedule

__all__ = ["FaultProxy", "RequestFramer"]

_READ = 65536


class RequestFramer:
    """Finds where HTTP/1.1 requests end in a byte stream, and their ``X-Request-Id``.

    Only what the harness's client sends is understood: a head, then a body
    of ``Content-Length`` bytes.  A chunked request body stops the framing
    (:attr:`lost`): the connection is then forwarded without resets.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._body_left = 0
        self._request_id: str | None = None
        self._in_body = False
        self.lost = False

    def feed(self, data: bytes) -> list[str | None]:
        """Take the next bytes; return the request ids of the requests they complete (None: no id)."""
        done: list[str | None] = []
        if self.lost:
            return done
        self._buffer += data
        while True:
            if self._in_body:
                take = min(self._body_left, len(self._buffer))
                self._body_left -= take
                self._buffer = self._buffer[take:]
                if self._body_left:
                    return done
                self._in_body = False
                done.append(self._request_id)
                continue
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buffer) > 256 * 1024:
                    self.lost = True
                return done
            head, self._buffer = self._buffer[:end], self._buffer[end + 4 :]
            self._request_id, length, chunked = None, 0, False
            for line in head.split(b"\r\n")[1:]:
                key, _, value = line.partition(b":")
                key = key.strip().lower()
                if key == b"content-length":
                    length = int(value.strip() or b"0")
                elif key == b"x-request-id":
                    self._request_id = value.strip().decode("latin-1")
                elif key == b"transfer-encoding" and b"chunked" in value.lower():
                    chunked = True
            if chunked:
                self.lost = True
                return done
            self._body_left, self._in_body = length, True


class FaultProxy:
    """Forwards ``127.0.0.1:<port>`` to ``upstream``, applying the schedule's connection faults.

    ``reset_fault(request_id)`` says which ``reset_connection`` fault (its
    index) hits the request with that ``X-Request-Id``, or None.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        schedule: FaultSchedule,
        history: History,
        reset_fault: Callable[[str], int | None],
    ) -> None:
        self.upstream = upstream
        self._schedule = schedule
        self._history = history
        self._reset_fault = reset_fault
        self._slow = [i for i, f in enumerate(schedule.scenario.faults) if f.kind == "slow_connection"]
        self._chunks = 0
        self.port = 0
        #: Connections accepted; connections the daemon refused; chunks delayed per slow fault.
        self.connections = 0
        self.refused = 0
        self.delayed: dict[int, int] = {i: 0 for i in self._slow}

    @property
    def url(self) -> str:
        """The URL the client uses instead of the daemon's."""
        return f"http://127.0.0.1:{self.port}"

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Listen and forward until cancelled (start it with ``TaskGroup.start``)."""
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        task_status.started()
        async with listener:
            await listener.serve(self._handle)

    async def _handle(self, client: anyio.abc.SocketStream) -> None:
        self.connections += 1
        try:
            upstream = await anyio.connect_tcp(*self.upstream)
        except OSError:
            self.refused += 1
            await _reset(client)
            return
        reset = anyio.Event()
        async with client, upstream, anyio.create_task_group() as tg:

            async def up() -> None:
                framer = RequestFramer()
                with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    while True:
                        data = await client.receive(_READ)
                        marked = self._marked(framer.feed(data))
                        if marked:
                            reset.set()  # before sending: no byte of its answer may reach the client
                        await upstream.send(data)
                        if marked:
                            fault, request_id = marked[0]
                            self._record(fault, f"request {request_id}: connection reset after it was sent")
                            await _reset(client)
                            return
                tg.cancel_scope.cancel()

            async def down() -> None:
                with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    while True:
                        data = await upstream.receive(_READ)
                        if reset.is_set():  # the answer started: the call is over in the daemon
                            break
                        await self._delay()
                        if reset.is_set():
                            break
                        await client.send(data)
                tg.cancel_scope.cancel()

            tg.start_soon(up)
            tg.start_soon(down)

    def _marked(self, request_ids: list[str | None]) -> list[tuple[int, str]]:
        """(reset fault, request id) of the completed requests the schedule resets."""
        out = []
        for request_id in request_ids:
            fault = self._reset_fault(request_id) if request_id is not None else None
            if fault is not None and request_id is not None:
                out.append((fault, request_id))
        return out

    async def _delay(self) -> None:
        if not self._slow:
            return
        at = self._history.now()
        n = self._chunks
        self._chunks += 1
        total = 0.0
        for i in self._slow:
            if self._schedule.active(self._schedule.scenario.faults[i], at):
                self.delayed[i] += 1
                total += self._schedule.latency(i, n)
        if total > 0:
            await anyio.sleep(total)

    def _record(self, fault: int, note: str) -> None:
        self._history.faults.append(FaultRecord(self._history.now(), fault, "reset_connection", "*", True, note))

    def summary(self) -> list[FaultRecord]:
        """One record per slow_connection fault: how many chunks it delayed."""
        now = self._history.now()
        return [
            FaultRecord(now, i, "slow_connection", "*", n > 0, f"{n} chunks from the daemon delayed")
            for i, n in self.delayed.items()
        ]


async def _reset(stream: anyio.abc.SocketStream) -> None:
    """Close with an RST instead of a FIN (SO_LINGER on, timeout 0)."""
    with contextlib.suppress(OSError):
        sock = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
        await stream.aclose()
