"""Retrying calls: policy validation, at-most-once rule, gRPC A6 budget, and the retry loop on a MockClock."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence

import msgspec
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

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
    PayloadTooLarge,
    RuntimeClosed,
    UnknownFunction,
)
from wasmhive.supervisors.backoff import retry_delay
from wasmhive.supervisors.retry import (
    RETRYABLE_ERRORS,
    RetryBudget,
    RetryPolicy,
    is_retryable,
    run_with_retry,
    started,
)

NOT_STARTED = [MailboxFull("full"), Overloaded("busy"), ActorCrashed("dead", reason="trap")]
STARTED_FAULTS = [
    CallTimeout("slow"),
    GuestTrap("trap"),
    OutOfMemory("oom"),
    FuelExhausted("fuel"),
    HostError("host"),
    AbiError("abi"),
]


class Script:
    """An ``attempt`` callable that raises the scripted errors in turn, then returns ``"ok"``."""

    def __init__(self, errors: Sequence[BaseException], *, clock: Callable[[], float] | None = None) -> None:
        self.errors = list(errors)
        self.calls: list[int] = []
        self.times: list[float] = []
        self.clock = clock

    async def __call__(self, number: int) -> str:
        self.calls.append(number)
        if self.clock is not None:
            self.times.append(self.clock())
        await trio.lowlevel.checkpoint()
        if number < len(self.errors):
            raise self.errors[number]
        return "ok"


def no_sleep_recorder() -> tuple[list[float], Callable[[float], Awaitable[None]]]:
    slept: list[float] = []

    async def sleep(delay: float) -> None:
        slept.append(delay)

    return slept, sleep


async def run(
    script: Script,
    policy: RetryPolicy,
    budget: RetryBudget | None = None,
    *,
    deadline: float | None = None,
    clock: Callable[[], float] = lambda: 0.0,
    sleep: Callable[[float], Awaitable[None]] | None = None,
    rng: random.Random | None = None,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
) -> str:
    """run_with_retry on a fixed clock, with sleeps that return at once unless ``sleep`` is given."""
    return await run_with_retry(
        script,
        policy,
        budget if budget is not None else policy.new_budget(),
        deadline=deadline,
        clock=clock,
        sleep=sleep if sleep is not None else no_sleep_recorder()[1],
        rng=rng,
        on_retry=on_retry,
    )


# -- classification --------------------------------------------------------------------------


@pytest.mark.parametrize("error", [*NOT_STARTED, CircuitOpen("open", retry_at=1.0)], ids=repr)
def test_refused_or_queued_behind_a_crash_never_started(error: Exception) -> None:
    assert not started(error)


@pytest.mark.parametrize("error", [*STARTED_FAULTS, GuestError("no"), RuntimeClosed("bye"), ValueError()], ids=repr)
def test_faults_and_unknown_errors_count_as_started(error: Exception) -> None:
    assert started(error)


@pytest.mark.parametrize("idempotent", [False, True])
@pytest.mark.parametrize(
    "error",
    [
        GuestError("no"),
        CircuitOpen("open"),
        RuntimeClosed("bye"),
        UnknownFunction("f"),
        PayloadTooLarge("big"),
        ValueError(),
    ],
    ids=repr,
)
def test_never_retryable_errors(error: Exception, idempotent: bool) -> None:
    assert not is_retryable(error, RetryPolicy(idempotent=idempotent))


@pytest.mark.parametrize("error", NOT_STARTED, ids=repr)
def test_not_started_errors_are_retryable_by_default(error: Exception) -> None:
    assert is_retryable(error, RetryPolicy())


@pytest.mark.parametrize("error", STARTED_FAULTS, ids=repr)
def test_started_faults_are_retryable_only_when_idempotent(error: Exception) -> None:
    assert not is_retryable(error, RetryPolicy())
    assert is_retryable(error, RetryPolicy(idempotent=True))


def test_retry_on_accepts_every_guest_fault_and_crash_but_nothing_else() -> None:
    assert {"ActorCrashed", "MailboxFull", "Overloaded", "GuestFault", "CallTimeout", "GuestTrap"} <= RETRYABLE_ERRORS
    assert not RETRYABLE_ERRORS & {"GuestError", "CircuitOpen", "RuntimeClosed", "WasmhiveError", "UnknownFunction"}
    for name in RETRYABLE_ERRORS:
        assert RetryPolicy(retry_on=(name,)).retry_on == (name,)


def test_retry_on_names_match_subclasses_and_can_narrow() -> None:
    only_timeouts = RetryPolicy(retry_on=("CallTimeout",), idempotent=True)
    assert is_retryable(CallTimeout("slow"), only_timeouts)
    assert not is_retryable(GuestTrap("trap"), only_timeouts)
    assert not is_retryable(MailboxFull("full"), only_timeouts)


# -- policy validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"max_attempts": 0}, "max_attempts"),
        ({"base": 0.0}, "base"),
        ({"base": float("inf")}, "base"),
        ({"base": 1.0, "cap": 0.5}, "cap"),
        ({"jitter": "sometimes"}, "jitter"),
        ({"retry_on": ("GuestError",)}, "retry_on"),
        ({"retry_on": ("CircuitOpen",)}, "retry_on"),
        ({"retry_on": ("RuntimeClosed",)}, "retry_on"),
        ({"retry_on": ("Typo",)}, "retry_on"),
        ({"budget_max_tokens": 0.0}, "budget_max_tokens"),
        ({"budget_token_ratio": -1.0}, "budget_token_ratio"),
    ],
)
def test_invalid_retry_policy_names_the_field(options: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidConfig, match=field):
        RetryPolicy(**options)  # type: ignore[arg-type]


def test_retry_policy_decodes_and_rejects_unknown_fields() -> None:
    policy = msgspec.convert({"max_attempts": 5, "retry_on": ["MailboxFull"]}, RetryPolicy)
    assert policy.max_attempts == 5 and policy.retry_on == ("MailboxFull",)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"max_attempt": 5}, RetryPolicy)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"jitter": "sometimes"}, RetryPolicy)


# -- budget ----------------------------------------------------------------------------------


def test_budget_stops_retries_at_half_and_successes_restore_it() -> None:
    budget = RetryBudget(max_tokens=10.0, token_ratio=0.5)
    for _ in range(4):
        budget.record_failure()
    assert budget.tokens == 6.0 and budget.retry_allowed
    budget.record_failure()
    assert budget.tokens == 5.0 and not budget.retry_allowed  # at half: no retries
    budget.record_success()
    assert budget.tokens == 5.5 and budget.retry_allowed


@given(
    max_tokens=st.floats(min_value=1.0, max_value=1000.0),
    ratio=st.floats(min_value=0.001, max_value=5.0),
    events=st.lists(st.booleans(), max_size=200),
)
def test_budget_tokens_stay_between_zero_and_max(max_tokens: float, ratio: float, events: list[bool]) -> None:
    budget = RetryBudget(max_tokens, ratio)
    for success in events:
        before = budget.tokens
        if success:
            budget.record_success()
            assert budget.tokens == min(max_tokens, before + ratio)
        else:
            budget.record_failure()
            assert budget.tokens == max(0.0, before - 1.0)
        assert 0.0 <= budget.tokens <= max_tokens
        assert budget.retry_allowed == (budget.tokens > max_tokens / 2)


@pytest.mark.parametrize(("max_tokens", "ratio"), [(0.0, 0.1), (10.0, 0.0), (float("nan"), 0.1)])
def test_invalid_budget(max_tokens: float, ratio: float) -> None:
    with pytest.raises(InvalidConfig):
        RetryBudget(max_tokens, ratio)


# -- run_with_retry --------------------------------------------------------------------------


@pytest.mark.trio
async def test_retries_then_succeeds_feeding_the_budget() -> None:
    script = Script([MailboxFull("full"), Overloaded("busy")])
    policy = RetryPolicy(max_attempts=3)
    budget = policy.new_budget()
    assert await run(script, policy, budget) == "ok"
    assert script.calls == [0, 1, 2]
    assert budget.tokens == pytest.approx(10.0 - 2 + 0.1)


@pytest.mark.trio
async def test_stops_at_max_attempts_with_the_last_original_error() -> None:
    errors = [MailboxFull("first"), MailboxFull("second"), MailboxFull("third"), MailboxFull("unused")]
    script = Script(errors)
    with pytest.raises(MailboxFull) as caught:
        await run(script, RetryPolicy(max_attempts=3))
    assert caught.value is errors[2]
    assert script.calls == [0, 1, 2]


@pytest.mark.trio
async def test_max_attempts_one_never_retries() -> None:
    error = MailboxFull("full")
    script = Script([error])
    with pytest.raises(MailboxFull) as caught:
        await run(script, RetryPolicy(max_attempts=1))
    assert caught.value is error and script.calls == [0]


@pytest.mark.trio
@pytest.mark.parametrize("idempotent", [False, True])
@pytest.mark.parametrize("error", [GuestError("no"), CircuitOpen("open", retry_at=5.0), RuntimeClosed("bye")], ids=repr)
async def test_never_retries_guest_errors_open_breakers_or_closed_runtimes(error: Exception, idempotent: bool) -> None:
    script = Script([error])
    budget = RetryBudget()
    with pytest.raises(type(error)) as caught:
        await run(script, RetryPolicy(max_attempts=5, idempotent=idempotent), budget)
    assert caught.value is error and script.calls == [0]
    assert budget.tokens == 10.0  # says nothing about the function's health


@pytest.mark.trio
@pytest.mark.parametrize("error", STARTED_FAULTS, ids=repr)
async def test_not_idempotent_does_not_retry_errors_after_the_guest_started(error: Exception) -> None:
    script = Script([error])
    budget = RetryBudget()
    with pytest.raises(type(error)) as caught:
        await run(script, RetryPolicy(max_attempts=5), budget)
    assert caught.value is error and script.calls == [0]
    assert budget.tokens == 9.0  # a failure of the function all the same


@pytest.mark.trio
async def test_not_idempotent_retries_errors_before_the_guest_started() -> None:
    script = Script(NOT_STARTED)
    assert await run(script, RetryPolicy(max_attempts=4)) == "ok"
    assert script.calls == [0, 1, 2, 3]


@pytest.mark.trio
async def test_idempotent_retries_started_faults() -> None:
    script = Script(STARTED_FAULTS)
    policy = RetryPolicy(max_attempts=len(STARTED_FAULTS) + 1, idempotent=True, budget_max_tokens=100.0)
    assert await run(script, policy) == "ok"
    assert len(script.calls) == len(STARTED_FAULTS) + 1


@pytest.mark.trio
async def test_unmatched_errors_propagate_untouched() -> None:
    error = KeyError("x")
    script = Script([error])
    with pytest.raises(KeyError) as caught:
        await run(script, RetryPolicy(max_attempts=5))
    assert caught.value is error and script.calls == [0]


@pytest.mark.trio
async def test_budget_refusal_fails_with_the_original_error() -> None:
    budget = RetryBudget(max_tokens=4.0, token_ratio=0.1)
    budget.record_failure()  # 3 tokens: a further failure leaves 2, at half
    error = Overloaded("busy")
    script = Script([error])
    with pytest.raises(Overloaded) as caught:
        await run(script, RetryPolicy(max_attempts=5), budget)
    assert caught.value is error and script.calls == [0]
    assert budget.tokens == 2.0


@pytest.mark.trio
async def test_shared_budget_stops_retries_across_calls_and_successes_restore_them() -> None:
    policy = RetryPolicy(max_attempts=2, budget_max_tokens=10.0, budget_token_ratio=1.0)
    budget = policy.new_budget()
    retried: list[bool] = []
    for _ in range(4):
        script = Script([MailboxFull("a"), MailboxFull("b")])
        with pytest.raises(MailboxFull):
            await run(script, policy, budget)
        retried.append(len(script.calls) == 2)
    # Tokens: 10 -> 9 (retry) -> 8, 8 -> 7 (retry) -> 6, 6 -> 5 (at half: refused), 5 -> 4 (refused).
    assert retried == [True, True, False, False]
    assert budget.tokens == 4.0 and not budget.retry_allowed
    for _ in range(3):
        assert await run(Script([]), policy, budget) == "ok"
    assert budget.tokens == 7.0 and budget.retry_allowed
    assert await run(Script([MailboxFull("a")]), policy, budget) == "ok"


@pytest.mark.trio
async def test_on_retry_gets_the_attempt_error_and_delay_that_is_slept() -> None:
    errors = [MailboxFull("a"), Overloaded("b"), ActorCrashed("c")]
    script = Script(errors)
    policy = RetryPolicy(max_attempts=4, base=0.1, cap=10.0, jitter="decorrelated")
    seen: list[tuple[int, BaseException, float]] = []
    slept, sleep = no_sleep_recorder()
    result = await run(
        script, policy, rng=random.Random(7), sleep=sleep, on_retry=lambda n, e, d: seen.append((n, e, d))
    )
    assert result == "ok"
    assert [n for n, _, _ in seen] == [1, 2, 3]
    assert [e for _, e, _ in seen] == errors
    assert [d for _, _, d in seen] == slept
    # The delays are retry_delay's, chained through ``previous`` for decorrelated jitter.
    rng = random.Random(7)
    expected: list[float] = []
    previous = None
    for number in range(3):
        previous = retry_delay(number, base=0.1, cap=10.0, jitter="decorrelated", previous=previous, rng=rng)
        expected.append(previous)
    assert slept == expected


@pytest.mark.trio
async def test_no_jitter_delays_are_exponential_on_the_event_loop_clock(mock_clock: trio.testing.MockClock) -> None:
    mock_clock.autojump_threshold = 0
    script = Script([MailboxFull("a")] * 3, clock=trio.current_time)
    policy = RetryPolicy(max_attempts=4, base=1.0, cap=3.0, jitter="none")
    start = trio.current_time()
    assert await run_with_retry(script, policy, policy.new_budget(), deadline=None) == "ok"
    assert [t - start for t in script.times] == [0.0, 1.0, 3.0, 6.0]


@pytest.mark.trio
async def test_never_retries_past_the_deadline(mock_clock: trio.testing.MockClock) -> None:
    mock_clock.autojump_threshold = 0
    start = trio.current_time()
    errors = [MailboxFull(str(n)) for n in range(10)]
    script = Script(errors, clock=trio.current_time)
    policy = RetryPolicy(max_attempts=10, base=1.0, cap=100.0, jitter="none", budget_max_tokens=100.0)
    delays: list[float] = []
    with pytest.raises(MailboxFull) as caught:
        await run_with_retry(
            script, policy, policy.new_budget(), deadline=start + 7.5, on_retry=lambda n, e, d: delays.append(d)
        )
    # Attempts at 0, 1, 3, 7; the next would start at 15, past the deadline, so it is not waited for.
    assert [t - start for t in script.times] == [0.0, 1.0, 3.0, 7.0]
    assert delays == [1.0, 2.0, 4.0]
    assert caught.value is errors[3]
    assert trio.current_time() - start == 7.0


@pytest.mark.trio
async def test_a_retry_landing_exactly_on_the_deadline_is_not_made() -> None:
    error = MailboxFull("full")
    script = Script([error])
    policy = RetryPolicy(base=1.0, jitter="none")
    with pytest.raises(MailboxFull):
        await run(script, policy, deadline=1.0, clock=lambda: 0.0)
    assert script.calls == [0]
    assert await run(Script([error]), policy, deadline=1.001, clock=lambda: 0.0) == "ok"


@pytest.mark.trio
async def test_cancellation_while_waiting_propagates_without_more_attempts(mock_clock: trio.testing.MockClock) -> None:
    mock_clock.autojump_threshold = 0
    script = Script([MailboxFull("a")] * 5)
    policy = RetryPolicy(max_attempts=5, base=10.0, cap=10.0, jitter="none")
    with trio.move_on_after(15.0) as scope:
        await run_with_retry(script, policy, policy.new_budget(), deadline=None)
    assert scope.cancelled_caught
    assert script.calls == [0, 1]
