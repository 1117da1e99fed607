"""The circuit breaker: a reference model checked side by side with it, and worked examples.

Time is a manual clock everywhere; no test sleeps or asserts on wall time.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import msgspec
import pytest
import trio
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from wasmhive.actors.errors import (
    AbiError,
    ActorCrashed,
    CallTimeout,
    CircuitOpen,
    FuelExhausted,
    GuestError,
    GuestTrap,
    HostError,
    InvalidConfig,
    MailboxFull,
    OutOfMemory,
    Overloaded,
)
from wasmhive.supervisors.breaker import BreakerMetrics, BreakerPolicy, BreakerState, CircuitBreaker

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
DISABLED, FORCED_OPEN, METRICS_ONLY = BreakerState.DISABLED, BreakerState.FORCED_OPEN, BreakerState.METRICS_ONLY


class ManualClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = 1000.25) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(**policy: Any) -> tuple[CircuitBreaker, ManualClock]:
    clock = ManualClock()
    return CircuitBreaker(BreakerPolicy(**policy), "f", clock=clock), clock


def trap() -> GuestTrap:
    return GuestTrap("unreachable", function="f")


def fail(breaker: CircuitBreaker, times: int = 1, *, duration: float = 0.1) -> None:
    for _ in range(times):
        breaker.acquire()
        breaker.record_failure(duration, trap())


def succeed(breaker: CircuitBreaker, times: int = 1, *, duration: float = 0.1) -> None:
    for _ in range(times):
        breaker.acquire()
        breaker.record_success(duration)


def refusal(breaker: CircuitBreaker) -> CircuitOpen:
    with pytest.raises(CircuitOpen) as info:
        breaker.acquire()
    return info.value


# -- the reference model ------------------------------------------------------

#: The error types counted as failures by default, written out independently.
RECORDED_BY_DEFAULT = {GuestTrap, CallTimeout, OutOfMemory, FuelExhausted, AbiError, HostError, ActorCrashed}
ERRORS: list[BaseException] = [
    GuestTrap("trap", function="f"),
    CallTimeout("slow", function="f"),
    OutOfMemory("oom", function="f"),
    ActorCrashed("gone", function="f", reason="trap"),
    GuestError("app said no", function="f"),
    MailboxFull("full", function="f"),
    ValueError("not ours"),
]


class Reference:
    """The breaker's rules restated as plainly as possible: outcomes kept as a list, windows recomputed."""

    def __init__(self, policy: BreakerPolicy) -> None:
        self.p = policy
        self.state = CLOSED if policy.enabled else DISABLED
        self.outcomes: list[tuple[float, bool, bool]] = []  # (time, failed, slow) of the current window
        self.probing = False  # outcomes are half-open probes
        self.open_until = 0.0
        self.half_open_at = 0.0
        self.taken = 0
        self.refused = 0

    def limit(self) -> int:
        return self.p.success_threshold if self.p.mode == "consecutive" else self.p.permitted_calls_in_half_open

    def tick(self, now: float) -> None:
        m = self.p.max_wait_in_half_open
        if self.state is HALF_OPEN and m > 0 and now - self.half_open_at >= m:
            self.state = OPEN
            self.open_until = self.half_open_at + m + self.p.wait_in_open

    def acquire(self, now: float) -> tuple[bool, float | None]:
        """(admitted, retry_at of the refusal)."""
        self.tick(now)
        if self.state in (CLOSED, DISABLED, METRICS_ONLY):
            return True, None
        if self.state is FORCED_OPEN:
            self.refused += 1
            return False, None
        if self.state is OPEN:
            if now < self.open_until:
                self.refused += 1
                return False, self.open_until
            self.state, self.half_open_at, self.taken = HALF_OPEN, now, 0
            self.outcomes, self.probing = [], True
        if self.taken < self.limit():
            self.taken += 1
            return True, None
        self.refused += 1
        return False, None

    def window(self, now: float) -> list[tuple[float, bool, bool]]:
        if self.probing or self.p.mode == "consecutive":
            return self.outcomes
        if self.p.window_type == "count":
            return self.outcomes[-self.p.window_size :]
        return [o for o in self.outcomes if math.floor(o[0]) > math.floor(now) - self.p.window_size]

    def minimum(self) -> int:
        if self.p.mode == "consecutive":
            return 1
        if self.probing:
            return self.p.permitted_calls_in_half_open
        if self.p.window_type == "count":
            return min(self.p.minimum_calls, self.p.window_size)
        return self.p.minimum_calls

    def tripped(self, now: float) -> bool:
        window = self.window(now)
        if len(window) < self.minimum():
            return False
        failure_rate = Fraction(100 * sum(o[1] for o in window), len(window))
        slow_rate = Fraction(100 * sum(o[2] for o in window), len(window))
        return failure_rate >= Fraction(self.p.failure_rate_threshold) or slow_rate >= Fraction(
            self.p.slow_call_rate_threshold
        )

    def open(self, now: float) -> None:
        self.state, self.open_until = OPEN, now + self.p.wait_in_open

    def enter(self, state: BreakerState) -> None:
        self.state, self.outcomes, self.probing = state, [], False

    def complete(self, now: float, error: BaseException | None, duration: float) -> None:
        """A call ended: ``error`` None is a success; ``duration`` < 0 means "record_ignored"."""
        self.tick(now)
        ignored = duration < 0 or (error is not None and type(error) not in RECORDED_BY_DEFAULT)
        if ignored:
            if self.state is HALF_OPEN:
                self.taken = max(self.taken - 1, len(self.outcomes))
            return
        if self.state not in (CLOSED, HALF_OPEN, METRICS_ONLY):
            return
        failed = error is not None
        self.outcomes.append((now, failed, duration >= self.p.slow_call_duration))
        if self.state is CLOSED:
            if self.p.mode == "consecutive":
                trailing = 0
                for _, was_failure, _ in reversed(self.outcomes):
                    if not was_failure:
                        break
                    trailing += 1
                if trailing >= self.p.failure_threshold:
                    self.open(now)
            elif self.tripped(now):
                self.open(now)
        elif self.state is HALF_OPEN:
            if self.p.mode == "consecutive" and failed:
                self.open(now)
            elif len(self.outcomes) >= self.limit():
                if self.p.mode == "rate" and self.tripped(now):
                    self.open(now)
                else:
                    self.enter(CLOSED)

    def manual(self, action: str) -> None:
        if action == "reset":
            self.refused = 0
            self.enter(CLOSED if self.p.enabled else DISABLED)
        else:
            self.enter({"disable": DISABLED, "force_open": FORCED_OPEN, "metrics_only": METRICS_ONLY}[action])

    def metrics(self, now: float) -> BreakerMetrics:
        self.tick(now)
        window = self.window(now)
        calls = len(window)
        failed = sum(o[1] for o in window)
        slow = sum(o[2] for o in window)
        judged = calls >= self.minimum() and calls > 0
        return BreakerMetrics(
            state=self.state,
            failure_rate=float(Fraction(100 * failed, calls)) if judged else None,
            slow_call_rate=float(Fraction(100 * slow, calls)) if judged else None,
            calls=calls,
            failed=failed,
            slow=slow,
            not_permitted=self.refused,
            retry_at=self.open_until if self.state is OPEN else None,
        )


