"""The autoscaler's decisions, on fed samples and a hand-moved clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wasmhive.actors.errors import InvalidConfig
from wasmhive.supervisors.autoscaler import Autoscaler, PoolPolicy

POLICY = PoolPolicy(
    min_size=1,
    max_size=16,
    interval=2.0,
    sample_interval=1.0,
    stable_window=10.0,
    panic_window=2.0,
    scale_down_delay=6.0,
    scale_to_zero_grace=5.0,
)


def feed(scaler: Autoscaler, start: float, seconds: int, concurrency: float) -> float:
    for t in range(seconds):
        scaler.record(start + t, concurrency)
    return start + seconds - 1


def test_scales_up_above_the_threshold_to_bring_utilization_under_it() -> None:
    scaler = Autoscaler(POLICY)
    now = feed(scaler, 0, 10, 3.0)  # 3 calls in flight on 2 actors: 150%
    wanted = scaler.decide(now, 2)
    assert wanted == 4  # ceil(3 / 0.8)
    assert 3.0 / wanted <= POLICY.scale_up_threshold


def test_scales_down_below_the_threshold_only_after_the_delay() -> None:
    policy = PoolPolicy(min_size=1, max_size=16, stable_window=2, panic_window=1, scale_down_delay=6)
    scaler = Autoscaler(policy)
    for t in (0, 1):
        scaler.record(t, 6.0)
    assert scaler.decide(1, 8) == 8  # 75%: inside the band, stay
    wishes = {}
    for t in range(2, 12):
        scaler.record(t, 1.0)  # load drops to 1 call: 12.5%
        wishes[t] = scaler.decide(t, 8)
    # For scale_down_delay seconds the earlier wish for 8 holds; then it halves at most.
    # (at t=2 the stable window still holds a 6, so that wish is also 8)
    assert [wishes[t] for t in range(2, 9)] == [8] * 7
    assert wishes[9] == 4


def test_steady_load_never_flaps() -> None:
    scaler = Autoscaler(POLICY)
    size, sizes = 1, []
    t = 0.0
    for _ in range(60):
        for _ in range(2):
            scaler.record(t, 5.0)
            t += 1
        size = scaler.decide(t - 1, size)
        sizes.append(size)
    settled = sizes[10:]
    assert len(set(settled)) == 1, sizes
    assert 5.0 / settled[0] <= POLICY.scale_up_threshold


def test_a_burst_panics_scales_at_once_and_forbids_scale_down() -> None:
    scaler = Autoscaler(POLICY)
    feed(scaler, 0, 10, 1.0)
    scaler.record(10, 8.0)
    scaler.record(11, 8.0)  # panic window average 8 on 2 actors = 400% >= 200%
    burst = scaler.panic_check(11, 2)
    assert burst is not None and burst > 2 and scaler.panicking
    # Load vanishes, but while panicking the pool does not shrink.
    feed(scaler, 12, 5, 0.0)
    assert scaler.decide(16, burst) == burst
    # A whole stable window later, panic is over and it may shrink.
    feed(scaler, 17, 20, 0.0)
    assert not scaler.panicking or scaler.decide(36, burst) <= burst
    assert scaler.decide(40, burst) < burst


def test_scale_up_rate_is_capped() -> None:
    policy = PoolPolicy(min_size=1, max_size=100, max_scale_up_rate=2.0, stable_window=10, panic_window=2)
    scaler = Autoscaler(policy)
    now = feed(scaler, 0, 10, 50.0)
    assert scaler.decide(now, 3) == 6


def test_scale_to_zero_waits_for_the_grace_period_and_cold_starts_from_zero() -> None:
    policy = PoolPolicy(min_size=0, max_size=4, stable_window=10, panic_window=2, scale_down_delay=0,
                        scale_to_zero_grace=5.0)
    scaler = Autoscaler(policy)
    scaler.record(0, 1.0)
    now = feed(scaler, 1, 3, 0.0)
    assert scaler.decide(now, 1) == 1  # idle for 3 s only
    now = feed(scaler, now + 1, 20, 0.0)
    assert scaler.decide(now, 1) == 0
    scaler.record(now + 1, 2.0)
    assert scaler.decide(now + 1, 0) >= 1


@given(
    samples=st.lists(st.floats(0, 64), min_size=1, max_size=40),
    size=st.integers(1, 16),
)
def test_decisions_stay_within_bounds(samples: list[float], size: int) -> None:
    scaler = Autoscaler(POLICY)
    for t, c in enumerate(samples):
        scaler.record(float(t), c)
    now = float(len(samples) - 1)
    for wanted in (scaler.decide(now, size), scaler.panic_check(now, size) or size):
        assert POLICY.min_size <= wanted <= POLICY.max_size
        assert wanted <= max(size + 1, int(size * POLICY.max_scale_up_rate))


@pytest.mark.parametrize(
    "bad",
    [{"min_size": 5, "max_size": 2}, {"scale_down_threshold": 0.9}, {"interval": 0}, {"panic_window": 100},
     {"max_scale_up_rate": 0.5}],
)
def test_invalid_pool_policies_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(InvalidConfig):
        PoolPolicy(**bad)  # type: ignore[arg-type]
