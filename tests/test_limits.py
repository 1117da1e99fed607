"""Engine limits: call timeout, memory cap, fuel; each with its own error, the runtime serving on."""

from __future__ import annotations

import time

import guests
import pytest
import trio
from helpers import eventually, settled

from wasmhive.runtime import (
    ActorState,
    CallTimeout,
    FuelExhausted,
    InvalidModule,
    OutOfMemory,
    Runtime,
    RuntimeConfig,
)

pytestmark = pytest.mark.trio


async def test_infinite_loop_times_out_near_the_timeout_while_others_keep_serving(rt: Runtime) -> None:
    timeout = 0.3
    await rt.deploy("spin", guests.INFINITE_LOOP.encode(), timeout=timeout)
    await rt.deploy("echo", guests.ECHO.encode(), mode="inline")
    (spinner,) = rt.actors("spin")
    outcome: dict[str, object] = {}

    async def spin() -> None:
        started = time.monotonic()
        try:
            await rt.invoke("spin", b"")
        except CallTimeout as exc:
            outcome["error"] = exc
        outcome["elapsed"] = time.monotonic() - started

    served = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(spin)
        await eventually(lambda: rt.state(spinner) is ActorState.BUSY)
        # The guest spins on its own thread; the loop and other actors keep serving.
        while "elapsed" not in outcome:
            assert await rt.invoke("echo", b"%d" % served) == b"%d" % served
            served += 1
            await trio.sleep(0.01)
    error = outcome["error"]
    assert isinstance(error, CallTimeout) and error.function == "spin"
    elapsed = outcome["elapsed"]
    assert isinstance(elapsed, float)
    # Not early; late by no more than scheduling slack (epoch tick is 1 ms).
    assert timeout <= elapsed < timeout + 2.0
    assert served > 5
    # The crashed actor was replaced; the new one serves (and times out) again.
    assert rt.actors("spin") != [spinner]
    assert rt.stats().functions["spin"].crashes == 1


async def test_inline_timeout_defaults_to_10_ms(rt: Runtime) -> None:
    stats = await rt.deploy("spin", guests.INFINITE_LOOP.encode(), mode="inline")
    assert stats.timeout == 0.010
    started = time.monotonic()
    with pytest.raises(CallTimeout, match=r"0\.01s"):
        await rt.invoke("spin", b"")
    assert time.monotonic() - started < 1.0
    await rt.deploy("echo", guests.ECHO.encode(), mode="inline")
    assert await rt.invoke("echo", b"alive") == b"alive"


async def test_memory_bomb_raises_out_of_memory(rt: Runtime) -> None:
    limit = 4 << 20
    await rt.deploy("bomb", guests.MEMORY_BOMB.encode(), memory_limit=limit)
    with pytest.raises(OutOfMemory) as info:
        await rt.invoke("bomb", b"")
    assert info.value.function == "bomb"
    assert info.value.details["memory_limit"] == limit
    # the replacement instance starts with fresh, small memory
    await settled(rt, "bomb")
    assert rt.stats().functions["bomb"].instances == 1


async def test_memory_limit_also_bounds_a_single_large_reply(config: RuntimeConfig) -> None:
    async with Runtime(config) as rt:
        await rt.deploy("echo", guests.ECHO_LOCAL.encode(), memory_limit=1 << 20)
        # 2 MiB cannot be placed in a 1 MiB memory: the allocator traps on the refused grow.
        with pytest.raises(OutOfMemory):
            await rt.invoke("echo", b"x" * (2 << 20))
        assert await rt.invoke("echo", b"small") == b"small"


