"""A circuit breaker for the calls to one function, with resilience4j's semantics.

The breaker is CLOSED while calls succeed.  Counted failures (by default the
guest faults and crashed actors, see :attr:`BreakerPolicy.record`) open it:

* ``mode="consecutive"``: ``failure_threshold`` counted failures in a row;
* ``mode="rate"``: once the sliding window (the last ``window_size`` calls, or
  the calls of the last ``window_size`` seconds in per-second buckets) holds at
  least ``minimum_calls`` outcomes, a failure rate or slow-call rate at or above
  its threshold.

An OPEN breaker fails calls fast with :class:`~wasmhive.actors.errors.CircuitOpen`.
After ``wait_in_open`` the next :meth:`CircuitBreaker.acquire` moves it to
HALF_OPEN (lazily, as resilience4j does with its automatic transition off),
where a few probe calls decide: CLOSED again, or OPEN for another wait.  A
HALF_OPEN state older than ``max_wait_in_half_open`` goes back to OPEN, so a
probe that never reports cannot wedge the breaker.  DISABLED, FORCED_OPEN and
METRICS_ONLY are entered and left only by hand.

The breaker is synchronous and belongs to the event-loop thread: it takes no
locks.  Time comes from the injected ``clock`` (``time.monotonic`` by default).
"""

from __future__ import annotations

import enum
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final, Literal, NoReturn, Protocol, TypeVar

import msgspec

from wasmhive.actors.errors import ActorCrashed, CircuitOpen, InvalidConfig

__all__ = [
    "DEFAULT_RECORDED",
    "BreakerMetrics",
    "BreakerPolicy",
    "BreakerState",
    "CircuitBreaker",
]

T = TypeVar("T")

BreakerMode = Literal["consecutive", "rate"]
WindowType = Literal["count", "time"]
Transition = Callable[["BreakerState", "BreakerState"], None]

#: The error type names counted as failures by default: the guest faults and
#: crashed actors.  ``GuestError`` (an application error the guest reported on
#: purpose) is not among them.
DEFAULT_RECORDED: Final[tuple[str, ...]] = (
    "GuestTrap",
    "CallTimeout",
    "OutOfMemory",
    "FuelExhausted",
    "AbiError",
    "HostError",
    "ActorCrashed",
)