OUTCOMES = st.sampled_from(["success", "failure", "ignored"])


def breaker_machine(policies: st.SearchStrategy[BreakerPolicy]) -> type[RuleBasedStateMachine]:
    """A state machine driving a CircuitBreaker and a Reference with the same steps."""

    class BreakerMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.clock = ManualClock()
            self.breaker = CircuitBreaker(BreakerPolicy(), "f", clock=self.clock)
            self.model = Reference(BreakerPolicy())
            self.in_flight = 0  # acquired calls not yet reported; some never are (stuck probes)
            self.steps_since_manual = 0
            self.transitions: list[tuple[BreakerState, BreakerState]] = []

        @initialize(policy=policies)
        def start(self, policy: BreakerPolicy) -> None:
            self.breaker = CircuitBreaker(policy, "f", clock=self.clock)
            self.breaker.subscribe(lambda old, new: self.transitions.append((old, new)))
            self.model = Reference(policy)

        @rule(half_seconds=st.integers(0, 12))
        def advance(self, half_seconds: int) -> None:
            self.steps_since_manual += 1
            self.clock.advance(half_seconds / 2)

        def try_acquire(self) -> bool:
            admitted, retry_at = self.model.acquire(self.clock.now)
            try:
                self.breaker.acquire()
            except CircuitOpen as exc:
                assert not admitted, "the breaker refused a call the model admits"
                assert exc.retry_at == retry_at
                assert exc.function == "f"
                return False
            assert admitted, "the breaker admitted a call the model refuses"
            return True

        def report(self, outcome: str, error: BaseException, slow: bool) -> None:
            threshold = self.breaker.policy.slow_call_duration
            duration = threshold if slow else threshold - 0.5  # exactly at the threshold is slow
            if outcome == "success":
                self.breaker.record_success(duration)
                self.model.complete(self.clock.now, None, duration)
            elif outcome == "failure":
                self.breaker.record_failure(duration, error)
                self.model.complete(self.clock.now, error, duration)
            else:
                self.breaker.record_ignored()
                self.model.complete(self.clock.now, None, -1.0)

        @rule(outcome=OUTCOMES, error=st.sampled_from(ERRORS), slow=st.booleans(), times=st.integers(1, 4))
        def call(self, outcome: str, error: BaseException, slow: bool, times: int) -> None:
            """Whole calls: acquire, and report at once if admitted."""
            self.steps_since_manual += 1
            for _ in range(times):
                if self.try_acquire():
                    self.report(outcome, error, slow)

        @rule()
        def start_call(self) -> None:
            """Acquire and leave the call in flight, to be reported later or never (a stuck probe)."""
            self.steps_since_manual += 1
            if self.try_acquire():
                self.in_flight += 1

        @precondition(lambda self: self.in_flight > 0)
        @rule(outcome=OUTCOMES, error=st.sampled_from(ERRORS), slow=st.booleans())
        def finish_call(self, outcome: str, error: BaseException, slow: bool) -> None:
            self.steps_since_manual += 1
            self.in_flight -= 1
            self.report(outcome, error, slow)

        @precondition(lambda self: self.steps_since_manual >= 10)  # manual transitions are rare in life
        @rule(action=st.sampled_from(["reset", "disable", "force_open", "metrics_only"]))
        def manual(self, action: str) -> None:
            self.steps_since_manual = 0
            getattr(self.breaker, action)()
            self.model.manual(action)

        @invariant()
        def agrees_with_the_model(self) -> None:
            assert self.breaker.metrics() == self.model.metrics(self.clock.now)
            assert self.breaker.state is self.model.state

        @invariant()
        def never_wedged_in_half_open(self) -> None:
            limit = self.breaker.policy.max_wait_in_half_open
            if self.breaker.state is HALF_OPEN and limit > 0:
                assert self.clock.now - self.model.half_open_at < limit

        @invariant()
        def transitions_are_changes(self) -> None:
            assert all(old is not new for old, new in self.transitions)
            if self.transitions:
                assert self.transitions[-1][1] is self.breaker.state

    return BreakerMachine


