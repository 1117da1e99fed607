"""The record of a stress run: every request, every answer, every execution the guest saw.

Times are seconds relative to the end of the warm-up (``t0``), from
``time.perf_counter()``, so records made on actor threads and on the event
loop share one clock.  Warm-up requests have negative times.

Executions are appended from the threads that run guests (list appends are
atomic in CPython); everything else is recorded on the event loop.

Records hold only atoms (numbers, strings, tuples of numbers), so they are
structs with ``gc=False``: the garbage collector never walks them.  A minute
of load leaves about a million of them; tracked, each full collection walked
them all and stalled the event loop for 20-30 ms, in the middle of the
latencies being measured.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Literal

import msgspec

__all__ = [
    "AnswerRecord",
    "ExecutionRecord",
    "FaultRecord",
    "FunctionState",
    "History",
    "LostRecord",
    "Outcome",
    "RequestRecord",
    "Sample",
    "SupervisionRecord",
    "raised_at",
]


def raised_at(error: BaseException) -> str:
    """``file:line in function`` of the innermost frame that raised ``error`` ("?" if unknown)."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return "?"
    frame = frames[-1]
    return f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}"


#: ``ok``: a reply; ``error``: a typed error (a WasmhiveError); ``untyped``: any other exception.
Outcome = Literal["ok", "error", "untyped"]


class RequestRecord(msgspec.Struct, frozen=True, gc=False):
    """A request: ``intended`` is when the load meant to send it, ``sent`` when it was."""

    id: int
    function: str
    intended: float
    sent: float
    warmup: bool
    #: Probability faults scheduled for this request (indexes into the scenario's faults).
    faults: tuple[int, ...] = ()


class AnswerRecord(msgspec.Struct, frozen=True, gc=False):
    """An answer to a request: a reply or an error (``error`` is the exception's type name)."""

    request: int
    at: float
    outcome: Outcome
    error: str | None = None
    message: str | None = None


class LostRecord(msgspec.Struct, frozen=True, gc=False):
    """The harness stopped waiting for an answer (``deadline + grace`` after sending)."""

    request: int
    at: float


class ExecutionRecord(msgspec.Struct, frozen=True, gc=False):
    """The guest was entered with a request's payload (``request`` None: not a request, e.g. a flood)."""

    request: int | None
    actor: str
    at: float


class FaultRecord(msgspec.Struct, frozen=True, gc=False):
    """A fault the harness injected (``applied`` False: it found nothing to hit; ``note`` says what happened)."""

    at: float
    fault: int
    kind: str
    function: str
    applied: bool
    note: str


class FunctionState(msgspec.Struct, frozen=True, gc=False):
    """A function's state as the target reports it (counters are totals since deploy)."""

    pool_size: int
    instances: int
    in_flight: int
    breaker: str | None
    crashes: int
    restarts: int
    retries: int
    rejections: int
    #: The target could not be read (a daemon that is down): these are the last values read.
    stale: bool = False


class Sample(FunctionState, frozen=True, kw_only=True):
    """The state of one function at one moment (sampled every ``SAMPLE_INTERVAL``)."""

    at: float
    function: str


class SupervisionRecord(msgspec.Struct, frozen=True, gc=False):
    """A supervision event (``ChildExited``, ``ChildRestarted``, ``SupervisorGaveUp``, ...)."""

    at: float
    type: str
    supervisor: str
    child: str | None
    reason: str | None


class History:
    """Everything that happened in one run, for the checker and the report."""

    def __init__(self) -> None:
        #: perf_counter() at the end of the warm-up; set by the runner.
        self.t0 = time.perf_counter()
        self.requests: list[RequestRecord] = []
        self.answers: list[AnswerRecord] = []
        self.lost: list[LostRecord] = []
        self.executions: list[ExecutionRecord] = []
        self.faults: list[FaultRecord] = []
        self.samples: list[Sample] = []
        self.supervision: list[SupervisionRecord] = []
        #: Whether the target sees guest executions (its probe is installed).
        self.executions_observed = False
        #: Payload -> request id: payloads are unique, so the probe can name the request.
        self._ids: dict[bytes, int] = {}

    def now(self) -> float:
        """Seconds since ``t0`` (negative during the warm-up)."""
        return time.perf_counter() - self.t0

    def add_request(
        self, function: str, payload: bytes, intended: float, *, warmup: bool, faults: tuple[int, ...] = ()
    ) -> RequestRecord:
        """Record a request about to be sent (its payload must be new)."""
        if payload in self._ids:
            raise ValueError("payloads must be unique: a payload generator repeated one")
        record = RequestRecord(len(self.requests), function, intended, self.now(), warmup, faults)
        self.requests.append(record)
        self._ids[payload] = record.id
        return record

    def request_of(self, payload: bytes) -> int | None:
        """The id of the request whose payload this is, if any (safe from any thread)."""
        return self._ids.get(payload)

    def answer(self, request: int, outcome: Outcome, error: BaseException | None = None) -> None:
        """Record an answer to ``request``.

        An untyped error's message says where it was raised, so that the report
        points at the bug (an ``AssertionError`` alone has no message at all).
        """
        message = None if error is None else str(error)[:300]
        if outcome == "untyped" and error is not None:
            message = f"{message} (raised at {raised_at(error)})" if message else f"raised at {raised_at(error)}"
        self.answers.append(
            AnswerRecord(request, self.now(), outcome, None if error is None else type(error).__name__, message)
        )

    def give_up(self, request: int) -> None:
        """Record that no answer came within the deadline plus grace."""
        self.lost.append(LostRecord(request, self.now()))

    def executed(self, payload: bytes, actor: str) -> int | None:
        """The guest is being entered with ``payload`` (from the thread that runs it); returns its request id."""
        request = self._ids.get(payload)
        self.executions.append(ExecutionRecord(request, actor, self.now()))
        return request
