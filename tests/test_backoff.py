"""Backoff formulas: Akka restart backoff and AWS retry jitter, with seeded randomness."""

from __future__ import annotations

import random

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wasmhive.actors.errors import InvalidConfig
from wasmhive.supervisors.backoff import BackoffPolicy, Jitter, RestartBackoff, retry_delay

seeds = st.integers(min_value=0, max_value=2**32 - 1)
bases = st.floats(min_value=1e-3, max_value=10.0)
attempts = st.integers(min_value=0, max_value=2000)


class FixedRng(random.Random):
    """A Random whose ``random()`` always returns ``value``."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


# -- restart backoff -------------------------------------------------------------------------


def test_restart_delays_double_up_to_max_backoff_without_randomness() -> None:
    policy = BackoffPolicy(min_backoff=0.5, max_backoff=5.0, random_factor=0.0, reset_after=1000.0)
    backoff = RestartBackoff(policy, clock=lambda: 0.0)
    assert [backoff.next_delay(0.0) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert backoff.restarts == 6


def test_restart_random_part_follows_akka_formula() -> None:
    policy = BackoffPolicy(min_backoff=1.0, max_backoff=4.0, random_factor=0.5)
    backoff = RestartBackoff(policy, rng=FixedRng(0.5))
    # min(4, 1 * 2**n) * (1 + 0.5 * 0.5)
    assert [backoff.next_delay(0.0) for _ in range(4)] == [1.25, 2.5, 5.0, 5.0]


@given(
    seed=seeds,
    min_backoff=st.floats(min_value=1e-3, max_value=10.0),
    spread=st.floats(min_value=1.0, max_value=1000.0),
    random_factor=st.floats(min_value=0.0, max_value=1.0),
    failures=st.integers(min_value=1, max_value=80),
)
def test_restart_delay_stays_within_min_and_max_times_random_factor(
    seed: int, min_backoff: float, spread: float, random_factor: float, failures: int
) -> None:
    policy = BackoffPolicy(min_backoff=min_backoff, max_backoff=min_backoff * spread, random_factor=random_factor)
    backoff = RestartBackoff(policy, rng=random.Random(seed))
    for _ in range(failures):
        delay = backoff.next_delay(0.0)  # failing at once: never quiet long enough to reset
        assert min_backoff <= delay <= policy.max_backoff * (1 + random_factor)


@given(seed=seeds, failures=st.integers(min_value=1, max_value=30))
def test_restart_delays_are_deterministic_for_a_seed(seed: int, failures: int) -> None:
    policy = BackoffPolicy()
    first = RestartBackoff(policy, rng=random.Random(seed))
    second = RestartBackoff(policy, rng=random.Random(seed))
    assert [first.next_delay(0.0) for _ in range(failures)] == [second.next_delay(0.0) for _ in range(failures)]


@given(failures=st.integers(min_value=1, max_value=20), quiet=st.floats(min_value=10.0, max_value=1e6))
def test_count_resets_after_running_quietly_for_reset_after(failures: int, quiet: float) -> None:
    policy = BackoffPolicy(min_backoff=1.0, max_backoff=100.0, random_factor=0.0, reset_after=10.0)
    backoff = RestartBackoff(policy)
    for _ in range(failures):
        backoff.next_delay(0.0)
    backoff.record_restart(5.0)
    assert backoff.next_delay(5.0 + quiet) == 1.0
    assert backoff.restarts == 1


def test_count_keeps_growing_when_child_fails_before_the_quiet_period() -> None:
    policy = BackoffPolicy(min_backoff=1.0, max_backoff=100.0, random_factor=0.0, reset_after=10.0)
    backoff = RestartBackoff(policy)
    assert backoff.next_delay(0.0) == 1.0
    backoff.record_restart(1.0)
    assert backoff.next_delay(1.0 + 9.999) == 2.0
    backoff.record_restart(13.0)
    assert backoff.next_delay(13.0 + 10.0) == 1.0  # exactly the quiet period: reset


def test_without_record_restart_the_quiet_period_counts_from_the_end_of_the_delay() -> None:
    policy = BackoffPolicy(min_backoff=4.0, max_backoff=100.0, random_factor=0.0, reset_after=10.0)
    backoff = RestartBackoff(policy)
    assert backoff.next_delay(0.0) == 4.0  # assumed back up at t=4
    assert backoff.next_delay(13.0) == 8.0  # up 9 s only
    assert backoff.next_delay(13.0 + 8.0 + 10.0) == 4.0  # up 10 s since t=21


def test_reset_after_none_means_max_backoff_and_clock_is_used_without_now() -> None:
    now = [0.0]
    policy = BackoffPolicy(min_backoff=1.0, max_backoff=8.0, random_factor=0.0)
    assert policy.quiet_period == 8.0
    backoff = RestartBackoff(policy, clock=lambda: now[0])
    assert backoff.next_delay() == 1.0
    now[0] = 1.0
    backoff.record_restart()
    now[0] = 8.5  # up 7.5 s
    assert backoff.next_delay() == 2.0
    now[0] = 10.5 + 8.0  # up 8 s since t=10.5
    assert backoff.next_delay() == 1.0


def test_reset_forgets_restarts() -> None:
    backoff = RestartBackoff(BackoffPolicy(min_backoff=1.0, random_factor=0.0))
    backoff.next_delay(0.0)
    backoff.next_delay(0.0)
    backoff.reset()
    assert backoff.restarts == 0
    assert backoff.next_delay(0.0) == 1.0


def test_huge_restart_counts_do_not_overflow() -> None:
    policy = BackoffPolicy(min_backoff=0.1, max_backoff=30.0, random_factor=0.0)
    backoff = RestartBackoff(policy)
    for _ in range(3000):
        delay = backoff.next_delay(0.0)
    assert delay == 30.0


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"min_backoff": 0.0}, "min_backoff"),
        ({"min_backoff": float("nan")}, "min_backoff"),
        ({"min_backoff": 2.0, "max_backoff": 1.0}, "max_backoff"),
        ({"max_backoff": float("inf")}, "max_backoff"),
        ({"random_factor": -0.1}, "random_factor"),
        ({"random_factor": 1.5}, "random_factor"),
        ({"reset_after": 0.0}, "reset_after"),
    ],
)
def test_invalid_backoff_policy_names_the_field(options: dict[str, float], field: str) -> None:
    with pytest.raises(InvalidConfig, match=field):
        BackoffPolicy(**options)


def test_backoff_policy_decodes_and_rejects_unknown_fields() -> None:
    assert msgspec.convert({"min_backoff": 1.0}, BackoffPolicy).min_backoff == 1.0
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"min_backof": 1.0}, BackoffPolicy)
    with pytest.raises(msgspec.ValidationError, match="random_factor must be between 0 and 1"):
        msgspec.convert({"random_factor": 2.0}, BackoffPolicy)
    with pytest.raises(InvalidConfig, match="random_factor"):
        BackoffPolicy(random_factor=2.0)


# -- retry jitter ------------------------------------------------------------------------------


def ceiling(attempt: int, base: float, cap: float) -> float:
    return cap if attempt > 1000 else min(cap, base * 2.0**attempt)


@given(attempt=attempts, base=bases, spread=st.floats(min_value=1.0, max_value=1000.0))
def test_no_jitter_is_the_capped_exponential(attempt: int, base: float, spread: float) -> None:
    cap = base * spread
    assert retry_delay(attempt, base=base, cap=cap, jitter="none") == ceiling(attempt, base, cap)


@given(seed=seeds, attempt=attempts, base=bases, spread=st.floats(min_value=1.0, max_value=1000.0))
def test_full_jitter_is_between_zero_and_the_ceiling(seed: int, attempt: int, base: float, spread: float) -> None:
    cap = base * spread
    delay = retry_delay(attempt, base=base, cap=cap, jitter="full", rng=random.Random(seed))
    assert 0.0 <= delay <= ceiling(attempt, base, cap)


@given(seed=seeds, attempt=attempts, base=bases, spread=st.floats(min_value=1.0, max_value=1000.0))
def test_equal_jitter_is_between_half_and_all_of_the_ceiling(
    seed: int, attempt: int, base: float, spread: float
) -> None:
    cap = base * spread
    delay = retry_delay(attempt, base=base, cap=cap, jitter="equal", rng=random.Random(seed))
    top = ceiling(attempt, base, cap)
    assert top / 2 <= delay <= top


@given(
    seed=seeds,
    base=bases,
    spread=st.floats(min_value=1.0, max_value=1000.0),
    previous=st.one_of(st.none(), st.floats(min_value=0.0, max_value=1e4)),
)
def test_decorrelated_jitter_is_between_base_and_three_times_previous_capped(
    seed: int, base: float, spread: float, previous: float | None
) -> None:
    cap = base * spread
    delay = retry_delay(0, base=base, cap=cap, jitter="decorrelated", previous=previous, rng=random.Random(seed))
    grown = 3 * max(base, previous if previous is not None else base)
    assert base <= delay <= min(cap, grown)


def test_jitter_uses_the_rng_as_documented() -> None:
    rng = FixedRng(0.5)
    assert retry_delay(3, base=1.0, cap=100.0, jitter="full", rng=rng) == 4.0
    assert retry_delay(3, base=1.0, cap=100.0, jitter="equal", rng=rng) == 6.0
    assert retry_delay(3, base=1.0, cap=100.0, jitter="decorrelated", previous=5.0, rng=rng) == 8.0
    assert retry_delay(3, base=1.0, cap=6.0, jitter="decorrelated", previous=5.0, rng=rng) == 6.0


@pytest.mark.parametrize("jitter", ["none", "full", "equal", "decorrelated"])
@given(seed=seeds)
def test_jitter_is_deterministic_for_a_seed(jitter: Jitter, seed: int) -> None:
    def delays() -> list[float]:
        rng = random.Random(seed)
        result: list[float] = []
        previous = None
        for attempt in range(8):
            previous = retry_delay(attempt, base=0.05, cap=2.0, jitter=jitter, previous=previous, rng=rng)
            result.append(previous)
        return result

    assert delays() == delays()


@pytest.mark.parametrize(
    ("attempt", "base", "cap", "jitter"),
    [(-1, 1.0, 2.0, "full"), (0, 0.0, 2.0, "full"), (0, 3.0, 2.0, "full"), (0, 1.0, 2.0, "bogus")],
)
def test_retry_delay_rejects_bad_arguments(attempt: int, base: float, cap: float, jitter: Jitter) -> None:
    with pytest.raises(ValueError):
        retry_delay(attempt, base=base, cap=cap, jitter=jitter)