class BreakerState(enum.Enum):
    """The states of a :class:`CircuitBreaker` (resilience4j's six)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    DISABLED = "disabled"
    FORCED_OPEN = "forced_open"
    METRICS_ONLY = "metrics_only"


class BreakerPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """When a :class:`CircuitBreaker` opens, how long it stays open, how it probes.

    Durations are in seconds, rates in percent.  Invalid values raise
    :class:`~wasmhive.actors.errors.InvalidConfig` naming the field.
    """

    #: ``consecutive``: count failures in a row; ``rate``: failure and slow-call rates over a window.
    mode: BreakerMode = "consecutive"
    #: Consecutive mode: counted failures in a row that open the breaker.
    failure_threshold: int = 5
    #: Consecutive mode: successes in HALF_OPEN that close it (any counted failure reopens it).
    success_threshold: int = 3
    #: Rate mode: ``count`` (the last ``window_size`` calls) or ``time`` (the last ``window_size`` seconds).
    window_type: WindowType = "count"
    #: Rate mode: the window's size, in calls or in seconds.
    window_size: int = 100
    #: Rate mode: outcomes the window must hold before the rates are judged
    #: (for a count window, at most ``window_size`` are needed).
    minimum_calls: int = 10
    #: Rate mode: failure rate (percent) at or above which the breaker opens.
    failure_rate_threshold: float = 50.0
    #: Rate mode: a call that takes at least this long is slow.
    slow_call_duration: float = 60.0
    #: Rate mode: slow-call rate (percent) at or above which the breaker opens.
    slow_call_rate_threshold: float = 100.0
    #: Rate mode: probe calls in HALF_OPEN; the rates over their outcomes decide.
    permitted_calls_in_half_open: int = 3
    #: How long the breaker stays OPEN before it lets probes through.
    wait_in_open: float = 30.0
    #: Longest HALF_OPEN before going back to OPEN; 0 means no limit.
    max_wait_in_half_open: float = 60.0
    #: Error type names (an exception's class or any base class) counted as
    #: failures.  Other errors are ignored: neither success nor failure.
    record: tuple[str, ...] = DEFAULT_RECORDED
    #: False starts the breaker DISABLED.
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.mode not in ("consecutive", "rate"):
            raise InvalidConfig(f"mode must be 'consecutive' or 'rate', got {self.mode!r}")
        if self.window_type not in ("count", "time"):
            raise InvalidConfig(f"window_type must be 'count' or 'time', got {self.window_type!r}")
        for name in (
            "failure_threshold",
            "success_threshold",
            "window_size",
            "minimum_calls",
            "permitted_calls_in_half_open",
        ):
            _check_count(name, getattr(self, name))
        for name in ("failure_rate_threshold", "slow_call_rate_threshold"):
            value = _check_number(name, getattr(self, name))
            if not 0 < value <= 100:
                raise InvalidConfig(f"{name} must be in (0, 100] percent, got {value}")
        for name in ("slow_call_duration", "wait_in_open"):
            if not _check_number(name, getattr(self, name)) > 0:
                raise InvalidConfig(f"{name} must be > 0 seconds, got {getattr(self, name)}")
        if not _check_number("max_wait_in_half_open", self.max_wait_in_half_open) >= 0:
            raise InvalidConfig(f"max_wait_in_half_open must be >= 0 seconds, got {self.max_wait_in_half_open}")
        if not isinstance(self.record, tuple) or not all(isinstance(n, str) and n for n in self.record):
            raise InvalidConfig(f"record must be a tuple of error type names, got {self.record!r}")
        if not isinstance(self.enabled, bool):
            raise InvalidConfig(f"enabled must be a bool, got {self.enabled!r}")

    @property
    def half_open_permits(self) -> int:
        """Probe calls let through at once in HALF_OPEN."""
        return self.success_threshold if self.mode == "consecutive" else self.permitted_calls_in_half_open

    def records(self, error: BaseException) -> bool:
        """Whether ``error`` counts as a failure: its class or a base class is named in :attr:`record`.

        Never a bystander: a call that failed only because it was queued behind
        another call's crash (``ActorCrashed`` marked ``queued=True`` by the
        actor) never ran, and that crash was recorded as its own call's
        failure; counting its bystanders too would open the breaker on one fault.
        """
        if isinstance(error, ActorCrashed) and error.details.get("queued"):
            return False
        return any(cls.__name__ in self.record for cls in type(error).__mro__)


class BreakerMetrics(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot of a breaker's state and of the window of its current state.

    The rates (percent) are None until the window holds enough outcomes to be
    judged.  ``not_permitted`` counts the calls refused since the breaker was
    made or last :meth:`~CircuitBreaker.reset`; ``retry_at`` is when an OPEN
    breaker lets a probe through.
    """

    state: BreakerState
    failure_rate: float | None
    slow_call_rate: float | None
    calls: int
    failed: int
    slow: int
    not_permitted: int
    retry_at: float | None


class _Window(Protocol):
    """Outcomes recorded in one state: how many calls, failed ones, slow ones."""

    def add(self, failed: bool, slow: bool, now: float) -> None: ...

    def totals(self, now: float) -> tuple[int, int, int]: ...


class _TotalWindow:
    """Every outcome since the window was made."""

    def __init__(self) -> None:
        self._totals = [0, 0, 0]

    def add(self, failed: bool, slow: bool, now: float) -> None:
        self._totals[0] += 1
        self._totals[1] += failed
        self._totals[2] += slow

    def totals(self, now: float) -> tuple[int, int, int]:
        return self._totals[0], self._totals[1], self._totals[2]


