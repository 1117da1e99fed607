"""The pool supervisor inside the runtime: scaling, routing, restarts, and the strategies."""

from __future__ import annotations

import guests
import msgspec
import pytest
import trio
import trio.testing
from helpers import eventually, settled

from wasmhive.runtime import (
    ActorCrashed,
    ActorKilled,
    CircuitOpen,
    GuestTrap,
    InvalidModule,
    MailboxFull,
    Overloaded,
    Runtime,
    RuntimeConfig,
)
from wasmhive.supervisors.breaker import BreakerPolicy
from wasmhive.supervisors.bulkhead import BulkheadPolicy
from wasmhive.supervisors.events import ChildExited, ChildRestarted, ChildStarted
from wasmhive.supervisors.pool import PoolPolicy
from wasmhive.supervisors.retry import RetryPolicy

pytestmark = pytest.mark.trio

FAST_POOL = dict(
    interval=1.0, sample_interval=0.25, stable_window=4.0, panic_window=1.0, panic_threshold=100.0, scale_down_delay=2.0
)


async def release_all(rt: Runtime, function: str, done: list[object], expected: int) -> None:
    """Let GATED '?' calls finish one by one until ``expected`` of them are done."""
    while len(done) < expected:
        if rt.kv.get(function, "go") is None:
            rt.kv.set(function, "go", b"1")
        await trio.sleep(0.01)


async def test_pool_scales_up_under_load_and_back_down_when_idle(
    config: RuntimeConfig, mock_clock: trio.testing.MockClock
) -> None:
    mock_clock.autojump_threshold = 0
    policy = PoolPolicy(min_size=1, max_size=4, **FAST_POOL)  # type: ignore[arg-type]
    async with Runtime(config) as rt:
        await rt.deploy("g", guests.GATED.encode(), pool=policy, mailbox_size=100)
        done: list[object] = []

        async def call() -> None:
            done.append(await rt.invoke("g", b"?wait"))

        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(call)
            await eventually(lambda: rt.stats().functions["g"].pool_size == 4, limit=60, step=0.05)
            stats = rt.stats().functions["g"]
            assert stats.scale_ups == 3 and stats.in_flight == 6
            assert stats.utilization > policy.scale_down_threshold  # (the window still holds the quiet start)
            await release_all(rt, "g", done, 6)
        assert done == [b"?wait"] * 6
        await eventually(lambda: rt.stats().functions["g"].pool_size == 1, limit=60, step=0.05)
        assert rt.stats().functions["g"].scale_downs == 3


async def test_scale_to_zero_and_cold_start(config: RuntimeConfig, mock_clock: trio.testing.MockClock) -> None:
    mock_clock.autojump_threshold = 0
    policy = PoolPolicy(min_size=0, max_size=2, scale_to_zero_grace=3.0, **FAST_POOL)  # type: ignore[arg-type]
    async with Runtime(config) as rt:
        await rt.deploy("echo", guests.ECHO.encode(), pool=policy, mode="inline")
        assert rt.stats().functions["echo"].pool_size == 0
        assert await rt.invoke("echo", b"cold") == b"cold"  # started on demand
        stats = rt.stats().functions["echo"]
        assert (stats.cold_starts, stats.pool_size) == (1, 1)
        await eventually(lambda: rt.stats().functions["echo"].pool_size == 0, limit=60, step=0.05)
        assert await rt.invoke("echo", b"again") == b"again"
        assert rt.stats().functions["echo"].cold_starts == 2


async def test_scale_down_never_interrupts_a_call(config: RuntimeConfig) -> None:
    async with Runtime(config) as rt:
        await rt.deploy("g", guests.GATED.encode(), pool=PoolPolicy(min_size=1, max_size=3, interval=3600))
        pool = rt._deployments["g"].pool
        pool.scale_to(3)
        done: list[object] = []

        async def call() -> None:
            done.append(await rt.invoke("g", b"?wait"))

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(call)
            await eventually(lambda: rt.stats().functions["g"].states.get("busy") == 3)
            pool.scale_to(1)  # every actor is in a call: none may go
            assert rt.stats().functions["g"].pool_size == 3
            await release_all(rt, "g", done, 3)
        assert done == [b"?wait"] * 3
        pool.scale_to(1)  # now they are idle
        assert rt.stats().functions["g"].pool_size == 1


async def test_session_affinity_moves_the_key_when_its_actor_dies(config: RuntimeConfig) -> None:
    async with Runtime(config) as rt:
        await rt.deploy("c", guests.COUNTER_OR_TRAP.encode(), instances=3)

        async def count(key: str) -> int:
            return int.from_bytes(await rt.invoke("c", b"", key=key), "little")

        assert [await count("alice") for _ in range(3)] == [1, 2, 3]  # same actor each time
        assert await count("bob") in (1, 4)
        with pytest.raises(GuestTrap):
            await rt.invoke("c", b"!", key="alice")  # alice's actor dies
        # The key moves to a live actor; the caller is not failed for that.
        assert await count("alice") >= 1
        first_after = await count("alice")
        assert await count("alice") == first_after + 1


