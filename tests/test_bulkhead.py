"""The bulkhead: a concurrency cap, a FIFO wait bounded by max_wait, Overloaded after it, no leaked slots."""

from __future__ import annotations

import math

import msgspec
import pytest
import trio
import trio.testing

from wasmhive.actors.errors import InvalidConfig, Overloaded
from wasmhive.supervisors.bulkhead import Bulkhead, BulkheadPolicy

pytestmark = pytest.mark.trio


async def test_at_most_max_concurrent_callers_inside(mock_clock: trio.testing.MockClock) -> None:
    mock_clock.autojump_threshold = 0
    bulkhead = Bulkhead(BulkheadPolicy(max_concurrent=3, max_wait=math.inf), "f")
    inside = 0
    most = 0

    async def call() -> None:
        nonlocal inside, most
        async with bulkhead.slot():
            inside += 1
            most = max(most, inside)
            assert bulkhead.in_flight <= 3
            await trio.sleep(1.0)
            inside -= 1

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(call)
    assert most == 3
    assert trio.current_time() - start == 4.0  # ceil(10 / 3) rounds of 1 s
    assert (bulkhead.in_flight, bulkhead.waiting, bulkhead.rejected) == (0, 0, 0)


async def test_waiters_get_slots_in_arrival_order(mock_clock: trio.testing.MockClock) -> None:
    mock_clock.autojump_threshold = 0
    bulkhead = Bulkhead(BulkheadPolicy(max_concurrent=1, max_wait=100.0), "f")
    order: list[int] = []

    async def call(number: int) -> None:
        async with bulkhead.slot():
            order.append(number)
            await trio.sleep(1.0)

    async with trio.open_nursery() as nursery:
        for number in range(6):
            nursery.start_soon(call, number)
            await trio.testing.wait_all_tasks_blocked()  # arrive in this order
        assert bulkhead.waiting == 5 and bulkhead.in_flight == 1
    assert order == [0, 1, 2, 3, 4, 5]


async def test_a_newcomer_does_not_overtake_the_line() -> None:
    bulkhead = Bulkhead(BulkheadPolicy(max_concurrent=1, max_wait=100.0), "f")
    order: list[str] = []

    async def waiter() -> None:
        async with bulkhead.slot():
            order.append("waiter")

    async with trio.open_nursery() as nursery:
        async with bulkhead.slot():
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert bulkhead.waiting == 1
        # Released without a checkpoint: the waiter has not run, yet the slot is already its.
        assert (bulkhead.in_flight, bulkhead.waiting) == (1, 0)
        async with bulkhead.slot():
            order.append("newcomer")
    assert order == ["waiter", "newcomer"]