times = st.sampled_from([1.0, 2.5, 4.0])
common: dict[str, st.SearchStrategy[Any]] = {
    "wait_in_open": times,
    "max_wait_in_half_open": st.sampled_from([0.0, 1.5, 3.0, 6.0]),
    "slow_call_duration": st.sampled_from([1.0, 2.0]),
    "enabled": st.sampled_from([True] * 9 + [False]),
}
consecutive_policies = st.builds(
    BreakerPolicy,
    mode=st.just("consecutive"),
    failure_threshold=st.integers(1, 4),
    success_threshold=st.integers(1, 3),
    **common,
)
rate_policies = {
    window_type: st.builds(
        BreakerPolicy,
        mode=st.just("rate"),
        window_type=st.just(window_type),
        window_size=st.integers(1, 6) if window_type == "count" else st.integers(1, 4),
        minimum_calls=st.integers(1, 8),
        failure_rate_threshold=st.sampled_from([20.0, 50.0, 60.0, 100.0]),
        slow_call_rate_threshold=st.sampled_from([34.0, 50.0, 100.0]),
        permitted_calls_in_half_open=st.integers(1, 3),
        **common,
    )
    for window_type in ("count", "time")
}

machine_settings = settings(max_examples=200, stateful_step_count=50, deadline=None)
ConsecutiveMachine = breaker_machine(consecutive_policies)
CountWindowMachine = breaker_machine(rate_policies["count"])
TimeWindowMachine = breaker_machine(rate_policies["time"])
TestConsecutiveModeAgreesWithModel = ConsecutiveMachine.TestCase
TestConsecutiveModeAgreesWithModel.settings = machine_settings
TestCountWindowAgreesWithModel = CountWindowMachine.TestCase
TestCountWindowAgreesWithModel.settings = machine_settings
TestTimeWindowAgreesWithModel = TimeWindowMachine.TestCase
TestTimeWindowAgreesWithModel.settings = machine_settings


