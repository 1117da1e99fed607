"""Scheduling work on the event loop from other threads, for trio and asyncio alike."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.lowlevel
import sniffio
import trio

__all__ = ["LoopBridge"]


class LoopBridge:
    """Runs callbacks on the event loop that created it, from any thread.

    Create it with :meth:`current` inside the loop.  Callbacks scheduled after
    the loop has finished are dropped: there is nobody left to receive them.
    """

    def __init__(
        self,
        schedule: Callable[..., Any],
        loop_thread: int,
        library: str,
        run_blocking: Callable[..., Any] | None = None,
    ) -> None:
        self._schedule = schedule
        self._run_blocking = run_blocking
        #: The loop's clock (seconds), the backend's own function: cheaper than anyio.current_time().
        self.clock: Callable[[], float] = trio.current_time if library == "trio" else asyncio.get_running_loop().time
        #: A real checkpoint: yields to the scheduler (deadlines fire, other tasks run).
        self.checkpoint: Callable[[], Awaitable[None]] = (
            trio.lowlevel.checkpoint if library == "trio" else anyio.lowlevel.checkpoint
        )
        #: Inline calls run without yielding since the last real checkpoint (see Actor.ask).
        self.calls_without_yield = 0
        #: Raises the backend's cancellation if the current task is cancelled, without yielding.
        self.checkpoint_if_cancelled: Callable[[], Awaitable[None]] = (
            trio.lowlevel.checkpoint_if_cancelled if library == "trio" else anyio.lowlevel.checkpoint_if_cancelled
        )
        #: ``threading.get_ident()`` of the loop's thread.
        self.loop_thread = loop_thread
        #: ``"trio"`` or ``"asyncio"``.
        self.library = library

    @classmethod
    def current(cls) -> LoopBridge:
        """A bridge to the running trio or asyncio loop."""
        library = sniffio.current_async_library()
        if library == "trio":
            token = trio.lowlevel.current_trio_token()

            def run_on_trio(fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
                return trio.from_thread.run(fn, *args, trio_token=token)

            return cls(token.run_sync_soon, threading.get_ident(), library, run_on_trio)
        if library == "asyncio":
            loop = asyncio.get_running_loop()

            def run_on_asyncio(fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
                async def main() -> Any:
                    return await fn(*args)

                return asyncio.run_coroutine_threadsafe(main(), loop).result()

            def schedule_on_asyncio(fn: Callable[..., Any], *args: Any) -> None:
                loop.call_soon_threadsafe(_as_asyncio, fn, *args)

            return cls(schedule_on_asyncio, threading.get_ident(), library, run_on_asyncio)
        raise RuntimeError(f"wasmhive runs under trio or asyncio, not {library}")

    def on_loop_thread(self) -> bool:
        """True when called from the loop's own thread."""
        return threading.get_ident() == self.loop_thread

    def run_blocking(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """From another thread: run ``await fn(*args)`` on the loop and wait for its result."""
        if self._run_blocking is None or self.on_loop_thread():
            raise RuntimeError("run_blocking is for threads other than the loop's")
        return self._run_blocking(fn, *args)

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop soon.  Safe from any thread."""
        try:
            self._schedule(fn, *args)
        except RuntimeError:  # the loop is closed (trio.RunFinishedError is a RuntimeError)
            pass


def _as_asyncio(fn: Callable[..., Any], *args: Any) -> None:
    """Run a loop callback where sniffio (and so anyio) can tell it runs under asyncio.

    asyncio callbacks run outside any task, where anyio cannot find the loop;
    callbacks that start timers or tasks need it.
    """
    token = sniffio.current_async_library_cvar.set("asyncio")
    try:
        fn(*args)
    finally:
        sniffio.current_async_library_cvar.reset(token)
