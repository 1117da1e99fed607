"""The OS thread that runs a ``thread``-mode actor's guest calls."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

__all__ = ["ActorThread"]

_STOP = None


class ActorThread:
    """One OS thread, started on first use, running submitted jobs in order.

    wasmtime releases the GIL while a guest runs, so guests on these threads
    run in parallel with the event loop and with each other.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    @property
    def started(self) -> bool:
        return self._thread is not None

    def submit(self, job: Callable[[], None]) -> None:
        """Queue ``job`` to run on the thread (starting the thread if needed)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()
        self._jobs.put(job)

    def stop(self) -> None:
        """Let the thread exit after the jobs already queued."""
        if self._thread is not None:
            self._jobs.put(_STOP)

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to exit; True if it has (or never started)."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            job()
