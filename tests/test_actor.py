"""Actor semantics: mailbox order and overflow, crashes, monitors, replacement, dispatch."""

from __future__ import annotations

import guests
import msgspec
import pytest
import trio
import trio.testing
from helpers import eventually

from wasmhive.actors.actor import YIELD_EVERY
from wasmhive.runtime import (
    ActorCrashed,
    ActorState,
    Down,
    GuestError,
    GuestTrap,
    MailboxFull,
    Runtime,
)

pytestmark = pytest.mark.trio


def release(rt: Runtime, function: str) -> None:
    """Let one GATED call that waits for "go" proceed."""
    rt.kv.set(function, "go", b"1")


async def start_blocked(rt: Runtime, nursery: trio.Nursery, function: str, results: dict[str, object]) -> None:
    """Start a GATED "?" (wait) call and return once the actor is busy with it."""
    (ref,) = rt.actors(function)

    async def call() -> None:
        try:
            results["blocked"] = await rt.invoke(function, b"?wait")
        except Exception as exc:
            results["blocked"] = exc

    nursery.start_soon(call)
    await eventually(lambda: rt.state(ref) is ActorState.BUSY)


async def test_messages_are_handled_one_at_a_time_in_arrival_order(rt: Runtime) -> None:
    await rt.deploy("seq", guests.HOST_PROXY.encode(), mailbox_size=100)
    incr = msgspec.msgpack.encode({"op": "kv.incr", "key": "n"})
    replies: list[tuple[int, int]] = []

    async def send(i: int) -> None:
        result = msgspec.msgpack.decode(await rt.invoke("seq", incr))
        replies.append((i, result["value"]))

    async with trio.open_nursery() as nursery:
        for i in range(30):
            nursery.start_soon(send, i)
            await trio.testing.wait_all_tasks_blocked()
    # Sender i arrived i-th, so it must have been handled i-th.
    assert sorted(replies) == [(i, i + 1) for i in range(30)]


async def test_a_caller_retrying_refusals_in_a_loop_cannot_starve_the_loop(rt: Runtime) -> None:
    # A full mailbox refuses at once; the refusal must still yield, or a loop of
    # retries would never let the blocked call's reply (from the actor thread) in.
    await rt.deploy("g", guests.GATED.encode(), mailbox_size=0, overflow="reject")
    results: dict[str, object] = {}
    refused = 0
    async with trio.open_nursery() as nursery:
        await start_blocked(rt, nursery, "g", results)
        release(rt, "g")
        with trio.fail_after(10):
            while "blocked" not in results:
                try:
                    await rt.invoke("g", b"again")
                except MailboxFull:
                    refused += 1
    assert results["blocked"] == b"?wait"
    assert refused > 0


async def test_reject_overflow_fails_at_once_and_drops_nothing(rt: Runtime) -> None:
    await rt.deploy("g", guests.GATED.encode(), mailbox_size=2, overflow="reject")
    results: dict[str, object] = {}
    queued: list[bytes] = []
    async with trio.open_nursery() as nursery:
        await start_blocked(rt, nursery, "g", results)

        async def send(payload: bytes) -> None:
            queued.append(await rt.invoke("g", payload))

        for payload in (b"one", b"two"):
            nursery.start_soon(send, payload)
            await trio.testing.wait_all_tasks_blocked()  # "one" is queued before "two" is sent
        assert rt.stats().functions["g"].queued == 2
        with pytest.raises(MailboxFull) as info:
            await rt.invoke("g", b"three")
        assert info.value.function == "g"
        release(rt, "g")
    assert results["blocked"] == b"?wait"
    assert queued == [b"one", b"two"]


async def test_wait_overflow_waits_for_room(rt: Runtime) -> None:
    await rt.deploy("g", guests.GATED.encode(), mailbox_size=1, overflow="wait", mailbox_wait=30)
    results: dict[str, object] = {}
    done: list[bytes] = []
    async with trio.open_nursery() as nursery:
        await start_blocked(rt, nursery, "g", results)

        async def send(payload: bytes) -> None:
            done.append(await rt.invoke("g", payload))

        nursery.start_soon(send, b"queued")
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(send, b"waiting")  # mailbox full: this sender waits
        await trio.testing.wait_all_tasks_blocked()
        assert done == []
        release(rt, "g")
    assert results["blocked"] == b"?wait"
    assert done == [b"queued", b"waiting"]