async def test_overloaded_after_max_wait(mock_clock: trio.testing.MockClock) -> None:
    mock_clock.autojump_threshold = 0
    bulkhead = Bulkhead(BulkheadPolicy(max_concurrent=1, max_wait=5.0), "resize")
    outcome: dict[str, object] = {}

    async def holder() -> None:
        async with bulkhead.slot():
            await trio.sleep(60.0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(holder)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        with pytest.raises(Overloaded) as caught:
            async with bulkhead.slot():
                pytest.fail("got a slot")  # pragma: no cover
        outcome["waited"] = trio.current_time() - start
        assert (bulkhead.in_flight, bulkhead.waiting, bulkhead.rejected) == (1, 0, 1)
        nursery.cancel_scope.cancel()
    assert outcome["waited"] == 5.0
    error = caught.value
    assert error.function == "resize"
    assert "max_concurrent=1" in str(error) and "max_wait=5.0" in str(error)
    assert error.details == {"max_concurrent": 1, "max_wait": 5.0}
    assert bulkhead.in_flight == 0


async def test_a_slot_freed_within_max_wait_is_taken(mock_clock: trio.testing.MockClock) -> None:
    mock_clock.autojump_threshold = 0
    bulkhead = Bulkhead(BulkheadPolicy(max_concurrent=1, max_wait=5.0), "f")

    async def holder() -> None:
        async with bulkhead.slot():
            await trio.sleep(4.0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(holder)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        async with bulkhead.slot():
            assert trio.current_time() - start == 4.0
            assert bulkhead.in_flight == 1
    assert (bulkhead.in_flight, bulkhead.rejected) == (0, 0)


async def test_max_wait_zero_rejects_at_once_when_full(mock_clock: trio.testing.MockClock) -> None:
    mock_clock.autojump_threshold = 0
    bulkhead = Bulkhead(BulkheadPolicy(max_concurrent=2), "f")
    async with bulkhead.slot(), bulkhead.slot():
        start = trio.current_time()
        for _ in range(3):
            with pytest.raises(Overloaded, match="max_concurrent=2"):
                async with bulkhead.slot():
                    pytest.fail("got a slot")  # pragma: no cover
        assert trio.current_time() == start
        assert (bulkhead.in_flight, bulkhead.waiting, bulkhead.rejected) == (2, 0, 3)
    async with bulkhead.slot():
        assert bulkhead.in_flight == 1
    assert bulkhead.in_flight == 0


async def test_cancelled_waiter_leaves_no_leaked_slot(mock_clock: trio.testing.MockClock) -> None:
    mock_clock.autojump_threshold = 0
    bulkhead = Bulkhead(BulkheadPolicy(max_concurrent=1, max_wait=100.0), "f")
    release = trio.Event()

    async def holder() -> None:
        async with bulkhead.slot():
            await release.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(holder)
        await trio.testing.wait_all_tasks_blocked()
        with trio.move_on_after(1.0) as scope:
            async with bulkhead.slot():
                pytest.fail("got a slot")  # pragma: no cover
        assert scope.cancelled_caught
        assert (bulkhead.in_flight, bulkhead.waiting, bulkhead.rejected) == (1, 0, 0)
        release.set()
    assert bulkhead.in_flight == 0
    async with bulkhead.slot():
        assert bulkhead.in_flight == 1


async def test_waiter_cancelled_after_being_handed_a_slot_passes_it_on(mock_clock: trio.testing.MockClock) -> None:
    mock_clock.autojump_threshold = 0
    bulkhead = Bulkhead(BulkheadPolicy(max_concurrent=1, max_wait=100.0), "f")
    got: list[str] = []

    async def waiter(name: str, scope: trio.CancelScope) -> None:
        with scope:
            async with bulkhead.slot():
                got.append(name)

    first, second = trio.CancelScope(), trio.CancelScope()
    async with trio.open_nursery() as nursery:
        async with bulkhead.slot():
            nursery.start_soon(waiter, "first", first)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(waiter, "second", second)
            await trio.testing.wait_all_tasks_blocked()
            first.cancel()
        # Both in one step: "first" is cancelled, then handed the slot before it runs.
        assert (bulkhead.in_flight, bulkhead.waiting) == (1, 1)
    assert got == ["second"]
    assert (bulkhead.in_flight, bulkhead.waiting, bulkhead.rejected) == (0, 0, 0)


async def test_body_errors_free_the_slot() -> None:
    bulkhead = Bulkhead(BulkheadPolicy(max_concurrent=1), "f")
    with pytest.raises(KeyError):
        async with bulkhead.slot():
            raise KeyError("x")
    assert bulkhead.in_flight == 0


async def test_cancelled_caller_does_not_take_a_free_slot() -> None:
    bulkhead = Bulkhead(BulkheadPolicy(max_concurrent=1), "f")
    with trio.CancelScope() as scope:
        scope.cancel()
        async with bulkhead.slot():
            pytest.fail("got a slot")  # pragma: no cover
    assert bulkhead.in_flight == 0


@pytest.mark.parametrize(
    ("options", "field"),
    [({"max_concurrent": 0}, "max_concurrent"), ({"max_wait": -1.0}, "max_wait"), ({"max_wait": math.nan}, "max_wait")],
)
async def test_invalid_bulkhead_policy_names_the_field(options: dict[str, float], field: str) -> None:
    with pytest.raises(InvalidConfig, match=field):
        BulkheadPolicy(**options)  # type: ignore[arg-type]


async def test_bulkhead_policy_rejects_unknown_fields() -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"max_concurent": 3}, BulkheadPolicy)