class _CountWindow:
    """The last ``size`` outcomes."""

    def __init__(self, size: int) -> None:
        self._outcomes: deque[tuple[bool, bool]] = deque()
        self._size = size
        self._failed = 0
        self._slow = 0

    def add(self, failed: bool, slow: bool, now: float) -> None:
        if len(self._outcomes) == self._size:
            old_failed, old_slow = self._outcomes.popleft()
            self._failed -= old_failed
            self._slow -= old_slow
        self._outcomes.append((failed, slow))
        self._failed += failed
        self._slow += slow

    def totals(self, now: float) -> tuple[int, int, int]:
        return len(self._outcomes), self._failed, self._slow


class _TimeWindow:
    """The outcomes of the last ``seconds`` whole clock seconds, the current one included.

    Outcomes are aggregated per second (``floor(now)``) as resilience4j does:
    a bucket leaves the window as a whole once its second is ``seconds`` old.
    """

    def __init__(self, seconds: int) -> None:
        self._seconds = seconds
        #: [second, calls, failed, slow], oldest first.
        self._buckets: deque[list[int]] = deque()
        self._totals = [0, 0, 0]

    def add(self, failed: bool, slow: bool, now: float) -> None:
        self._expire(now)
        second = math.floor(now)
        if not self._buckets or self._buckets[-1][0] < second:
            self._buckets.append([second, 0, 0, 0])
        bucket = self._buckets[-1]  # a clock that stepped back lands in the newest bucket
        for i, n in enumerate((1, int(failed), int(slow))):
            bucket[i + 1] += n
            self._totals[i] += n

    def totals(self, now: float) -> tuple[int, int, int]:
        self._expire(now)
        return self._totals[0], self._totals[1], self._totals[2]

    def _expire(self, now: float) -> None:
        oldest_kept = math.floor(now) - self._seconds + 1
        while self._buckets and self._buckets[0][0] < oldest_kept:
            bucket = self._buckets.popleft()
            for i in range(3):
                self._totals[i] -= bucket[i + 1]