async def test_waiting_senders_get_freed_slots_one_at_a_time_in_arrival_order(rt: Runtime) -> None:
    # Under overload many senders wait for mailbox space.  Each freed slot goes to the
    # first of them: FIFO, and one wake-up per slot, not one per waiter (which made the
    # loop's work grow with the square of the line).
    await rt.deploy("g", guests.GATED.encode(), mailbox_size=1, overflow="wait", mailbox_wait=30)
    waiters = 150
    results: dict[str, object] = {}
    done: list[bytes] = []

    class CountSteps(trio.abc.Instrument):
        steps = 0

        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            self.steps += 1

    async def send(payload: bytes) -> None:
        done.append(await rt.invoke("g", payload))

    counter = CountSteps()
    async with trio.open_nursery() as nursery:
        await start_blocked(rt, nursery, "g", results)
        nursery.start_soon(send, b"queued")
        await trio.testing.wait_all_tasks_blocked()
        for i in range(waiters):  # mailbox full: each of these waits, in this order
            nursery.start_soon(send, b"w%03d" % i)
            await trio.testing.wait_all_tasks_blocked()
        trio.lowlevel.add_instrument(counter)
        release(rt, "g")
    trio.lowlevel.remove_instrument(counter)
    assert results["blocked"] == b"?wait"
    assert done == [b"queued"] + [b"w%03d" % i for i in range(waiters)]
    # About a handful of task steps per message; waking every waiter per slot took ~waiters / 2.
    assert counter.steps < 12 * waiters, counter.steps


async def test_waiting_senders_that_give_up_lose_no_slot(rt: Runtime) -> None:
    # "queued" fills the mailbox; A and B wait for space.  Cancelling "queued" and A
    # together frees a slot that may be handed to A just as A gives up (trio runs the
    # two in either order, so each round takes one path or the other): either way the
    # slot must reach B, not be lost.
    await rt.deploy("g", guests.GATED.encode(), mailbox_size=1, overflow="wait", mailbox_wait=5)
    (actor,) = rt.deployment("g").actors

    async def send(payload: bytes, done: list[bytes | Exception]) -> None:
        try:
            done.append(await rt.invoke("g", payload))
        except Exception as exc:
            done.append(exc)

    for _ in range(8):
        results: dict[str, object] = {}
        done: list[bytes | Exception] = []
        async with trio.open_nursery() as nursery:
            await start_blocked(rt, nursery, "g", results)
            async with trio.open_nursery() as doomed:
                doomed.start_soon(send, b"queued", done)
                await trio.testing.wait_all_tasks_blocked()
                doomed.start_soon(send, b"A", done)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(send, b"B", done)
                await trio.testing.wait_all_tasks_blocked()
                doomed.cancel_scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            # B holds the slot: its message waits in the mailbox behind the blocked call.
            assert actor.queued == 1
            release(rt, "g")
        assert results["blocked"] == b"?wait"
        assert done == [b"B"]


async def test_wait_overflow_gives_mailbox_full_after_the_deadline(rt: Runtime) -> None:
    await rt.deploy("g", guests.GATED.encode(), mailbox_size=0, overflow="wait", mailbox_wait=0.05)
    (actor,) = rt.deployment("g").actors
    results: dict[str, object] = {}
    async with trio.open_nursery() as nursery:
        await start_blocked(rt, nursery, "g", results)
        with pytest.raises(MailboxFull, match="stayed full"):
            await rt.invoke("g", b"late")

        async def impatient() -> None:
            with pytest.raises(MailboxFull):
                await rt.invoke("g", b"late too")

        async with trio.open_nursery() as senders:
            for _ in range(100):
                senders.start_soon(impatient)
        # Senders that gave up leave nothing behind (a size-0 mailbox never frees a slot
        # that would sweep them out later).
        assert len(actor._space_line) == 0 and actor.queued == 0
        release(rt, "g")
    assert results["blocked"] == b"?wait"


async def test_crash_fails_queued_messages_and_notifies_monitors(rt: Runtime) -> None:
    await rt.deploy("g", guests.GATED.encode(), mailbox_size=10)
    (ref,) = rt.actors("g")
    monitor = rt.monitor(ref)
    outcomes: dict[str, object] = {}

    async def send(key: str, payload: bytes) -> None:
        try:
            outcomes[key] = await rt.invoke("g", payload)
        except Exception as exc:
            outcomes[key] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send, "crasher", b"!trap")
        await eventually(lambda: rt.state(ref) is ActorState.BUSY)
        for key in ("q1", "q2", "q3"):
            nursery.start_soon(send, key, key.encode())
        await trio.testing.wait_all_tasks_blocked()
        release(rt, "g")

    assert isinstance(outcomes["crasher"], GuestTrap)
    assert outcomes["crasher"].trap_code == "unreachable"
    for key in ("q1", "q2", "q3"):
        error = outcomes[key]
        assert isinstance(error, ActorCrashed), error
        assert error.reason == "trap"
        assert error.function == "g"
    down = await monitor.receive()
    assert down == Down(ref, down.reason) and down.reason.kind == "trap"
    assert rt.state(ref) is ActorState.CRASHED
    # Monitoring the dead actor delivers Down at once, with the same reason.
    late = await rt.monitor(ref).receive()
    assert late.reason == down.reason


async def test_crashed_actor_is_replaced_for_the_next_message(rt: Runtime) -> None:
    for mode in ("inline", "thread"):
        name = f"t-{mode}"
        await rt.deploy(name, guests.GATED.encode(), mode=mode)
        (first,) = rt.actors(name)
        release(rt, name)
        with pytest.raises(GuestTrap):
            await rt.invoke(name, b"!trap")
        assert await rt.invoke(name, b"still serving") == b"still serving"
        (second,) = rt.actors(name)
        assert second != first
        stats = rt.stats().functions[name]
        assert (stats.crashes, stats.restarts, stats.failures) == (1, 1, 1)