async def test_fuel_budget_is_per_call(cache_dir: object) -> None:
    async with Runtime(RuntimeConfig(cache_dir=str(cache_dir), fuel=True)) as rt:
        await rt.deploy("tight", guests.BUSY_ECHO.encode(), fuel=10_000)
        with pytest.raises(FuelExhausted) as info:
            await rt.invoke("tight", b"x")
        assert info.value.details["fuel"] == 10_000
        assert "used up its fuel budget of 10000" in str(info.value)
        # 2,000,000 iterations need well under 10**8 fuel; the budget is refilled each call.
        await rt.deploy("roomy", guests.BUSY_ECHO.encode(), fuel=10**8)
        for _ in range(3):
            assert await rt.invoke("roomy", b"ok") == b"ok"


async def test_a_drained_call_says_its_budget_was_zero_even_without_a_fuel_limit(cache_dir: object) -> None:
    # The stress harness's fuel fault: the function has no fuel limit of its own.
    async with Runtime(RuntimeConfig(cache_dir=str(cache_dir), fuel=True)) as rt:
        await rt.deploy("echo", guests.ECHO.encode())
        rt.deployment("echo").set_call_hook(lambda actor, instance, payload: instance.drain_fuel())
        with pytest.raises(FuelExhausted, match=r"used up its fuel budget of 0$") as info:
            await rt.invoke("echo", b"x")
        assert info.value.details["fuel"] == 0


async def test_thread_timeouts_longer_than_the_ticker_linger_still_fire(rt: Runtime) -> None:
    # The epoch ticker parks after 1 s without new calls; it must not while a call runs.
    await rt.deploy("spin", guests.INFINITE_LOOP.encode(), timeout=1.5)
    started = time.monotonic()
    with pytest.raises(CallTimeout):
        await rt.invoke("spin", b"")
    assert time.monotonic() - started >= 1.5


async def test_a_guest_that_never_finishes_starting_fails_its_deploy(cache_dir: object) -> None:
    never_ready = guests.module(
        "(call $pack (local.get $ptr) (local.get $len))",
        extra='(func (export "wh_init") (loop $forever (br $forever)))',
    )
    async with Runtime(RuntimeConfig(cache_dir=str(cache_dir), init_timeout=0.2)) as rt:
        with pytest.raises(InvalidModule, match=r"CallTimeout.*start-up ran past the timeout of 0\.2s"):
            await rt.deploy("never", never_ready.encode())
        assert rt.functions() == []
        await rt.deploy("echo", guests.ECHO.encode())
        assert await rt.invoke("echo", b"fine") == b"fine"


async def test_null_from_wh_alloc_is_out_of_memory(rt: Runtime) -> None:
    null_alloc = """(module (memory (export "memory") 1)
      (func (export "wh_alloc") (param i32) (result i32) (i32.const 0))
      (func (export "wh_handle") (param i32 i32) (result i64) (i64.const 0)))"""
    await rt.deploy("null", null_alloc.encode())
    with pytest.raises(OutOfMemory, match="NULL"):
        await rt.invoke("null", b"payload")
    # an empty payload needs no memory: wh_alloc(0) may return anything
    assert await rt.invoke("null", b"") == b""


async def test_a_start_function_that_never_ends_fails_the_deploy_without_holding_the_loop(cache_dir: object) -> None:
    from wasmhive.runtime.module import has_start_function

    spinning_start = guests.module(
        "(call $pack (local.get $ptr) (local.get $len))",
        extra="(func $spin (loop $forever (br $forever))) (start $spin)",
    )
    import wasmtime

    assert has_start_function(wasmtime.wat2wasm(spinning_start))
    assert not has_start_function(wasmtime.wat2wasm(guests.ECHO))
    ticks = 0

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            await trio.sleep(0.01)
            ticks += 1

    async with Runtime(RuntimeConfig(cache_dir=str(cache_dir), init_timeout=0.3)) as rt:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(heartbeat)
            with pytest.raises(InvalidModule, match="CallTimeout"):
                await rt.deploy("spin", spinning_start.encode())  # thread mode: starts off the loop
            nursery.cancel_scope.cancel()
    assert ticks >= 10  # the loop kept running while the guest spun