class CircuitBreaker:
    """The circuit breaker guarding the calls to one function.

    Use :meth:`call`, or bracket each call by hand: :meth:`acquire` before it,
    then exactly one of :meth:`record_success`, :meth:`record_failure` or
    :meth:`record_ignored` after it.  Outcomes are attributed to the state the
    breaker is in when they are reported; outcomes reported while OPEN,
    FORCED_OPEN or DISABLED are dropped.
    """

    def __init__(self, policy: BreakerPolicy, function: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._policy = policy
        self._function = function
        self._clock = clock
        self._subscribers: list[Transition] = []
        self._state = BreakerState.CLOSED
        self._window: _Window = _TotalWindow()
        #: Outcomes the current window needs before its rates are judged.
        self._minimum = 1
        self._consecutive_failures = 0
        self._retry_at = 0.0  # OPEN: when probes are let through
        self._half_open_since = 0.0
        self._permits = 0  # HALF_OPEN: probes that may still start
        self._not_permitted = 0
        self._enter(self._initial_state())

    @property
    def policy(self) -> BreakerPolicy:
        """The policy the breaker follows."""
        return self._policy

    @property
    def function(self) -> str:
        """The function whose calls the breaker guards."""
        return self._function

    @property
    def state(self) -> BreakerState:
        """The current state, after a HALF_OPEN past ``max_wait_in_half_open`` has gone back to OPEN.

        An OPEN breaker stays OPEN here after ``wait_in_open``: only :meth:`acquire` half-opens it.
        """
        self._expire_half_open(self._clock())
        return self._state

    def subscribe(self, callback: Callable[[BreakerState, BreakerState], None]) -> Callable[[], None]:
        """Call ``callback(old, new)`` after every state change; returns a function that unsubscribes.

        Callbacks run synchronously inside the breaker call that changed the
        state, once the breaker is consistent; they must not raise.
        """
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def acquire(self) -> None:
        """Ask to make a call; raise :class:`~wasmhive.actors.errors.CircuitOpen` if it may not start.

        OPEN refuses until ``wait_in_open`` has passed, then the first acquire
        half-opens the breaker and takes a probe permit.  HALF_OPEN lets only
        ``half_open_permits`` probes run at once.  FORCED_OPEN refuses all.
        """
        if self._state is BreakerState.CLOSED:
            return  # the common case; no time-based rule applies when closed
        now = self._clock()
        self._expire_half_open(now)
        state = self._state
        if state in (BreakerState.CLOSED, BreakerState.DISABLED, BreakerState.METRICS_ONLY):
            return
        if state is BreakerState.FORCED_OPEN:
            self._refuse("circuit breaker is forced open", None)
        if state is BreakerState.OPEN:
            if now < self._retry_at:
                wait = self._retry_at - now
                self._refuse(f"circuit breaker is open; it lets a probe call through in {wait:.3f} s", self._retry_at)
            self._half_open(now)
        if self._permits > 0:
            self._permits -= 1
            return
        self._refuse("circuit breaker is half-open and its probe calls are all in flight", None)

    def record_success(self, duration: float) -> None:
        """Report that an acquired call succeeded after ``duration`` seconds."""
        if self._state is BreakerState.CLOSED and self._policy.mode == "consecutive":
            # The common case, on every call: a success only resets the streak (no clock needed).
            self._window.add(False, duration >= self._policy.slow_call_duration, 0.0)
            self._consecutive_failures = 0
            return
        self._record(failed=False, duration=duration)

    def record_failure(self, duration: float, error: BaseException) -> None:
        """Report that an acquired call failed with ``error`` after ``duration`` seconds.

        Errors the policy does not :meth:`~BreakerPolicy.records` count as
        neither success nor failure (see :meth:`record_ignored`).
        """
        if self._policy.records(error):
            self._record(failed=True, duration=duration)
        else:
            self.record_ignored()

    def record_ignored(self) -> None:
        """Report that an acquired call ended in a way that says nothing about the function's health.

        In HALF_OPEN the call's probe permit is given back.
        """
        now = self._clock()
        self._expire_half_open(now)
        if self._state is BreakerState.HALF_OPEN:
            recorded, _, _ = self._window.totals(now)
            self._permits = min(self._permits + 1, self._policy.half_open_permits - recorded)

    def disable(self) -> None:
        """Go DISABLED: every call is let through and nothing is recorded, until another manual transition."""
        self._enter(BreakerState.DISABLED)

    def force_open(self) -> None:
        """Go FORCED_OPEN: every call is refused (``retry_at`` None), until another manual transition."""
        self._enter(BreakerState.FORCED_OPEN)

    def metrics_only(self) -> None:
        """Go METRICS_ONLY: every call is let through and recorded, but the breaker never opens."""
        self._enter(BreakerState.METRICS_ONLY)

    def reset(self) -> None:
        """Go back to the initial state (CLOSED, or DISABLED if the policy is disabled) with empty metrics."""
        self._not_permitted = 0
        self._enter(self._initial_state())

    def metrics(self) -> BreakerMetrics:
        """The state and the outcomes recorded in the current state's window.

        An OPEN breaker shows the window of the state that opened it.
        """
        now = self._clock()
        self._expire_half_open(now)
        calls, failed, slow = self._window.totals(now)
        judged = calls >= self._minimum
        return BreakerMetrics(
            state=self._state,
            failure_rate=failed * 100.0 / calls if judged else None,
            slow_call_rate=slow * 100.0 / calls if judged else None,
            calls=calls,
            failed=failed,
            slow=slow,
            not_permitted=self._not_permitted,
            retry_at=self._retry_at if self._state is BreakerState.OPEN else None,
        )

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn()`` under the breaker: acquire, time it with the clock, record the outcome.

        Raises :class:`~wasmhive.actors.errors.CircuitOpen` without calling
        ``fn`` if the breaker refuses; re-raises whatever ``fn`` raises.
        Cancellation is recorded as ignored.
        """
        self.acquire()
        start = self._clock()
        try:
            result = await fn()
        except BaseException as exc:
            self.record_failure(self._clock() - start, exc)
            raise
        self.record_success(self._clock() - start)
        return result

    # -- internals -------------------------------------------------------

    def _initial_state(self) -> BreakerState:
        return BreakerState.CLOSED if self._policy.enabled else BreakerState.DISABLED

    def _refuse(self, message: str, retry_at: float | None) -> NoReturn:
        self._not_permitted += 1
        raise CircuitOpen(message, function=self._function, retry_at=retry_at)

    def _expire_half_open(self, now: float) -> None:
        limit = self._policy.max_wait_in_half_open
        if self._state is BreakerState.HALF_OPEN and limit > 0 and now >= self._half_open_since + limit:
            # Open as of the deadline, whenever it is noticed.
            self._open(self._half_open_since + limit)

    def _record(self, *, failed: bool, duration: float) -> None:
        now = self._clock()
        self._expire_half_open(now)
        state = self._state
        if state not in (BreakerState.CLOSED, BreakerState.HALF_OPEN, BreakerState.METRICS_ONLY):
            return
        policy = self._policy
        self._window.add(failed, duration >= policy.slow_call_duration, now)
        if state is BreakerState.CLOSED:
            if policy.mode == "consecutive":
                self._consecutive_failures = self._consecutive_failures + 1 if failed else 0
                if self._consecutive_failures >= policy.failure_threshold:
                    self._open(now)
            elif self._rates_exceeded(now):
                self._open(now)
        elif state is BreakerState.HALF_OPEN:
            calls, _, _ = self._window.totals(now)
            if policy.mode == "consecutive" and failed:
                self._open(now)
            elif calls >= policy.half_open_permits:
                if policy.mode == "rate" and self._rates_exceeded(now):
                    self._open(now)
                else:
                    self._enter(BreakerState.CLOSED)

    def _rates_exceeded(self, now: float) -> bool:
        calls, failed, slow = self._window.totals(now)
        if calls < self._minimum:
            return False
        policy = self._policy
        return (
            failed * 100.0 / calls >= policy.failure_rate_threshold
            or slow * 100.0 / calls >= policy.slow_call_rate_threshold
        )

    def _open(self, at: float) -> None:
        """Go OPEN as of ``at``, keeping the window that opened it for :meth:`metrics`."""
        self._retry_at = at + self._policy.wait_in_open
        self._transition(BreakerState.OPEN)

    def _half_open(self, now: float) -> None:
        policy = self._policy
        self._window = _CountWindow(policy.half_open_permits) if policy.mode == "rate" else _TotalWindow()
        self._minimum = policy.half_open_permits if policy.mode == "rate" else 1
        self._half_open_since = now
        self._permits = policy.half_open_permits
        self._transition(BreakerState.HALF_OPEN)

    def _enter(self, state: BreakerState) -> None:
        """Go to CLOSED or a manual state with a fresh window."""
        policy = self._policy
        if policy.mode == "consecutive":
            self._window, self._minimum = _TotalWindow(), 1
        elif policy.window_type == "count":
            self._window = _CountWindow(policy.window_size)
            self._minimum = min(policy.minimum_calls, policy.window_size)
        else:
            self._window, self._minimum = _TimeWindow(policy.window_size), policy.minimum_calls
        self._consecutive_failures = 0
        self._transition(state)

    def _transition(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        if old is not new:
            for callback in list(self._subscribers):
                callback(old, new)


def _check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidConfig(f"{name} must be an integer >= 1, got {value!r}")


def _check_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidConfig(f"{name} must be a finite number, got {value!r}")
    return float(value)