async def test_guest_error_keeps_the_actor(rt: Runtime) -> None:
    await rt.deploy("f", guests.FAIL_WITH_PAYLOAD.encode())
    (ref,) = rt.actors("f")
    with pytest.raises(GuestError, match="bad input"):
        await rt.invoke("f", b"bad input")
    assert rt.actors("f") == [ref]
    assert rt.state(ref) is ActorState.IDLE


async def test_actor_state_survives_between_calls_and_instances_share_load(rt: Runtime) -> None:
    await rt.deploy("c", guests.COUNTER.encode(), instances=3)
    counts = [int.from_bytes(await rt.invoke("c", b""), "little") for _ in range(4)]
    # One caller at a time always finds the first actor idle: its state grows.
    assert counts == [1, 2, 3, 4]
    assert len(rt.actors("c")) == 3


async def test_idle_inline_dispatch_does_not_switch_tasks(rt: Runtime) -> None:
    await rt.deploy("echo", guests.ECHO.encode(), mode="inline")
    await rt.invoke("echo", b"warm")

    class CountSteps(trio.abc.Instrument):
        steps = 0

        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            self.steps += 1

    counter = CountSteps()
    trio.lowlevel.add_instrument(counter)
    try:
        for _ in range(100):
            assert await rt.invoke("echo", b"x" * 64) == b"x" * 64
    finally:
        trio.lowlevel.remove_instrument(counter)
    # The calling task ran all 100 calls without being rescheduled once.
    assert counter.steps == 0


async def test_an_inline_actor_that_dies_during_the_periodic_yield_fails_the_call_typed(rt: Runtime) -> None:
    # One inline call in YIELD_EVERY yields for real; other tasks run meanwhile and
    # may crash or kill the actor.  The call must then fail with ActorCrashed, not
    # run on the dead actor's missing instance.
    await rt.deploy("echo", guests.ECHO.encode(), mode="inline", instances=1)
    (actor,) = rt.deployment("echo").actors
    bridge = actor._bridge
    real_checkpoint = bridge.checkpoint

    async def checkpoint_while_the_actor_is_killed() -> None:
        actor.kill()  # what another task could do while this one is parked
        await real_checkpoint()

    bridge.checkpoint = checkpoint_while_the_actor_is_killed
    bridge.calls_without_yield = YIELD_EVERY - 1
    try:
        with pytest.raises(ActorCrashed, match="killed"):
            await rt.invoke("echo", b"x")
    finally:
        bridge.checkpoint = real_checkpoint
    assert actor.state is ActorState.CRASHED
    # The pool replaces the actor, and calls go on.
    await eventually(lambda: len(rt.deployment("echo").actors) == 1)
    assert await rt.invoke("echo", b"again") == b"again"


async def test_busy_inline_actor_queues_and_hands_the_turn_back(rt: Runtime) -> None:
    await rt.deploy("c", guests.COUNTER.encode(), mode="inline", mailbox_size=100)
    got: list[int] = []

    async def send() -> None:
        got.append(int.from_bytes(await rt.invoke("c", b""), "little"))

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(send)
    assert sorted(got) == list(range(1, 21))


async def test_an_inline_call_in_a_cancelled_scope_does_not_run(rt: Runtime) -> None:
    await rt.deploy("c", guests.COUNTER.encode(), mode="inline")
    with trio.CancelScope() as scope:
        scope.cancel()
        await rt.invoke("c", b"")
    assert scope.cancelled_caught
    assert await rt.invoke("c", b"") == (1).to_bytes(4, "little")  # the cancelled call never ran


async def test_a_thread_call_in_a_cancelled_scope_does_not_run(rt: Runtime) -> None:
    await rt.deploy("c", guests.COUNTER.encode(), mode="thread")
    with trio.CancelScope() as scope:
        scope.cancel()
        await rt.invoke("c", b"")
    assert scope.cancelled_caught
    assert await rt.invoke("c", b"") == (1).to_bytes(4, "little")


async def test_event_subscriptions_end_with_their_consumer(rt: Runtime) -> None:
    await rt.deploy("c", guests.COUNTER.encode())
    subscription = rt.events.subscribe()
    seen = []
    await rt.deploy("d", guests.COUNTER.encode())
    async for event in subscription:
        seen.append(event)
        break
    assert seen
    # The subscription closes when its iterator is finalized after the loop ended.
    await eventually(lambda: rt.events.subscribers == 0)


async def test_a_tight_loop_of_inline_calls_still_lets_deadlines_fire(rt: Runtime) -> None:
    await rt.deploy("echo", guests.ECHO.encode(), mode="inline")
    calls = 0
    with trio.move_on_after(0.05) as scope:
        while calls < 10_000_000:  # (bounded, in case it never stops)
            await rt.invoke("echo", b"x")
            calls += 1
    assert scope.cancelled_caught and calls < 10_000_000