async def test_no_message_is_lost_or_answered_twice_while_actors_restart(config: RuntimeConfig) -> None:
    async with Runtime(config) as rt:
        await rt.deploy(
            "e",
            guests.ECHO_OR_TRAP.encode(),
            mode="thread",
            instances=3,
            mailbox_size=1000,
            # At most 10 crashes happen (one per '!' call that runs), so 12 attempts always suffice.
            retry=RetryPolicy(max_attempts=12, base=0.001, cap=0.01, budget_max_tokens=1000),
        )
        outcomes: dict[int, list[object]] = {i: [] for i in range(100)}

        async def call(i: int) -> None:
            payload = (b"!" if i % 10 == 0 else b"") + b"%d" % i
            try:
                outcomes[i].append(await rt.invoke("e", payload))
            except Exception as exc:
                outcomes[i].append(exc)

        async with trio.open_nursery() as nursery:
            for i in range(100):
                nursery.start_soon(call, i)
        for i, got in outcomes.items():
            assert len(got) == 1, (i, got)  # answered exactly once
            if i % 10 == 0:
                assert isinstance(got[0], GuestTrap), (i, got)  # a trap is not retried: the guest ran
            else:
                assert got[0] == b"%d" % i, (i, got)  # queued behind a crash: retried, not lost
        stats = rt.stats().functions["e"]
        assert stats.crashes == 10 and stats.retries > 0


async def test_breaker_opens_and_fails_fast_and_retry_does_not_hammer_it(config: RuntimeConfig) -> None:
    async with Runtime(config) as rt:
        await rt.deploy(
            "t",
            guests.ECHO_OR_TRAP.encode(),
            breaker=BreakerPolicy(failure_threshold=3, wait_in_open=60),
            retry=RetryPolicy(max_attempts=3, idempotent=True, base=0.001),
        )
        for _ in range(3):
            with pytest.raises((GuestTrap, CircuitOpen)):
                await rt.invoke("t", b"!boom")
        stats = rt.stats().functions["t"]
        assert stats.breaker_state == "OPEN"
        with pytest.raises(CircuitOpen) as info:
            await rt.invoke("t", b"fine")
        assert info.value.retry_at is not None and info.value.function == "t"
        assert rt.stats().functions["t"].calls == stats.calls  # nothing reached an actor
        assert rt.stats().functions["t"].rejections >= 1


async def test_calls_queued_behind_a_crash_do_not_count_against_the_breaker(config: RuntimeConfig) -> None:
    # One actor: "!" waits for "go", then traps; three calls queue behind it and fail
    # with ActorCrashed without running.  One fault, one counted failure.
    async with Runtime(config) as rt:
        await rt.deploy("g", guests.GATED.encode(), breaker=BreakerPolicy(failure_threshold=2, wait_in_open=60))
        outcomes: list[object] = []

        async def call(payload: bytes) -> None:
            try:
                outcomes.append(await rt.invoke("g", payload))
            except Exception as exc:
                outcomes.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, b"!crash")
            await eventually(lambda: rt.stats().functions["g"].states.get("busy") == 1)
            for payload in (b"q1", b"q2", b"q3"):
                nursery.start_soon(call, payload)
            await eventually(lambda: rt.stats().functions["g"].queued == 3)
            rt.kv.set("g", "go", b"1")
        assert sorted(type(o).__name__ for o in outcomes) == ["ActorCrashed"] * 3 + ["GuestTrap"]
        assert rt.stats().functions["g"].breaker_state == "CLOSED"
        await settled(rt, "g")
        rt.kv.set("g", "go", b"1")
        with pytest.raises(GuestTrap):  # a second real fault in a row does open it
            await rt.invoke("g", b"!")
        assert rt.stats().functions["g"].breaker_state == "OPEN"


