"""Where emitted stream chunks go: collected for ``invoke``, piped for ``stream``."""

from __future__ import annotations

import threading
from collections import deque

import anyio

from .bridge import LoopBridge
from .host import current

#: How often a producer blocked on a full pipe looks at its call's deadline (seconds).
_WAIT_SLICE = 0.01

__all__ = ["ChunkCollector", "ChunkPipe"]


class ChunkCollector:
    """Keeps every chunk, for ``invoke``, which returns them joined before the reply."""

    __slots__ = ("chunks",)

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def emit(self, data: bytes) -> None:
        self.chunks.append(data)


class ChunkPipe:
    """A bounded pipe from a guest (on any thread) to a consumer task on the loop.

    A producer on another thread blocks while more than ``high_water`` bytes
    are waiting, so a fast guest cannot outrun a slow consumer (the call's
    timeout still runs).  A producer on the loop thread (an ``inline`` call)
    never blocks: its chunks are buffered until the call returns.  After the
    consumer :meth:`abandon`\\ s the pipe, further chunks are discarded.
    """

    def __init__(self, bridge: LoopBridge, high_water: int = 1 << 20) -> None:
        self._bridge = bridge
        self._high_water = high_water
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        self._closed = False
        self._abandoned = False
        self._wakeup: anyio.Event | None = None

    def emit(self, data: bytes) -> None:
        """Producer side: add one chunk (may block, see the class docs)."""
        on_loop = self._bridge.on_loop_thread()
        with self._lock:
            if not on_loop:
                while self._buffered >= self._high_water and not self._abandoned:
                    # The guest waits here, not in wasm: keep its deadline and kill in force.
                    instance = current.instance
                    if instance is not None:
                        instance.check_deadline()
                    self._space.wait(_WAIT_SLICE)
            if self._abandoned:
                return
            self._chunks.append(data)
            self._buffered += len(data)
        self._notify(on_loop)

    def close(self) -> None:
        """Producer side: no more chunks will come."""
        with self._lock:
            self._closed = True
        self._notify(self._bridge.on_loop_thread())

    def abandon(self) -> None:
        """Consumer side: stop reading; the producer never blocks again."""
        with self._lock:
            self._abandoned = True
            self._chunks.clear()
            self._buffered = 0
            self._space.notify_all()

    async def receive(self) -> bytes | None:
        """Consumer side: the next chunk, or None once the pipe is closed and empty."""
        while True:
            with self._lock:
                if self._chunks:
                    chunk = self._chunks.popleft()
                    self._buffered -= len(chunk)
                    self._space.notify()
                    return chunk
                if self._closed:
                    return None
            self._wakeup = anyio.Event()
            await self._wakeup.wait()

    def _notify(self, on_loop: bool) -> None:
        if on_loop:
            self._wake()
        else:
            self._bridge.call_soon(self._wake)

    def _wake(self) -> None:
        wakeup, self._wakeup = self._wakeup, None
        if wakeup is not None:
            wakeup.set()