# -- consecutive mode ---------------------------------------------------------


def test_default_policy() -> None:
    policy = BreakerPolicy()
    assert (policy.mode, policy.failure_threshold, policy.success_threshold) == ("consecutive", 5, 3)
    assert (policy.window_type, policy.window_size, policy.minimum_calls) == ("count", 100, 10)
    assert (policy.failure_rate_threshold, policy.slow_call_duration, policy.slow_call_rate_threshold) == (
        50.0,
        60.0,
        100.0,
    )
    assert (policy.permitted_calls_in_half_open, policy.wait_in_open, policy.max_wait_in_half_open) == (3, 30.0, 60.0)
    assert "GuestError" not in policy.record
    assert policy.enabled


def test_opens_after_five_consecutive_failures_by_default() -> None:
    breaker, _ = make()
    fail(breaker, 4)
    assert breaker.state is CLOSED
    fail(breaker)
    assert breaker.state is OPEN


def test_a_success_resets_the_consecutive_count() -> None:
    breaker, _ = make()
    fail(breaker, 4)
    succeed(breaker)
    fail(breaker, 4)
    assert breaker.state is CLOSED
    fail(breaker)
    assert breaker.state is OPEN


def test_open_fails_fast_with_circuit_open_carrying_retry_at() -> None:
    breaker, clock = make()
    fail(breaker, 5)
    opened = clock.now
    clock.advance(10)
    error = refusal(breaker)
    assert error.retry_at == opened + 30
    assert error.function == "f"
    assert "20.000 s" in str(error)
    assert str(error).startswith("f: ")
    metrics = breaker.metrics()
    assert (metrics.state, metrics.retry_at, metrics.not_permitted) == (OPEN, opened + 30, 1)


def test_half_opens_on_the_first_acquire_after_wait_in_open() -> None:
    breaker, clock = make()
    fail(breaker, 5)
    clock.advance(29.5)
    refusal(breaker)
    clock.advance(0.5)
    assert breaker.state is OPEN  # lazily: nothing has asked yet
    breaker.acquire()
    assert breaker.state is HALF_OPEN


def test_closes_after_three_successes_in_half_open() -> None:
    breaker, clock = make()
    fail(breaker, 5)
    clock.advance(30)
    for _ in range(3):
        breaker.acquire()
    assert refusal(breaker).retry_at is None  # only three probes at once
    breaker.record_success(0.1)
    breaker.record_success(0.1)
    assert breaker.state is HALF_OPEN
    breaker.record_success(0.1)
    assert breaker.state is CLOSED
    fail(breaker, 4)  # the count starts afresh
    assert breaker.state is CLOSED


