"""The C guest SDK (guest/c/wasmhive.h): its examples and a test guest, built with ziglang.

The modules are built once per session (the first zig build on a machine
compiles wasi-libc, up to about a minute; zig caches it globally afterwards).
"""

from __future__ import annotations

import importlib.util
import logging
import math
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
import pytest
import trio

from wasmhive.runtime import ActorState, GuestError, OutOfMemory, Runtime, RuntimeConfig

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("ziglang") is None,
    reason="the C guest SDK tests need the ziglang package to compile C to wasm (pip install ziglang)",
)

GUEST_C = Path(__file__).resolve().parent.parent / "guest" / "c"


def _load_build_module() -> ModuleType:
    # Loaded by path under its own name: "build" alone could be PyPA's build package.
    spec = importlib.util.spec_from_file_location("wasmhive_c_build", GUEST_C / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cbuild = _load_build_module()


@pytest.fixture(scope="session")
def wasm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Every example plus the SDK test guest, compiled: name -> module bytes."""
    out = tmp_path_factory.mktemp("c-guests")
    sources = [*cbuild.examples(), GUEST_C / "tests" / "sdk_test.c"]
    return {source.stem: cbuild.build(source, out).read_bytes() for source in sources}


async def deploy(rt: Runtime, wasm: dict[str, bytes], module: str, name: str | None = None, **options: Any) -> str:
    name = name or module.replace("_", "-")
    await rt.deploy(name, wasm[module], **options)
    return name


def pattern(n: int, seed: int = 0) -> bytes:
    return bytes((i * 31 + seed) % 256 for i in range(n))


# --- build -----------------------------------------------------------------------


def test_examples_are_small_reactors(wasm: dict[str, bytes]) -> None:
    import wasmtime

    engine = wasmtime.Engine()
    for name in ("echo", "stream_counter", "kv_counter", "fetch"):
        module = wasmtime.Module(engine, wasm[name])
        exports = {e.name for e in module.exports}
        assert {"memory", "wh_alloc", "wh_handle", "_initialize"} <= exports, name
        assert "_start" not in exports
        assert all(i.module == "wasmhive" for i in module.imports), (name, [i.module for i in module.imports])
        (memory,) = [e.type for e in module.exports if e.name == "memory"]
        assert isinstance(memory, wasmtime.MemoryType)
        assert memory.limits.min <= 32, f"{name} starts with {memory.limits.min} pages"  # 1 MiB stack, not zig's 16
    assert len(wasm["echo"]) < 4096


def test_build_reports_compiler_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.c"
    bad.write_text('#define WASMHIVE_IMPLEMENTATION\n#include "wasmhive.h"\nint handle(void) { return nope; }\n')
    with pytest.raises(cbuild.BuildError, match=r"bad\.c"):
        cbuild.build(bad, tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.wasm"))
    with pytest.raises(FileNotFoundError):
        cbuild.build(tmp_path / "missing.c", tmp_path / "out")


def test_build_cli(tmp_path: Path) -> None:
    source = GUEST_C / "examples" / "echo.c"
    assert cbuild.main([str(source), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "echo.wasm").read_bytes()[:4] == b"\0asm"


def test_upper_is_a_small_command(wasm: dict[str, bytes]) -> None:
    # main() and no WASMHIVE_IMPLEMENTATION: built with -mexec-model=command.
    import wasmtime

    module = wasmtime.Module(wasmtime.Engine(), wasm["upper"])
    exports = {e.name for e in module.exports}
    assert {"memory", "_start"} <= exports
    assert not exports & {"wh_alloc", "wh_handle", "_initialize"}
    assert {i.module for i in module.imports} == {"wasi_snapshot_preview1"}
    (memory,) = [e.type for e in module.exports if e.name == "memory"]
    assert isinstance(memory, wasmtime.MemoryType)
    assert memory.limits.min <= 32, f"upper starts with {memory.limits.min} pages"


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("int main(void) { return 0; }", True),
        ("int main (int argc, char **argv) { return 0; }", True),
        ("int\nmain(void)\n{ return 0; }", True),
        ('#define WASMHIVE_IMPLEMENTATION\n#include "wasmhive.h"\nint handle(void);', False),
        ('#include "wasmhive.h"\n/* no main( here */ int f(void) { return 0; }', False),
        ('// main(\nconst char *s = "main(";\nint domain(void) { return 0; }', False),
        ("int f(struct s *p) { return p->main() + q.main(); }", False),
        ("#  define WASMHIVE_IMPLEMENTATION\nint main(void) { return 0; }", False),  # an SDK guest wins
        ("/* #define WASMHIVE_IMPLEMENTATION */\nint main(void) { return 0; }", True),
    ],
)
def test_is_command(text: str, command: bool) -> None:
    assert cbuild.is_command(text) is command


def test_build_command_flag_overrides_detection(tmp_path: Path) -> None:
    import wasmtime

    engine = wasmtime.Engine()
    upper = GUEST_C / "examples" / "upper.c"
    as_reactor = cbuild.build(upper, tmp_path / "reactor", command=False)
    assert {e.name for e in wasmtime.Module(engine, as_reactor.read_bytes()).exports} == {"memory", "_initialize"}
    as_command = cbuild.build(upper, tmp_path / "command", command=True)
    assert "_start" in {e.name for e in wasmtime.Module(engine, as_command.read_bytes()).exports}


def test_installed_build_module(tmp_path: Path) -> None:
    # guest/c/build.py wraps wasmhive.runtime.cbuild; the header ships inside the package.
    from wasmhive.runtime import cbuild as installed

    assert cbuild.BuildError is installed.BuildError
    header = installed.include_dir() / "wasmhive.h"
    assert header.read_bytes() == (GUEST_C / "wasmhive.h").read_bytes()
    source = tmp_path / "src" / "echo.c"
    source.parent.mkdir()
    source.write_bytes((GUEST_C / "examples" / "echo.c").read_bytes())  # no wasmhive.h next to it
    assert installed.build(source) == tmp_path / "src" / "echo.wasm"  # default: next to the source
    (tmp_path / "out").mkdir()
    assert installed.build(source, tmp_path / "out") == tmp_path / "out" / "echo.wasm"  # into a directory
    named = installed.build(source, tmp_path / "new" / "dir" / "e.wasm", optimize="O2")
    assert named.read_bytes()[:4] == b"\0asm"
    with pytest.raises(ValueError, match="optimize"):
        installed.build(source, optimize="-O9")


# --- echo ------------------------------------------------------------------------


@pytest.mark.trio
@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 4096, 65535, 65536, 65537, 300_000, 1 << 20])
async def test_echo_sizes(rt: Runtime, wasm: dict[str, bytes], size: int) -> None:
    name = await deploy(rt, wasm, "echo")
    payload = pattern(size, seed=size)
    assert await rt.invoke(name, payload) == payload
    assert await rt.invoke(name, payload) == payload  # the arena is reused


@pytest.mark.trio
async def test_echo_alternating_sizes_in_one_instance(rt: Runtime, wasm: dict[str, bytes]) -> None:
    name = await deploy(rt, wasm, "echo")
    (ref,) = rt.actors(name)
    for size in (1 << 20, 3, 0, 200_000, 1 << 20, 70_000, 1, (1 << 20) + 1, 5 << 20):
        payload = pattern(size, seed=size % 7)
        assert await rt.invoke(name, payload) == payload
    assert rt.actors(name) == [ref]  # one instance served them all: no crash, no restart
    assert rt.state(ref) not in (ActorState.CRASHED, ActorState.STOPPED)


@pytest.mark.trio
async def test_echo_inline_mode(rt: Runtime, wasm: dict[str, bytes]) -> None:
    name = await deploy(rt, wasm, "echo", mode="inline", timeout=5.0)
    for size in (0, 10, 100_000):
        payload = pattern(size)
        assert await rt.invoke(name, payload) == payload


@pytest.mark.trio
async def test_payload_larger_than_memory_limit_is_out_of_memory(rt: Runtime, wasm: dict[str, bytes]) -> None:
    # wh_alloc returns NULL (malloc fails) rather than trapping: OutOfMemory.
    name = await deploy(rt, wasm, "echo", memory_limit=4 << 20)
    with pytest.raises(OutOfMemory, match="NULL"):
        await rt.invoke(name, bytes(6 << 20))
    # a fresh instance takes over
    with trio.fail_after(10):
        while True:
            try:
                assert await rt.invoke(name, b"small") == b"small"
                break
            except Exception:  # ActorCrashed / restart backoff
                await trio.sleep(0.01)


# --- stream_counter --------------------------------------------------------------


@pytest.mark.trio
@pytest.mark.parametrize("n", [0, 1, 5, 1000])
async def test_stream_counter(rt: Runtime, wasm: dict[str, bytes], n: int) -> None:
    name = await deploy(rt, wasm, "stream_counter")
    chunks = [chunk async for chunk in rt.stream(name, str(n).encode())]
    assert chunks == [f"{i}\n".encode() for i in range(1, n + 1)]
    assert await rt.invoke(name, str(n).encode()) == b"".join(chunks)


@pytest.mark.trio
async def test_stream_counter_inline(rt: Runtime, wasm: dict[str, bytes]) -> None:
    name = await deploy(rt, wasm, "stream_counter", mode="inline", timeout=5.0)
    chunks = [chunk async for chunk in rt.stream(name, b" 3\n")]
    assert chunks == [b"1\n", b"2\n", b"3\n"]


@pytest.mark.trio
@pytest.mark.parametrize("payload", [b"", b"abc", b"-1", b"12x", b"99999999999999999999"])
async def test_stream_counter_rejects_bad_payload(rt: Runtime, wasm: dict[str, bytes], payload: bytes) -> None:
    name = await deploy(rt, wasm, "stream_counter")
    with pytest.raises(GuestError, match="non-negative decimal integer"):
        await rt.invoke(name, payload)
    assert await rt.invoke(name, b"2") == b"1\n2\n"  # the actor lives


# --- upper (a WASI command) ------------------------------------------------------


def text_without_bang(n: int) -> bytes:
    """Every byte value but '!' (lower case letters, upper case, digits, high bytes)."""
    return bytes(b for b in pattern(n + n // 200 + 1) if b != ord("!"))[:n]


@pytest.mark.trio
async def test_upper_streams_chunks(rt: Runtime, wasm: dict[str, bytes], caplog: pytest.LogCaptureFixture) -> None:
    await rt.deploy("upper", wasm["upper"])
    caplog.set_level(logging.WARNING, logger="wasmhive.guest")
    payload = text_without_bang(50_000)  # the program reads and writes 4 KiB at a time
    chunks = [chunk async for chunk in rt.stream("upper", payload)]
    assert len(chunks) > 1, [len(c) for c in chunks]
    assert b"".join(chunks) == payload.upper()
    assert b"".join(chunks) != payload
    assert any("upper: 50000 bytes" in r.getMessage() for r in caplog.records)  # its stderr line
    assert await rt.invoke("upper", b"hello, c command") == b"HELLO, C COMMAND"
    assert await rt.invoke("upper", b"") == b""


@pytest.mark.trio
async def test_upper_inline(rt: Runtime, wasm: dict[str, bytes]) -> None:
    await rt.deploy("upper", wasm["upper"], mode="inline", timeout=5.0)
    payload = text_without_bang(10_000)
    assert await rt.invoke("upper", payload) == payload.upper()


@pytest.mark.trio
async def test_upper_bad_input_exits_7(rt: Runtime, wasm: dict[str, bytes]) -> None:
    await rt.deploy("upper", wasm["upper"])
    (ref,) = rt.actors("upper")
    with pytest.raises(GuestError) as info:
        await rt.invoke("upper", b"hello!")
    assert info.value.details["exit_code"] == 7
    assert "bad input" in info.value.message and "status 7" in info.value.message
    # The chunks written before the '!' was read still arrive, then the error.
    chunks: list[bytes] = []
    with pytest.raises(GuestError, match="bad input"):
        async for chunk in rt.stream("upper", b"a" * 10_000 + b"!"):
            chunks.append(chunk)
    assert b"".join(chunks) == b"A" * 8192
    # The actor lives on.
    assert rt.actors("upper") == [ref] and rt.state(ref) is ActorState.IDLE
    assert await rt.invoke("upper", b"still here") == b"STILL HERE"


# --- kv_counter ------------------------------------------------------------------


@pytest.mark.trio
async def test_kv_counter_counts(rt: Runtime, wasm: dict[str, bytes]) -> None:
    name = await deploy(rt, wasm, "kv_counter")
    assert [await rt.invoke(name, b"") for _ in range(3)] == [b"1", b"2", b"3"]
    assert rt.kv.get(name, "count") == b"3"
    assert await rt.invoke(name, b"other") == b"1"
    assert rt.kv.get(name, "other") == b"1"
    rt.kv.set(name, "count", b"41")  # the host's writes are seen
    assert await rt.invoke(name, b"") == b"42"


@pytest.mark.trio
async def test_kv_counter_type_error_fails_the_call(rt: Runtime, wasm: dict[str, bytes]) -> None:
    name = await deploy(rt, wasm, "kv_counter")
    rt.kv.set(name, "count", b"not a number")
    with pytest.raises(GuestError, match="type_error"):
        await rt.invoke(name, b"")


@pytest.mark.trio
async def test_kv_counter_concurrent_instances(rt: Runtime, wasm: dict[str, bytes]) -> None:
    name = await deploy(rt, wasm, "kv_counter", instances=4)
    replies: list[int] = []

    async def one() -> None:
        replies.append(int(await rt.invoke(name, b"")))

    async with trio.open_nursery() as nursery:
        for _ in range(100):
            nursery.start_soon(one)
    assert sorted(replies) == list(range(1, 101))
    assert rt.kv.get(name, "count") == b"100"


# --- the arena -------------------------------------------------------------------


@pytest.mark.trio
@pytest.mark.parametrize("size", [0, 1, 100, 70_000, 300_000, 2_000_000])
async def test_arena_survives_host_calls_during_a_call(rt: Runtime, wasm: dict[str, bytes], size: int) -> None:
    # The guest fills an arena allocation, makes host calls whose results the
    # host writes into memory from a nested wh_alloc (one as large as the
    # allocation), then checks that nothing it holds was overwritten.
    name = await deploy(rt, wasm, "sdk_test")
    for call in range(1, 4):
        count, used, capacity = map(int, (await rt.invoke(name, f"arena {size}".encode())).split())
        assert count == call
        assert used >= 2 * size and capacity >= used


@pytest.mark.trio
async def test_arena_keeps_a_big_payload_intact(rt: Runtime, wasm: dict[str, bytes]) -> None:
    name = await deploy(rt, wasm, "sdk_test")
    payload = b"arena 100000" + b" " * 1_500_000  # trailing whitespace is ignored by the parser
    count, _, _ = map(int, (await rt.invoke(name, payload)).split())
    assert count == 1


@pytest.mark.trio
async def test_arena_capacity_settles(rt: Runtime, wasm: dict[str, bytes]) -> None:
    # After a call the arena keeps one block as large as the call needed:
    # repeating the same call does not grow it further.
    name = await deploy(rt, wasm, "sdk_test")
    capacities = [int((await rt.invoke(name, b"arena 500000")).split()[2]) for _ in range(6)]
    assert len(set(capacities[2:])) == 1, capacities
    used, capacity = map(int, (await rt.invoke(name, b"stats")).split())
    assert 0 < used <= 64 and capacity == capacities[-1]


@pytest.mark.trio
@pytest.mark.parametrize("size", [0, 1000, 100_000, 3_000_000])
async def test_reply_built_from_many_allocations(rt: Runtime, wasm: dict[str, bytes], size: int) -> None:
    name = await deploy(rt, wasm, "sdk_test")
    expected = bytes(i % 251 for i in range(size))
    for _ in range(2):
        assert await rt.invoke(name, f"pieces {size}".encode()) == expected


@pytest.mark.trio
async def test_arena_alloc_returns_null_when_memory_runs_out(rt: Runtime, wasm: dict[str, bytes]) -> None:
    name = await deploy(rt, wasm, "sdk_test", memory_limit=8 << 20)
    assert await rt.invoke(name, b"oom 100000000") == b"null"
    assert await rt.invoke(name, b"oom 4294967295") == b"null"
    assert await rt.invoke(name, b"oom 1000") == b"allocated"


@pytest.mark.trio
async def test_host_calls_work_in_wh_init(rt: Runtime, wasm: dict[str, bytes]) -> None:
    # wh_init makes several host calls; each result stays valid across the next.
    name = await deploy(rt, wasm, "sdk_test")
    assert await rt.invoke(name, b"init") == b"1"
    assert rt.kv.get(name, "inits") == b"1"
    assert rt.kv.get(name, "init-key") == b"init-value"


# --- fail and log ----------------------------------------------------------------


@pytest.mark.trio
async def test_fail_is_guest_error_and_the_actor_lives(rt: Runtime, wasm: dict[str, bytes]) -> None:
    name = await deploy(rt, wasm, "sdk_test")
    (before,) = rt.actors(name)
    with pytest.raises(GuestError, match="something went wrong"):
        await rt.invoke(name, b"fail something went wrong")
    with pytest.raises(GuestError) as info:
        await rt.invoke(name, b"fail caf\xc3\xa9 \xff")
    assert "café \ufffd" in str(info.value)
    with pytest.raises(GuestError, match="handler returned 7"):
        await rt.invoke(name, b"failrc")
    with pytest.raises(GuestError, match="unknown command"):
        await rt.invoke(name, b"no-such-command")
    assert await rt.invoke(name, b"parse -12") == b"-12"
    assert rt.actors(name) == [before]


@pytest.mark.trio
@pytest.mark.parametrize(
    ("level", "py_level"),
    [(0, logging.DEBUG), (1, logging.DEBUG), (2, logging.INFO), (3, logging.WARNING), (4, logging.ERROR)],
)
async def test_log(
    rt: Runtime, wasm: dict[str, bytes], caplog: pytest.LogCaptureFixture, level: int, py_level: int
) -> None:
    name = await deploy(rt, wasm, "sdk_test")
    caplog.set_level(logging.DEBUG, logger="wasmhive.guest")
    assert await rt.invoke(name, f"log {level} hello from C at {level}".encode()) == b"logged"
    records = [r for r in caplog.records if r.name == "wasmhive.guest"]
    assert len(records) == 1
    (record,) = records
    assert record.levelno == py_level
    assert f"hello from C at {level}" in record.getMessage()
    assert record.wasmhive_function == name  # type: ignore[attr-defined]
    (ref,) = rt.actors(name)
    assert record.wasmhive_actor == ref.id  # type: ignore[attr-defined]


@pytest.mark.trio
async def test_logf_and_log_host_call(rt: Runtime, wasm: dict[str, bytes], caplog: pytest.LogCaptureFixture) -> None:
    name = await deploy(rt, wasm, "sdk_test")
    caplog.set_level(logging.DEBUG, logger="wasmhive.guest")
    await rt.invoke(name, b"logf tail")
    await rt.invoke(name, b"loghost 4 via the host call")
    long_line = "y" * 20_000
    await rt.invoke(name, f"log 2 {long_line}".encode())
    records = [r for r in caplog.records if r.name == "wasmhive.guest"]
    assert len(records) == 3
    assert records[0].levelno == logging.INFO and "formatted 42 text tail" in records[0].getMessage()
    assert records[1].levelno == logging.ERROR and "via the host call" in records[1].getMessage()
    assert "y" * 8192 in records[2].getMessage() and "y" * 8193 not in records[2].getMessage()


# --- kv, time, random, errors through the SDK -------------------------------------


@pytest.mark.trio
async def test_kv_wrappers(rt: Runtime, wasm: dict[str, bytes]) -> None:
    name = await deploy(rt, wasm, "sdk_test")
    assert await rt.invoke(name, b"kvget k") == b"<absent>"
    assert await rt.invoke(name, b"kvset k 0 some value") == b"set"
    assert rt.kv.get(name, "k") == b"some value"
    assert await rt.invoke(name, b"kvget k") == b"some value"
    assert await rt.invoke(name, b"kvset empty 0") == b"set"
    assert await rt.invoke(name, b"kvget empty") == b""
    big = pattern(200_000)
    assert await rt.invoke(name, b"kvset big 0 " + big) == b"set"
    assert rt.kv.get(name, "big") == big
    assert await rt.invoke(name, b"kvget big") == big
    assert await rt.invoke(name, b"kvdel k") == b"1"
    assert await rt.invoke(name, b"kvdel k") == b"0"
    assert await rt.invoke(name, b"kvget k") == b"<absent>"
    assert await rt.invoke(name, b"incr n 5") == b"5"
    assert await rt.invoke(name, b"incr n -7") == b"-2"
    assert await rt.invoke(name, b"incr n -9223372036854775806") == b"-9223372036854775808"
    with pytest.raises(GuestError, match="type_error"):
        await rt.invoke(name, b"incr big 1")


@pytest.mark.trio
async def test_kv_set_with_ttl(rt: Runtime, wasm: dict[str, bytes]) -> None:
    name = await deploy(rt, wasm, "sdk_test")
    assert await rt.invoke(name, b"kvset short 0.05 v") == b"set"
    assert await rt.invoke(name, b"kvset long 60 v") == b"set"
    assert await rt.invoke(name, b"kvget short") == b"v"
    with trio.fail_after(10):
        while await rt.invoke(name, b"kvget short") != b"<absent>":
            await trio.sleep(0.02)
    assert await rt.invoke(name, b"kvget long") == b"v"


@pytest.mark.trio
async def test_time(rt: Runtime, wasm: dict[str, bytes]) -> None:
    name = await deploy(rt, wasm, "sdk_test")
    before = time.time_ns()
    wall, mono = map(int, (await rt.invoke(name, b"time")).split())
    after = time.time_ns()
    assert before <= wall <= after
    wall2, mono2 = map(int, (await rt.invoke(name, b"time")).split())
    assert mono2 >= mono > 0 and wall2 >= wall


@pytest.mark.trio
@pytest.mark.parametrize("n", [0, 1, 32, 65536, 65537, 200_000])
async def test_random_bytes(rt: Runtime, wasm: dict[str, bytes], n: int) -> None:
    name = await deploy(rt, wasm, "sdk_test")
    first = await rt.invoke(name, f"random {n}".encode())
    second = await rt.invoke(name, f"random {n}".encode())
    assert len(first) == len(second) == n
    if n >= 16:
        assert first != second


@pytest.mark.trio
async def test_host_error_result(rt: Runtime, wasm: dict[str, bytes]) -> None:
    name = await deploy(rt, wasm, "sdk_test")
    assert await rt.invoke(name, b"unknownop") == b"-1 0 unknown_op|unknown host call operation 'no.such.op'"


# --- msgpack reader and writer ----------------------------------------------------

MSGPACK_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    127,
    128,
    255,
    256,
    65535,
    65536,
    2**32 - 1,
    2**32,
    2**63 - 1,
    -1,
    -32,
    -33,
    -128,
    -129,
    -32768,
    -32769,
    -(2**31),
    -(2**31) - 1,
    -(2**63),
    0.0,
    -1.5,
    math.pi,
    1e300,
    "",
    "a" * 31,
    "b" * 32,
    "c" * 255,
    "d" * 256,
    "é" * 40_000,
    b"",
    b"\x00" * 255,
    b"\x01" * 256,
    pattern(70_000),
    [],
    list(range(15)),
    list(range(16)),
    list(range(70_000)),
    {},
    {str(i): i for i in range(15)},
    {str(i): [i, str(i), bytes([i % 256])] for i in range(16)},
    {"nested": {"deep": [[[[{"x": [None, True, {"y": b"z"}]}]]]]}},
    {str(i): None for i in range(70_000)},
]


@pytest.mark.trio
async def test_msgpack_roundtrip(rt: Runtime, wasm: dict[str, bytes]) -> None:
    # The guest walks the value with the reader and writes it back with the
    # writer; both use the shortest encodings, as msgspec does: the same bytes.
    name = await deploy(rt, wasm, "sdk_test")
    for value in MSGPACK_VALUES:
        encoded = msgspec.msgpack.encode(value)
        assert await rt.invoke(name, b"mp " + encoded) == encoded, repr(value)[:80]


@pytest.mark.trio
@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xc1",
        b"\x92\x01",  # array of 2 with one item
        b"\xa5abc",  # truncated str
        b"\xdb\xff\xff\xff\xff",  # huge str length
        b"\xdf\xff\xff\xff\xff",  # huge map
        b"\x91" * 100_000,  # deeply nested, then truncated
        b"\x01\x02",  # trailing bytes
    ],
)
async def test_msgpack_reader_rejects_malformed_input(rt: Runtime, wasm: dict[str, bytes], raw: bytes) -> None:
    name = await deploy(rt, wasm, "sdk_test")
    with pytest.raises(GuestError):
        await rt.invoke(name, b"mp " + raw)
    assert await rt.invoke(name, b"mp \x01") == b"\x01"  # the actor lives


@pytest.mark.trio
async def test_msgpack_map_find(rt: Runtime, wasm: dict[str, bytes]) -> None:
    name = await deploy(rt, wasm, "sdk_test")
    doc = msgspec.msgpack.encode({"a": 1, "list": [1, {"x": 2}], "key": {"inner": b"v"}, "k": "not key"})
    assert msgspec.msgpack.decode(await rt.invoke(name, b"find key " + doc)) == {"inner": b"v"}
    assert msgspec.msgpack.decode(await rt.invoke(name, b"find list " + doc)) == [1, {"x": 2}]
    assert await rt.invoke(name, b"find x " + doc) == b"<absent>"
    assert await rt.invoke(name, b"find ke " + doc) == b"<absent>"


@pytest.mark.trio
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"0", b"0"),
        (b"  42\n", b"42"),
        (b"+7", b"7"),
        (b"-9223372036854775808", b"-9223372036854775808"),
        (b"9223372036854775807", b"9223372036854775807"),
        (b"9223372036854775808", b"invalid"),
        (b"-9223372036854775809", b"invalid"),
        (b"", b"invalid"),
        (b"-", b"invalid"),
        (b"1 2", b"invalid"),
    ],
)
async def test_parse_i64(rt: Runtime, wasm: dict[str, bytes], text: bytes, expected: bytes) -> None:
    name = await deploy(rt, wasm, "sdk_test", mode="inline", timeout=5.0)
    assert await rt.invoke(name, b"parse " + text) == expected


# --- secret.get and http.fetch ------------------------------------------------------


def _skip_if_unknown(reply: bytes, op: str) -> None:
    if reply == b"error unknown_op":
        pytest.skip(f"this host does not implement the {op} host call yet (it answered unknown_op)")


@pytest.mark.trio
async def test_secret_get(config: RuntimeConfig, wasm: dict[str, bytes]) -> None:
    try:
        from wasmhive.runtime import SecretStore
    except ImportError:
        pytest.skip("this host has no SecretStore (secret.get not implemented yet)")
    store = SecretStore({"API_TOKEN": "s3cr3t-value", "EMPTY": "", "OTHER": "not for this guest"})
    async with Runtime(config, secrets=store) as rt:
        try:
            await rt.deploy("s", wasm["sdk_test"], secrets=["API_TOKEN", "EMPTY"])
        except TypeError:
            pytest.skip("Runtime.deploy does not take secrets= yet")
        reply = await rt.invoke("s", b"secret 64 API_TOKEN")
        _skip_if_unknown(reply, "secret.get")
        assert reply == b"s3cr3t-value"
        assert await rt.invoke("s", b"secret 13 API_TOKEN") == b"s3cr3t-value"  # exactly room for the NUL
        assert await rt.invoke("s", b"secret 12 API_TOKEN") == b"-5"  # WH_ERR_TOOSMALL
        assert await rt.invoke("s", b"secret 1 EMPTY") == b""
        assert await rt.invoke("s", b"secret 64 OTHER") == b"error not_granted"
        assert await rt.invoke("s", b"secret 64 NOPE") == b"error not_granted"


@pytest.mark.trio
async def test_secret_get_without_grant(rt: Runtime, wasm: dict[str, bytes]) -> None:
    name = await deploy(rt, wasm, "sdk_test")
    reply = await rt.invoke(name, b"secret 64 ANYTHING")
    _skip_if_unknown(reply, "secret.get")
    assert reply.startswith(b"error ")
    assert reply != b"error unknown_op"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        if self.path == "/hello":
            self._send(200, b"hello from python")
        elif self.path == "/big":
            self._send(200, pattern(1_000_000))
        elif self.path == "/empty":
            self._send(204, b"")
        else:
            self._send(404, b"not here")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._send(201, body[::-1], echo=self.headers.get("X-Wasmhive", "<none>"))

    def _send(self, status: int, body: bytes, echo: str | None = None) -> None:
        self.send_response(status)
        if echo is not None:
            self.send_header("X-Echo", echo)
        if status != 204:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def http_server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


async def _deploy_fetcher(rt: Runtime, wasm: dict[str, bytes], module: str) -> str:
    try:
        from wasmhive.runtime import FetchPolicy
    except ImportError:
        pytest.skip("this host has no FetchPolicy (http.fetch not implemented yet)")
    try:
        await rt.deploy(module, wasm[module], fetch=FetchPolicy(allow_networks=("127.0.0.0/8",)))
    except TypeError:
        pytest.skip("Runtime.deploy does not take fetch= yet")
    return module


@pytest.mark.trio
async def test_fetch_example(rt: Runtime, wasm: dict[str, bytes], http_server: str) -> None:
    name = await _deploy_fetcher(rt, wasm, "fetch")
    try:
        reply = await rt.invoke(name, f"{http_server}/hello".encode())
    except GuestError as exc:
        if "unknown_op" in str(exc):
            pytest.skip("this host does not implement http.fetch yet (it answered unknown_op)")
        raise
    assert reply == b"200\nhello from python"
    assert await rt.invoke(name, f"{http_server}/missing".encode()) == b"404\nnot here"
    assert await rt.invoke(name, f"{http_server}/empty".encode()) == b"204\n"
    assert await rt.invoke(name, f"{http_server}/big".encode()) == b"200\n" + pattern(1_000_000)
    with pytest.raises(GuestError, match="bad_request"):
        await rt.invoke(name, b"not a url")


@pytest.mark.trio
async def test_fetch_needs_a_grant(rt: Runtime, wasm: dict[str, bytes], http_server: str) -> None:
    name = await deploy(rt, wasm, "fetch")
    with pytest.raises(GuestError) as info:
        await rt.invoke(name, f"{http_server}/hello".encode())
    if "unknown_op" in str(info.value):
        pytest.skip("this host does not implement http.fetch yet (it answered unknown_op)")
    assert "not_granted" in str(info.value)


@pytest.mark.trio
async def test_fetch_post_with_headers_and_relay(rt: Runtime, wasm: dict[str, bytes], http_server: str) -> None:
    name = await _deploy_fetcher(rt, wasm, "sdk_test")
    reply = await rt.invoke(name, f"post {http_server}/echo payload bytes".encode())
    _skip_if_unknown(reply, "http.fetch")
    assert reply == b"201 c-sdk\n" + b"payload bytes"[::-1]
    chunks = [chunk async for chunk in rt.stream(name, f"relay {http_server}/hello".encode())]
    *relayed, last = chunks
    assert b"".join(relayed) == b"hello from python"
    assert last == b"200 0"
