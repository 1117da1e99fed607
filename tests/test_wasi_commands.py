"""WASI commands: stdin in, stdout streamed out, exit status, a fresh instance per call."""

from __future__ import annotations

import logging

import guests
import pytest

from wasmhive.runtime import ActorState, CallTimeout, GuestError, InvalidModule, Runtime

pytestmark = pytest.mark.trio


@pytest.mark.parametrize("mode", ["thread", "inline"])
async def test_stdin_in_stdout_out(rt: Runtime, mode: str) -> None:
    await rt.deploy("cat", guests.WASI_CAT.encode(), mode=mode, timeout=5)
    payload = bytes(range(256)) * 40  # 10 KiB: three 4 KiB reads and writes
    assert await rt.invoke("cat", payload) == payload
    chunks = [chunk async for chunk in rt.stream("cat", payload)]
    assert [len(c) for c in chunks] == [4096, 4096, 2048]
    assert await rt.invoke("cat", b"") == b""


async def test_non_zero_exit_is_a_guest_error_with_the_status_and_stderr(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    await rt.deploy("fails", guests.WASI_EXIT_3.encode())
    (ref,) = rt.actors("fails")
    caplog.set_level(logging.WARNING, logger="wasmhive.guest")
    chunks: list[bytes] = []
    with pytest.raises(GuestError) as info:
        async for chunk in rt.stream("fails", b""):
            chunks.append(chunk)
    assert chunks == [b"partial"]  # stdout written before the failure still arrives
    assert info.value.details["exit_code"] == 3
    assert "status 3" in info.value.message and "something broke" in info.value.message
    assert any("something broke" in r.getMessage() for r in caplog.records)
    assert rt.actors("fails") == [ref] and rt.state(ref) is ActorState.IDLE  # the actor lives on


async def test_every_call_is_a_fresh_instance(rt: Runtime) -> None:
    await rt.deploy("fresh", guests.WASI_FRESH.encode())
    assert [await rt.invoke("fresh", b"") for _ in range(3)] == [b"1", b"1", b"1"]


async def test_limits_apply_to_commands(rt: Runtime) -> None:
    await rt.deploy("spin", guests.WASI_SPIN.encode(), timeout=0.2)
    with pytest.raises(CallTimeout):
        await rt.invoke("spin", b"")


async def test_a_command_may_import_only_wasi(rt: Runtime) -> None:
    bad = guests.WASI_CAT.replace("(memory", '(import "wasmhive" "emit" (func (param i32 i32))) (memory', 1)
    with pytest.raises(InvalidModule, match="may import only"):
        await rt.deploy("bad", bad.encode())