def test_a_failure_in_half_open_reopens_it() -> None:
    breaker, clock = make()
    fail(breaker, 5)
    clock.advance(30)
    succeed(breaker, 2)
    clock.advance(1)
    fail(breaker)
    assert breaker.state is OPEN
    assert refusal(breaker).retry_at == clock.now + 30


def test_a_stuck_probe_cannot_wedge_half_open() -> None:
    breaker, clock = make()
    fail(breaker, 5)
    clock.advance(30)
    for _ in range(3):
        breaker.acquire()  # three probes that never report back
    half_opened = clock.now
    clock.advance(59.5)
    assert breaker.state is HALF_OPEN
    refusal(breaker)
    clock.advance(0.5)
    assert breaker.state is OPEN
    assert breaker.metrics().retry_at == half_opened + 60 + 30
    breaker.record_success(0.1)  # a straggler reporting late changes nothing
    assert breaker.state is OPEN
    clock.advance(30)
    breaker.acquire()
    assert breaker.state is HALF_OPEN
    succeed(breaker, 2)
    breaker.record_success(0.1)
    assert breaker.state is CLOSED


def test_half_open_expiry_noticed_late_dates_from_the_deadline() -> None:
    breaker, clock = make()
    fail(breaker, 5)
    clock.advance(30)
    breaker.acquire()
    deadline = clock.now + 60
    clock.advance(1000)
    breaker.acquire()  # OPEN since the deadline, and its wait is long over: a fresh probe
    assert breaker.state is HALF_OPEN
    breaker.record_failure(0.1, trap())
    assert breaker.metrics().retry_at == clock.now + 30 > deadline + 30


def test_max_wait_in_half_open_zero_means_no_limit() -> None:
    breaker, clock = make(max_wait_in_half_open=0.0)
    fail(breaker, 5)
    clock.advance(30)
    breaker.acquire()
    clock.advance(1e6)
    assert breaker.state is HALF_OPEN


# -- what counts as a failure -------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        GuestTrap("t"),
        CallTimeout("t"),
        OutOfMemory("m"),
        FuelExhausted("f"),
        AbiError("a"),
        HostError("h"),
        ActorCrashed("c", reason="trap"),
    ],
    ids=type,
)
def test_default_recorded_errors_count(error: BaseException) -> None:
    breaker, _ = make(failure_threshold=1)
    breaker.acquire()
    breaker.record_failure(0.1, error)
    assert breaker.state is OPEN


@pytest.mark.parametrize(
    "error",
    [GuestError("no"), MailboxFull("full"), Overloaded("busy"), CircuitOpen("open"), ValueError("x")],
    ids=type,
)
def test_other_errors_are_ignored(error: BaseException) -> None:
    breaker, _ = make(failure_threshold=1)
    for _ in range(10):
        breaker.acquire()
        breaker.record_failure(0.1, error)
    assert breaker.state is CLOSED
    assert breaker.metrics().calls == 0


def test_guest_error_gives_back_the_half_open_permit() -> None:
    breaker, clock = make(success_threshold=1)
    fail(breaker, 5)
    clock.advance(30)
    breaker.acquire()
    refusal(breaker)
    breaker.record_failure(0.1, GuestError("no", function="f"))
    assert breaker.state is HALF_OPEN
    breaker.acquire()  # the permit came back
    breaker.record_success(0.1)
    assert breaker.state is CLOSED


def test_ignored_reports_never_raise_the_probe_limit() -> None:
    breaker, clock = make()
    breaker.acquire()
    breaker.acquire()  # two calls start while CLOSED and are still running
    fail(breaker, 5)
    clock.advance(30)
    breaker.acquire()  # half-opens: one probe out, two permits left
    breaker.record_ignored()
    breaker.record_ignored()  # the two old calls end saying nothing: at most three permits
    for _ in range(3):
        breaker.acquire()
    refusal(breaker)