async def test_bulkhead_refuses_beyond_its_limits(config: RuntimeConfig) -> None:
    async with Runtime(config) as rt:
        await rt.deploy(
            "g", guests.GATED.encode(), instances=2, bulkhead=BulkheadPolicy(max_concurrent=2, max_wait=0.0)
        )
        done: list[object] = []

        async def call() -> None:
            done.append(await rt.invoke("g", b"?wait"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            nursery.start_soon(call)
            await eventually(lambda: rt.stats().functions["g"].in_flight == 2)
            with pytest.raises(Overloaded):
                await rt.invoke("g", b"third")
            assert rt.stats().functions["g"].rejections == 1
            await release_all(rt, "g", done, 2)


async def test_supervision_events_are_observable(config: RuntimeConfig) -> None:
    async with Runtime(config) as rt:
        seen: list[object] = []
        rt.events.listen(seen.append)
        await rt.deploy("t", guests.ECHO_OR_TRAP.encode())
        with pytest.raises(GuestTrap):
            await rt.invoke("t", b"!")
        await settled(rt, "t")
        kinds = [type(e) for e in seen]
        assert kinds == [ChildStarted, ChildExited, ChildRestarted, ChildStarted], seen
        exited = seen[1]
        assert isinstance(exited, ChildExited) and exited.reason.kind == "trap"
        assert msgspec.json.decode(msgspec.json.encode(exited), type=ChildExited) == exited


async def test_stuck_call_is_killed_at_shutdown_after_grace(cache_dir: object) -> None:
    async with Runtime(RuntimeConfig(cache_dir=str(cache_dir), shutdown_grace=0.05)) as rt:
        await rt.deploy("spin", guests.INFINITE_LOOP.encode(), timeout=3600)
        outcome: list[object] = []

        async def call() -> None:
            try:
                await rt.invoke("spin", b"")
            except ActorKilled as exc:
                outcome.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            await eventually(lambda: rt.stats().functions["spin"].states.get("busy") == 1)
            await rt.undeploy("spin")  # waits for the grace, then kills the stuck guest
        assert len(outcome) == 1


async def test_a_pool_that_gives_up_is_started_again_by_the_runtime(
    config: RuntimeConfig, mock_clock: trio.testing.MockClock
) -> None:
    mock_clock.autojump_threshold = 0
    async with Runtime(config) as rt:
        policy = PoolPolicy(min_size=1, max_size=1, max_restarts=2, period=60.0)
        await rt.deploy("t", guests.ECHO_OR_TRAP.encode(), pool=policy, mode="inline")
        for _ in range(3):  # the third crash is one restart too many
            with pytest.raises(GuestTrap):
                await rt.invoke("t", b"!")
            await trio.sleep(1.0)  # (virtual) let the restart backoff pass
        with pytest.raises(ActorCrashed, match="gave up"):
            await rt.invoke("t", b"meanwhile")
        await eventually(lambda: rt.stats().functions["t"].pool_restarts == 1, limit=120, step=0.1)
        await settled(rt, "t")
        assert await rt.invoke("t", b"back") == b"back"


async def test_a_broken_guest_fails_its_deploy_even_when_the_pool_starts_empty(rt: Runtime) -> None:
    never_ready = guests.module("(call $pack (local.get $ptr) (local.get $len))", extra='(func (export "wh_init") unreachable)')
    with pytest.raises(InvalidModule, match="GuestTrap"):
        await rt.deploy("broken", never_ready.encode(), pool=PoolPolicy(min_size=0, max_size=2))
    assert rt.functions() == []


async def test_a_refused_call_counts_as_one_rejection(config: RuntimeConfig) -> None:
    async with Runtime(config) as rt:
        await rt.deploy(
            "g", guests.GATED.encode(), instances=1, mailbox_size=0, overflow="reject",
            bulkhead=BulkheadPolicy(max_concurrent=5),
        )
        done: list[object] = []

        async def call() -> None:
            done.append(await rt.invoke("g", b"?wait"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call)
            await eventually(lambda: rt.stats().functions["g"].states.get("busy") == 1)
            with pytest.raises(MailboxFull):
                await rt.invoke("g", b"x")
            assert rt.stats().functions["g"].rejections == 1
            await release_all(rt, "g", done, 1)


async def test_when_the_guest_cannot_start_again_callers_hear_why_at_once(rt: Runtime) -> None:
    # wh_init counts starts in the kv store ({"op": "kv.incr", "key": "starts"}) and traps from the second on.
    request = "\\82\\a2op\\a7kv.incr\\a3key\\a6starts"
    flaky = guests.module(
        # an empty payload traps; anything else echoes
        "(if (i32.eqz (local.get $len)) (then unreachable)) (call $pack (local.get $ptr) (local.get $len))",
        imports=guests.IMPORT_HOST_CALL,
        data=f'(data (i32.const 16) "{request}")',
        extra="""(func (export "wh_init") (local $r i64)
                   (local.set $r (call $host_call (i32.const 16) (i32.const 23)))
                   (if (i32.ge_u (i32.load8_u (i32.add (i32.wrap_i64 (i64.shr_u (local.get $r) (i64.const 32)))
                                                       (i32.const 11))) (i32.const 2))
                     (then unreachable)))""",
    )
    await rt.deploy("flaky", flaky.encode())
    assert await rt.invoke("flaky", b"ok") == b"ok"
    with pytest.raises(GuestTrap):
        await rt.invoke("flaky", b"")  # the actor dies; every restart now fails in wh_init
    errors = []
    for _ in range(3):
        with pytest.raises(ActorCrashed) as info:
            await rt.invoke("flaky", b"ok")
        errors.append(info.value)
    assert all(e.reason == "start_failed" for e in errors)
    assert "can start" in errors[-1].message
