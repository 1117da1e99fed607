"""The OS threads that run ``thread``-mode actors' guest calls.

An :class:`ActorThread` is one actor's thread: jobs submitted to it run in
order, one at a time, on a single OS thread, so the actor's Store is never
entered from two threads at once.  The OS thread behind it comes from a
:class:`ThreadPark` when there is one: when the actor ends, its thread
finishes the jobs already queued and then parks, ready for the next actor
that needs one.  A pool restarting crashed actors hundreds of times a second
then creates no threads at all (starting one holds the event loop until the
new thread runs, and costs more than the guest call it serves).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

__all__ = ["MAX_PARKED_THREADS", "ActorThread", "ThreadPark"]

logger = logging.getLogger("wasmhive.actors")

#: Idle threads a park keeps by default; threads released beyond that exit.
MAX_PARKED_THREADS = 64

Job = Callable[[], None]


class _Release:
    """Queued after a lease's last job: the lease is over once the thread reaches it."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class _Worker:
    """One OS thread running jobs from its queue, leased to one actor at a time."""

    def __init__(self, name: str, park: ThreadPark | None) -> None:
        #: Jobs, a lease's end (:class:`_Release`), or None: exit.
        self.jobs: queue.SimpleQueue[Job | _Release | None] = queue.SimpleQueue()
        self._park = park
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            if isinstance(job, _Release):
                # Parked (or not) before the lease ends: whoever joins the lease, then
                # closes the park, finds this thread either parked or on its way out.
                parked = self._park is not None and self._park._put_back(self)
                job.done.set()
                if not parked:
                    return
                continue
            try:
                job()
            except BaseException:  # jobs handle their own errors; this keeps the thread for the next
                logger.exception("a job on thread %s failed", self.thread.name)


class ThreadPark:
    """Idle worker threads, kept for the next ``thread``-mode actor that needs one.

    Thread-safe.  At most ``max_parked`` threads wait here; a thread released
    beyond that, or after :meth:`close`, exits.
    """

    def __init__(self, max_parked: int = MAX_PARKED_THREADS) -> None:
        self.max_parked = max_parked
        #: Threads started so far (a pool that reuses threads keeps this flat).
        self.threads_started = 0
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False

    @property
    def parked(self) -> int:
        """Idle threads waiting here now."""
        return len(self._idle)

    def _take(self, name: str) -> _Worker:
        with self._lock:
            worker = self._idle.pop() if self._idle else None
            if worker is None:
                self.threads_started += 1
        if worker is None:
            return _Worker(name, self)
        worker.thread.name = name
        return worker

    def _put_back(self, worker: _Worker) -> bool:  # on the worker's own thread
        with self._lock:
            if self._closed or len(self._idle) >= self.max_parked:
                return False
            worker.thread.name = "wasmhive-parked"
            self._idle.append(worker)
            return True

    def close(self) -> list[threading.Thread]:
        """Let every parked thread exit, and later released ones too; returns the threads to join."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.jobs.put(None)
        return [worker.thread for worker in idle]


class ActorThread:
    """One actor's thread: started (or taken from the park) on first use, running submitted jobs in order.

    wasmtime releases the GIL while a guest runs, so guests on these threads
    run in parallel with the event loop and with each other.
    """

    def __init__(self, name: str, park: ThreadPark | None = None) -> None:
        self._name = name
        self._park = park
        self._worker: _Worker | None = None
        self._release: _Release | None = None
        self._stopped = False

    @property
    def started(self) -> bool:
        return self._worker is not None

    def submit(self, job: Job) -> None:
        """Queue ``job`` to run on the thread (getting a thread if this is the first job).

        Raises RuntimeError after :meth:`stop`: the thread may serve another actor by then.
        """
        if self._stopped:
            raise RuntimeError(f"{self._name}: submit after stop")
        worker = self._worker
        if worker is None:
            park = self._park
            worker = self._worker = park._take(self._name) if park is not None else _Worker(self._name, None)
        worker.jobs.put(job)

    def stop(self) -> None:
        """Give the thread up after the jobs already queued (it parks, or exits without a park).

        Idempotent.  No job can be submitted afterwards.
        """
        self._stopped = True
        if self._worker is not None and self._release is None:
            self._release = _Release()
            self._worker.jobs.put(self._release)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the thread has run every job and been given up; True if it has (or never started).

        Without :meth:`stop` first, the thread is never given up: False at once.
        """
        if self._worker is None:
            return True
        if self._release is None:
            return False
        return self._release.done.wait(timeout)