def test_record_matches_base_class_names() -> None:
    breaker, _ = make(failure_threshold=1, record=("GuestFault", "OSError"))
    breaker.acquire()
    breaker.record_failure(0.1, ActorCrashed("gone"))  # not a GuestFault
    assert breaker.state is CLOSED
    breaker.acquire()
    breaker.record_failure(0.1, CallTimeout("slow"))
    assert breaker.state is OPEN
    other, _ = make(failure_threshold=1, record=("OSError",))
    other.acquire()
    other.record_failure(0.1, ConnectionResetError())
    assert other.state is OPEN


# -- rate mode ----------------------------------------------------------------


def test_minimum_calls_is_respected() -> None:
    breaker, _ = make(mode="rate")
    fail(breaker, 9)
    assert breaker.state is CLOSED
    assert breaker.metrics().failure_rate is None
    fail(breaker)
    assert breaker.state is OPEN
    assert breaker.metrics().failure_rate == 100.0


def test_a_count_window_needs_at_most_its_size() -> None:
    breaker, _ = make(mode="rate", window_size=4, minimum_calls=10)
    fail(breaker, 3)
    assert breaker.state is CLOSED
    fail(breaker)
    assert breaker.state is OPEN


@pytest.mark.parametrize(("failures", "state"), [(4, CLOSED), (5, OPEN)])
def test_failure_rate_at_the_threshold_opens(failures: int, state: BreakerState) -> None:
    breaker, _ = make(mode="rate", window_size=10)
    succeed(breaker, 10 - failures)
    fail(breaker, failures)
    assert breaker.state is state


def test_a_count_window_slides() -> None:
    breaker, _ = make(mode="rate", window_size=4, minimum_calls=4, failure_rate_threshold=75.0)
    fail(breaker)
    succeed(breaker, 3)
    fail(breaker, 2)  # window S S F F: 50%
    assert breaker.state is CLOSED
    assert breaker.metrics().failure_rate == 50.0
    fail(breaker)  # window S F F F: 75%, though only 4 of all 7 calls failed
    assert breaker.state is OPEN


def test_a_time_window_forgets_old_buckets() -> None:
    breaker, clock = make(mode="rate", window_type="time", window_size=10, minimum_calls=5)
    clock.now = 1000.5
    fail(breaker, 4)
    clock.now = 1009.75  # second 1009: second 1000 is still one of the last ten
    assert breaker.metrics().calls == 4
    clock.now = 1010.0  # second 1000's bucket leaves whole, 9.5 s after its calls
    assert breaker.metrics().calls == 0
    fail(breaker, 4)
    assert breaker.state is CLOSED
    clock.now = 1019.5
    fail(breaker)
    assert breaker.state is OPEN


def test_slow_call_rate_opens() -> None:
    breaker, _ = make(mode="rate", window_size=4, minimum_calls=4, slow_call_duration=2.0, slow_call_rate_threshold=50)
    succeed(breaker, 2, duration=1.9)
    succeed(breaker, 1, duration=2.0)  # at the threshold is slow
    assert breaker.state is CLOSED
    succeed(breaker, 1, duration=5.0)
    assert breaker.state is OPEN
    metrics = breaker.metrics()
    assert (metrics.failure_rate, metrics.slow_call_rate, metrics.slow) == (0.0, 50.0, 2)


def test_slow_calls_do_not_count_in_consecutive_mode() -> None:
    breaker, _ = make(slow_call_duration=1.0)
    succeed(breaker, 20, duration=5.0)
    assert breaker.state is CLOSED


