"""The embedding API under both async backends: deploy, invoke, stream, undeploy, stats, shutdown."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import anyio
import guests
import pytest
from helpers import eventually

from wasmhive.runtime import (
    ActorKilled,
    ActorState,
    GuestTrap,
    Runtime,
    RuntimeClosed,
    RuntimeConfig,
    UnknownFunction,
)

pytestmark = pytest.mark.anyio

ECHO_PATH = guests.EXAMPLES / "echo.wat"


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def no_new_threads() -> Iterator[None]:
    """Fail the test if it leaves one of the runtime's threads behind.

    (The async backends' own idle worker-thread caches, used for compiling
    off the loop, are theirs to manage and are not counted.)
    """
    before = set(threading.enumerate())
    yield
    left = [t for t in threading.enumerate() if t not in before and t.is_alive() and t.name.startswith("wasmhive")]
    assert left == [], f"threads left behind: {left}"


def test_runtime_threads_are_named_so_the_leak_check_sees_them() -> None:
    async def main() -> list[str]:
        async with Runtime(RuntimeConfig(cache_enabled=False)) as rt:
            await rt.deploy("echo", ECHO_PATH)
            await rt.invoke("echo", b"start the actor thread")
            return sorted(t.name for t in threading.enumerate() if t.name.startswith("wasmhive"))

    names = anyio.run(main, backend="trio")
    assert {"wasmhive-echo-1", "wasmhive-epoch"} <= set(names) <= {"wasmhive-echo-1", "wasmhive-epoch", "wasmhive-starter"}


@pytest.mark.parametrize("mode", ["inline", "thread"])
async def test_deploy_invoke_stream_undeploy(config: RuntimeConfig, mode: str, no_new_threads: None) -> None:
    async with Runtime(config) as rt:
        stats = await rt.deploy("echo", ECHO_PATH, mode=mode)
        assert stats.mode == mode and stats.instances == 1
        assert await rt.invoke("echo", b"hello") == b"hello"
        assert [chunk async for chunk in rt.stream("echo", b"whole")] == [b"whole"]

        await rt.deploy("three", guests.EMIT_THREE.encode(), mode=mode)
        assert [chunk async for chunk in rt.stream("three", b"ab")] == [b"ab", b"ab", b"ab", b"end"]
        # invoke returns the emitted chunks followed by the reply
        assert await rt.invoke("three", b"ab") == b"abababend"

        assert rt.functions() == ["echo", "three"]
        assert rt.stats().functions["echo"].calls == 2
        await rt.undeploy("echo")
        with pytest.raises(UnknownFunction):
            await rt.invoke("echo", b"gone")
        assert rt.functions() == ["three"]


async def test_stream_chunks_arrive_while_the_call_runs(config: RuntimeConfig) -> None:
    async with Runtime(config) as rt:
        await rt.deploy("w", guests.EMIT_THEN_WAIT.encode())
        (ref,) = rt.actors("w")
        chunks = []
        async for chunk in rt.stream("w", b""):
            chunks.append(chunk)
            if chunk == b"first":
                # The guest is still inside the call, waiting for us.
                assert rt.state(ref) is ActorState.BUSY
                rt.kv.set("w", "go", b"1")
        assert chunks == [b"first", b"second", b"done"]


async def test_close_stops_everything_and_fails_what_is_left(config: RuntimeConfig, no_new_threads: None) -> None:
    outcomes: dict[str, object] = {}
    fast_close = RuntimeConfig(cache_dir=config.cache_dir, shutdown_grace=0.2)
    async with anyio.create_task_group() as tg:
        rt = Runtime(fast_close)
        async with rt:
            await rt.deploy("spin", guests.INFINITE_LOOP.encode(), timeout=60, mailbox_size=5)
            await rt.deploy("echo", ECHO_PATH, instances=3)
            for _ in range(5):
                await rt.invoke("echo", b"warm up the threads")
            (spinner,) = rt.actors("spin")

            async def call(key: str) -> None:
                try:
                    outcomes[key] = await rt.invoke("spin", b"")
                except Exception as exc:
                    outcomes[key] = exc

            tg.start_soon(call, "running")
            await eventually(lambda: rt.state(spinner) is ActorState.BUSY)
            tg.start_soon(call, "queued")
            await eventually(lambda: rt.stats().functions["spin"].queued == 1)
        # Leaving the block interrupted the 60 s call and failed the queued one.
    assert isinstance(outcomes["running"], ActorKilled)
    assert isinstance(outcomes["queued"], RuntimeClosed)
    with pytest.raises(RuntimeClosed):
        await rt.invoke("echo", b"after close")


async def test_many_concurrent_callers_on_a_pool(config: RuntimeConfig) -> None:
    async with Runtime(config) as rt:
        await rt.deploy("echo", ECHO_PATH, instances=4, mailbox_size=100)
        results: list[bytes] = []

        async def call(i: int) -> None:
            results.append(await rt.invoke("echo", b"%d" % i))

        async with anyio.create_task_group() as tg:
            for i in range(200):
                tg.start_soon(call, i)
        assert sorted(results) == sorted(b"%d" % i for i in range(200))
        assert rt.stats().functions["echo"].calls == 200


async def test_deploy_accepts_path_objects_and_wasm_bytes(config: RuntimeConfig, tmp_path: Path) -> None:
    import wasmtime

    wasm_file = tmp_path / "echo.wasm"
    wasm_file.write_bytes(wasmtime.wat2wasm(ECHO_PATH.read_text()))
    async with Runtime(config) as rt:
        await rt.deploy("from-path", wasm_file)
        await rt.deploy("from-str-path", str(wasm_file))
        await rt.deploy("from-bytes", wasm_file.read_bytes())
        for name in rt.functions():
            assert await rt.invoke(name, b"x") == b"x"
        assert rt.stats().cache["memory_hits"] == 2


async def test_close_does_not_hang_on_a_guest_blocked_by_a_reader_that_stopped_reading(
    config: RuntimeConfig, no_new_threads: None
) -> None:
    flood = guests.module(
        """(block $done (loop $more
             (br_if $done (i32.ge_u (local.get $i) (i32.const 100000)))
             (call $emit (i32.const 0) (i32.const 4096))
             (local.set $i (i32.add (local.get $i) (i32.const 1)))
             (br $more)))
           (i64.const 0)""",
        imports=guests.IMPORT_EMIT,
    )
    async with Runtime(RuntimeConfig(cache_dir=config.cache_dir, shutdown_grace=0.1)) as rt:
        await rt.deploy("flood", flood.encode())
        (ref,) = rt.actors("flood")
        chunks = rt.stream("flood", b"")
        assert len(await chunks.__anext__()) == 4096  # then stop reading: the pipe fills up
        await eventually(lambda: rt.state(ref) is ActorState.BUSY)
    await chunks.aclose()


@pytest.mark.parametrize("mode", ["inline", "thread"])
async def test_a_crashed_actor_is_restarted_under_either_backend(config: RuntimeConfig, mode: str) -> None:
    # (Under asyncio, thread callbacks run outside any task: restart timers must still start.)
    async with Runtime(config) as rt:
        await rt.deploy("t", guests.ECHO_OR_TRAP.encode(), mode=mode)
        with pytest.raises(GuestTrap):
            await rt.invoke("t", b"!")
        await eventually(lambda: rt.stats().functions["t"].instances == 1)
        assert await rt.invoke("t", b"back") == b"back"
        assert rt.stats().functions["t"].restarts == 1
