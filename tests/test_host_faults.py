"""Failures on the host side of a call: oversized chunks, a failing key-value store."""

from __future__ import annotations

import guests
import pytest
from helpers import eventually

from wasmhive.runtime import (
    HostError,
    MemoryKeyValueStore,
    PayloadTooLarge,
    Runtime,
    RuntimeConfig,
)

pytestmark = pytest.mark.trio


async def test_oversized_chunk_is_payload_too_large_and_the_actor_lives(cache_dir: object) -> None:
    big_chunk = guests.module(
        "(call $emit (i32.const 0) (i32.const 200)) (call $pack (local.get $ptr) (local.get $len))",
        imports=guests.IMPORT_EMIT,
    )
    async with Runtime(RuntimeConfig(cache_dir=str(cache_dir), max_payload_bytes=100)) as rt:
        await rt.deploy("big", big_chunk.encode())
        (ref,) = rt.actors("big")
        with pytest.raises(PayloadTooLarge, match="emitted chunk of 200 bytes") as info:
            await rt.invoke("big", b"small")
        assert (info.value.size, info.value.limit) == (200, 100)
        assert rt.actors("big") == [ref]  # not a fault: the same actor serves on
        with pytest.raises(PayloadTooLarge):
            [chunk async for chunk in rt.stream("big", b"again")]
        assert rt.stats().functions["big"].crashes == 0


class BrokenStore(MemoryKeyValueStore):
    """A key-value store whose reads fail, as a remote store might."""

    def get(self, namespace: str, key: str) -> bytes | None:
        raise ConnectionError("the store is down")


async def test_a_failing_host_service_is_a_host_error_not_the_guests_fault(cache_dir: object) -> None:
    import msgspec

    async with Runtime(RuntimeConfig(cache_dir=str(cache_dir)), kv=BrokenStore()) as rt:
        await rt.deploy("p", guests.HOST_PROXY.encode())
        (first,) = rt.actors("p")
        with pytest.raises(HostError, match="the store is down"):
            await rt.invoke("p", msgspec.msgpack.encode({"op": "kv.get", "key": "k"}))
        # The call was cut off halfway, so the actor was replaced; the new one serves.
        assert rt.actors("p") != [first]
        reply = await rt.invoke("p", msgspec.msgpack.encode({"op": "kv.set", "key": "k", "value": b"v"}))
        assert msgspec.msgpack.decode(reply)["ok"] is True


async def test_a_call_cannot_emit_without_bound(cache_dir: object) -> None:
    flood = guests.module(
        """(block $done (loop $more
             (br_if $done (i32.ge_u (local.get $i) (i32.const 1000)))
             (call $emit (i32.const 0) (i32.const 4096))
             (local.set $i (i32.add (local.get $i) (i32.const 1)))
             (br $more)))
           (call $pack (local.get $ptr) (local.get $len))""",
        imports=guests.IMPORT_EMIT,
    )
    async with Runtime(RuntimeConfig(cache_dir=str(cache_dir), max_stream_bytes=64 * 1024)) as rt:
        await rt.deploy("flood", flood.encode())
        with pytest.raises(PayloadTooLarge, match="max_stream_bytes"):
            await rt.invoke("flood", b"")
        assert rt.stats().functions["flood"].crashes == 0  # not a fault: the output was cut


async def test_a_stalled_stream_reader_does_not_switch_off_the_timeout(config: RuntimeConfig) -> None:
    flood = guests.module(
        """(loop $more (call $emit (i32.const 0) (i32.const 65536)) (br $more)) (i64.const 0)""",
        imports=guests.IMPORT_EMIT,
    )
    async with Runtime(config) as rt:
        await rt.deploy("flood", flood.encode(), timeout=0.3)
        chunks = rt.stream("flood", b"")
        await chunks.__anext__()  # then stop reading: the guest blocks on the full pipe
        await eventually(lambda: rt.stats().functions["flood"].crashes == 1)  # its timeout still fired
        await chunks.aclose()


async def test_tables_count_against_the_guest_too(rt: Runtime) -> None:
    table_bomb = guests.module(
        "(drop (table.grow $t (ref.null func) (i32.const 400000000))) (i64.const 0)",
        extra="(table $t 0 funcref)",
    )
    await rt.deploy("tables", table_bomb.encode())
    assert await rt.invoke("tables", b"") == b""  # table.grow was refused (-1): nothing allocated


async def test_the_host_call_hook_sees_every_call_and_can_slow_or_fail_it(cache_dir: object) -> None:
    import threading

    import msgspec

    from wasmhive.actors.host import HostCallError
    from wasmhive.runtime import SecretStore

    seen: list[tuple[str, str, bool]] = []
    loop_thread = threading.get_ident()
    verdicts: dict[str, Exception] = {}

    def hook(op: str, function: str) -> None:
        seen.append((op, function, threading.get_ident() == loop_thread))
        if op in verdicts:
            raise verdicts[op]

    def call(request: dict[str, object]) -> bytes:
        return msgspec.msgpack.encode(request)

    async with Runtime(RuntimeConfig(cache_dir=str(cache_dir)), secrets=SecretStore({"K": "v"})) as rt:
        await rt.deploy("p", guests.HOST_PROXY.encode(), secrets=["K"])
        rt.set_host_call_hook(hook)
        assert msgspec.msgpack.decode(await rt.invoke("p", call({"op": "secret.get", "name": "K"})))["value"] == "v"
        await rt.invoke("p", call({"op": "kv.incr", "key": "n"}))
        await rt.invoke("p", call({"op": "time.wall"}))
        # Before the operation runs, on the guest's own thread (thread mode), named by op.
        assert seen == [("secret.get", "p", False), ("kv.incr", "p", False), ("time.wall", "p", False)]

        # A HostCallError is the guest's error result; the actor lives on.
        verdicts["kv.incr"] = HostCallError("unavailable", "slow down")
        (actor,) = rt.actors("p")
        result = msgspec.msgpack.decode(await rt.invoke("p", call({"op": "kv.incr", "key": "n"})))
        assert result["ok"] is False and result["error"] == {"code": "unavailable", "message": "slow down"}
        assert rt.actors("p") == [actor]
        assert rt.kv.get("p", "n") == b"1"  # the operation itself never ran

        # Anything else is a host failure: HostError, and the actor is replaced.
        verdicts["secret.get"] = ConnectionError("vault unreachable")
        with pytest.raises(HostError, match="vault unreachable"):
            await rt.invoke("p", call({"op": "secret.get", "name": "K"}))
        await eventually(lambda: rt.actors("p") not in ([], [actor]))

        # Removed, it sees nothing more.
        rt.set_host_call_hook(None)
        count = len(seen)
        assert msgspec.msgpack.decode(await rt.invoke("p", call({"op": "secret.get", "name": "K"})))["value"] == "v"
        assert len(seen) == count