@pytest.mark.parametrize(("outcomes", "state"), [("SSF", CLOSED), ("SFF", OPEN), ("FFF", OPEN), ("SSS", CLOSED)])
def test_rate_half_open_judges_the_permitted_calls(outcomes: str, state: BreakerState) -> None:
    breaker, clock = make(mode="rate", window_size=4, minimum_calls=4)
    fail(breaker, 4)
    clock.advance(30)
    for _ in outcomes:
        breaker.acquire()
    refusal(breaker)
    for i, outcome in enumerate(outcomes):
        assert breaker.state is HALF_OPEN, f"decided after {i} of 3 probes"
        if outcome == "S":
            breaker.record_success(0.1)
        else:
            breaker.record_failure(0.1, trap())
    assert breaker.state is state


# -- manual states ------------------------------------------------------------


def test_disabled_lets_everything_through_and_records_nothing() -> None:
    breaker, _ = make()
    breaker.disable()
    fail(breaker, 50)
    assert breaker.state is DISABLED
    assert breaker.metrics().calls == 0
    policy_off, _ = make(enabled=False)
    assert policy_off.state is DISABLED
    policy_off.reset()
    assert policy_off.state is DISABLED


def test_forced_open_refuses_everything_with_no_retry_at() -> None:
    breaker, clock = make()
    breaker.force_open()
    clock.advance(1e6)
    assert refusal(breaker).retry_at is None
    assert breaker.state is FORCED_OPEN
    assert breaker.metrics().not_permitted == 1


def test_metrics_only_records_but_never_opens() -> None:
    breaker, _ = make(mode="rate")
    breaker.metrics_only()
    fail(breaker, 50)
    succeed(breaker, 50, duration=100.0)
    assert breaker.state is METRICS_ONLY
    metrics = breaker.metrics()
    assert (metrics.calls, metrics.failed, metrics.slow, metrics.failure_rate) == (100, 50, 50, 50.0)


def test_reset_closes_and_clears() -> None:
    breaker, _ = make()
    fail(breaker, 5)
    refusal(breaker)
    breaker.reset()
    assert breaker.metrics() == BreakerMetrics(
        state=CLOSED,
        failure_rate=None,
        slow_call_rate=None,
        calls=0,
        failed=0,
        slow=0,
        not_permitted=0,
        retry_at=None,
    )
    fail(breaker, 4)
    assert breaker.state is CLOSED


def test_subscribers_see_every_state_change() -> None:
    breaker, clock = make(success_threshold=1)
    seen: list[tuple[BreakerState, BreakerState]] = []
    unsubscribe = breaker.subscribe(lambda old, new: seen.append((old, new)))
    fail(breaker, 5)
    clock.advance(30)
    breaker.acquire()
    clock.advance(60)
    assert breaker.state is OPEN  # expired while nobody looked
    clock.advance(30)
    succeed(breaker)
    breaker.reset()  # already CLOSED: no change
    breaker.force_open()
    unsubscribe()
    breaker.reset()
    assert seen == [
        (CLOSED, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, OPEN),  # expired while nobody looked
        (OPEN, HALF_OPEN),
        (HALF_OPEN, CLOSED),
        (CLOSED, FORCED_OPEN),
    ]


# -- the call helper ----------------------------------------------------------


@pytest.mark.trio
async def test_call_times_records_and_returns() -> None:
    breaker, clock = make(
        mode="rate", window_size=2, minimum_calls=2, slow_call_duration=5.0, slow_call_rate_threshold=50
    )

    async def slow() -> int:
        clock.advance(5.0)
        return 7

    async def fast() -> int:
        return 8

    assert await breaker.call(fast) == 8
    assert breaker.state is CLOSED
    assert await breaker.call(slow) == 7
    assert breaker.metrics().slow == 1
    assert breaker.state is OPEN


@pytest.mark.trio
async def test_call_records_and_reraises_failures() -> None:
    breaker, _ = make(failure_threshold=2)

    async def crash() -> None:
        raise trap()

    async def refuse() -> None:
        raise GuestError("no", function="f")

    with pytest.raises(GuestError):
        await breaker.call(refuse)
    with pytest.raises(GuestTrap):
        await breaker.call(crash)
    assert breaker.metrics().failed == 1
    with pytest.raises(GuestTrap):
        await breaker.call(crash)
    assert breaker.state is OPEN
    started: list[bool] = []

    async def never() -> None:
        started.append(True)

    with pytest.raises(CircuitOpen):
        await breaker.call(never)
    assert started == []


@pytest.mark.trio
async def test_a_cancelled_probe_gives_back_its_permit() -> None:
    breaker, clock = make(success_threshold=1)
    fail(breaker, 5)
    clock.advance(30)

    with trio.CancelScope() as scope:

        async def cancelled() -> None:
            scope.cancel()
            await trio.lowlevel.checkpoint()

        await breaker.call(cancelled)
    assert scope.cancelled_caught
    assert breaker.state is HALF_OPEN

    async def fine() -> None:
        return None

    await breaker.call(fine)
    assert breaker.state is CLOSED


# -- the policy -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mode", "sometimes"),
        ("failure_threshold", 0),
        ("failure_threshold", 2.5),
        ("success_threshold", 0),
        ("window_type", "calendar"),
        ("window_size", 0),
        ("minimum_calls", -1),
        ("failure_rate_threshold", 0.0),
        ("failure_rate_threshold", 101.0),
        ("slow_call_duration", 0.0),
        ("slow_call_rate_threshold", float("nan")),
        ("permitted_calls_in_half_open", 0),
        ("wait_in_open", -1.0),
        ("wait_in_open", float("inf")),
        ("max_wait_in_half_open", -0.5),
        ("record", ("GuestTrap", "")),
        ("record", ["GuestTrap"]),
        ("enabled", "yes"),
        ("failure_threshold", True),
    ],
)
def test_invalid_policy_names_the_field(field: str, value: Any) -> None:
    with pytest.raises(InvalidConfig, match=field):
        BreakerPolicy(**{field: value})


def test_policy_decodes_from_config_data() -> None:
    policy = msgspec.json.decode(b'{"mode": "rate", "record": ["GuestTrap"], "wait_in_open": 5}', type=BreakerPolicy)
    assert (policy.mode, policy.record, policy.wait_in_open) == ("rate", ("GuestTrap",), 5.0)
    with pytest.raises(msgspec.ValidationError, match="wait_in_opne"):
        msgspec.json.decode(b'{"wait_in_opne": 5}', type=BreakerPolicy)
    # The policy's own check, seen by msgspec as a ValueError: the error says where.
    with pytest.raises(msgspec.ValidationError, match=r"minimum_calls must be an integer >= 1, got 0 - at `\$\[0\]`"):
        msgspec.json.decode(b'[{"minimum_calls": 0}]', type=list[BreakerPolicy])
    with pytest.raises(InvalidConfig, match="minimum_calls"):
        BreakerPolicy(minimum_calls=0)
    with pytest.raises(TypeError):
        BreakerPolicy(wait_in_opne=5)  # type: ignore[call-arg]


def test_policy_is_frozen() -> None:
    policy = BreakerPolicy()
    with pytest.raises(AttributeError):
        policy.wait_in_open = 1.0  # type: ignore[misc]


def test_bystanders_of_a_crash_are_never_recorded() -> None:
    # Calls failed only because they were queued behind another call's crash never ran:
    # the crash counted once already, as its own call's failure.
    policy = BreakerPolicy()
    bystander = ActorCrashed("actor 3 ended (fault) before handling this message", queued=True)
    assert not policy.records(bystander)
    assert policy.records(ActorCrashed("the pool gave up"))  # other ActorCrashed still count
    breaker = CircuitBreaker(BreakerPolicy(failure_threshold=1), "f", lambda: 0.0)
    breaker.acquire()
    breaker.record_failure(0.001, bystander)
    assert breaker.state is BreakerState.CLOSED
    breaker.acquire()
    breaker.record_failure(0.001, GuestTrap("trap"))
    assert breaker.state is BreakerState.OPEN
