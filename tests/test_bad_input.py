"""Bad modules, bad guests, bad options and bad calls: typed errors, and the runtime keeps serving."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import wasmtime
from guests import (
    BAD_EMIT,
    BAD_REPLY,
    ECHO,
    EMIT_THREE,
    FOREIGN_IMPORT,
    NO_HANDLE,
    UNKNOWN_IMPORT,
    WRONG_HANDLE,
)
from helpers import settled

from wasmhive.runtime import (
    AbiError,
    AlreadyDeployed,
    GuestFault,
    InvalidConfig,
    InvalidModule,
    PayloadTooLarge,
    Runtime,
    RuntimeConfig,
    UnknownFunction,
    WasmhiveError,
)


async def echo_still_answers(rt: Runtime, name: str = "echo") -> None:
    """The ECHO function deployed before the failure still answers."""
    assert await rt.invoke(name, b"ping") == b"ping"
    assert rt.stats().functions[name].crashes == 0


async def with_echo(rt: Runtime) -> Runtime:
    await rt.deploy("echo", ECHO.encode())
    return rt


def check_error(exc: BaseException, cls: type[WasmhiveError], function: str) -> WasmhiveError:
    assert isinstance(exc, WasmhiveError)
    assert type(exc) is cls
    assert exc.function == function
    assert str(exc).startswith(f"{function}: ")
    assert exc.message
    return exc


# --- modules that are not usable -------------------------------------------------------


@pytest.mark.trio
@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x01\x02garbage\xff\xfe",
        b"",
        b"   \n\t ",
        b"\x89PNG\r\n\x1a\n" + bytes(100),
    ],
    ids=["binary-junk", "empty", "whitespace", "png"],
)
async def test_non_wasm_bytes(rt: Runtime, data: bytes) -> None:
    await with_echo(rt)
    with pytest.raises(InvalidModule) as info:
        await rt.deploy("junk", data)
    check_error(info.value, InvalidModule, "junk")
    assert "wasm" in info.value.message.lower()
    assert "junk" not in rt.functions()
    await echo_still_answers(rt)


@pytest.mark.trio
@pytest.mark.parametrize(
    "text",
    ["(module (func", "hello world", "(module (memory (export \"memory\") 1) (func (export \"x\") (i32.add)))"],
    ids=["unclosed", "prose", "type-error"],
)
async def test_garbage_wat(rt: Runtime, text: str) -> None:
    await with_echo(rt)
    with pytest.raises(InvalidModule) as info:
        await rt.deploy("wat", text.encode())
    check_error(info.value, InvalidModule, "wat")
    assert "\n" not in info.value.message
    await echo_still_answers(rt)


@pytest.mark.trio
async def test_wasm_magic_but_invalid_body(rt: Runtime) -> None:
    await with_echo(rt)
    with pytest.raises(InvalidModule) as info:
        await rt.deploy("broken", b"\0asm\x01\x00\x00\x00\x01\xff\xff\xff")
    check_error(info.value, InvalidModule, "broken")
    assert "validate" in info.value.message
    await echo_still_answers(rt)


@pytest.mark.trio
async def test_truncated_wasm(rt: Runtime) -> None:
    await with_echo(rt)
    wasm = wasmtime.wat2wasm(ECHO)
    with pytest.raises(InvalidModule) as info:
        await rt.deploy("cut", wasm[: len(wasm) // 2])
    check_error(info.value, InvalidModule, "cut")
    await echo_still_answers(rt)


@pytest.mark.trio
@pytest.mark.parametrize(
    ("guest", "named"),
    [
        (NO_HANDLE, "wh_handle"),
        (WRONG_HANDLE, "wh_handle"),
        (UNKNOWN_IMPORT, "teleport"),
        (FOREIGN_IMPORT, "env.abort"),
        ("(module (func (export \"wh_alloc\") (param i32) (result i32) (i32.const 0)))", "memory"),
        (
            """(module (memory (export "memory") 1)
                 (func (export "wh_handle") (param i32 i32) (result i64) (i64.const 0)))""",
            "wh_alloc",
        ),
        (
            """(module (memory (export "memory") 1)
                 (func (export "wh_alloc") (param i32) (result i32) (i32.const 0))
                 (func (export "wh_handle") (param i32 i32) (result i64) (i64.const 0))
                 (func (export "wh_init") (param i32)))""",
            "wh_init",
        ),
        (
            """(module (import "wasmhive" "emit" (func (param i32)))
                 (memory (export "memory") 1)
                 (func (export "wh_alloc") (param i32) (result i32) (i32.const 0))
                 (func (export "wh_handle") (param i32 i32) (result i64) (i64.const 0)))""",
            "wasmhive.emit",
        ),
    ],
    ids=["no-handle", "wrong-handle", "unknown-import", "foreign-import", "no-memory", "no-alloc", "bad-init",
         "mistyped-import"],
)
async def test_abi_violating_modules(rt: Runtime, guest: str, named: str) -> None:
    await with_echo(rt)
    with pytest.raises(InvalidModule) as info:
        await rt.deploy("abi", guest.encode())
    check_error(info.value, InvalidModule, "abi")
    assert named in info.value.message
    assert "abi" not in rt.functions()
    await echo_still_answers(rt)
    # the name is free again after the failure
    await rt.deploy("abi", ECHO.encode())
    assert await rt.invoke("abi", b"now fine") == b"now fine"


@pytest.mark.trio
async def test_initial_memory_over_limit(rt: Runtime) -> None:
    await with_echo(rt)
    big = ECHO.replace('(memory (export "memory") 1)', '(memory (export "memory") 32)')
    assert big != ECHO
    with pytest.raises(InvalidModule) as info:
        await rt.deploy("big", big.encode(), memory_limit=1 << 20)
    check_error(info.value, InvalidModule, "big")
    assert "memory_limit" in info.value.message
    await echo_still_answers(rt)


@pytest.mark.trio
async def test_trapping_init(rt: Runtime) -> None:
    await with_echo(rt)
    guest = """(module (memory (export "memory") 1)
      (func (export "wh_alloc") (param i32) (result i32) (i32.const 0))
      (func (export "wh_handle") (param i32 i32) (result i64) (i64.const 0))
      (func (export "wh_init") (unreachable)))"""
    with pytest.raises(InvalidModule) as info:
        await rt.deploy("init", guest.encode())
    check_error(info.value, InvalidModule, "init")
    assert "GuestTrap" in info.value.message
    assert "init" not in rt.functions()
    assert rt.stats().actors == 1
    await echo_still_answers(rt)


@pytest.mark.trio
@pytest.mark.parametrize("kind", ["missing", "directory"])
async def test_unreadable_path(rt: Runtime, tmp_path: Path, kind: str) -> None:
    await with_echo(rt)
    path = tmp_path / "nope.wasm" if kind == "missing" else tmp_path
    for source in (str(path), path):
        with pytest.raises(InvalidModule) as info:
            await rt.deploy("file", source)
        check_error(info.value, InvalidModule, "file")
        assert str(path) in info.value.message
    await echo_still_answers(rt)


@pytest.mark.trio
async def test_module_from_path_works(rt: Runtime, tmp_path: Path) -> None:
    """Control for test_unreadable_path: the same call with a real file succeeds."""
    wat = tmp_path / "echo.wat"
    wat.write_text(ECHO)
    wasm = tmp_path / "echo.wasm"
    wasm.write_bytes(wasmtime.wat2wasm(ECHO))
    await rt.deploy("from-wat", str(wat))
    await rt.deploy("from-wasm", wasm)
    assert await rt.invoke("from-wat", b"a") == b"a"
    assert await rt.invoke("from-wasm", b"b") == b"b"


# --- guests that break the ABI at run time -------------------------------------------------


@pytest.mark.trio
@pytest.mark.parametrize(("guest", "word"), [(BAD_REPLY, "outside"), (BAD_EMIT, "emit")], ids=["bad-reply", "bad-emit"])
async def test_abi_error_at_call_time(rt: Runtime, guest: str, word: str) -> None:
    await with_echo(rt)
    await rt.deploy("bad", guest.encode())
    for round_ in (1, 2):
        with pytest.raises(AbiError) as info:
            await rt.invoke("bad", b"payload")
        err = check_error(info.value, AbiError, "bad")
        assert isinstance(err, GuestFault) and err.fatal
        assert word in err.message
        await settled(rt, "bad")
        stats = rt.stats().functions["bad"]
        assert stats.crashes == round_
        assert stats.instances == 1  # replaced
        await echo_still_answers(rt)


@pytest.mark.trio
async def test_bad_emit_through_stream(rt: Runtime) -> None:
    await with_echo(rt)
    await rt.deploy("bad", BAD_EMIT.encode())
    chunks = []
    with pytest.raises(AbiError):
        async for chunk in rt.stream("bad", b"x"):
            chunks.append(chunk)
    assert chunks == []
    await echo_still_answers(rt)


# --- payloads -----------------------------------------------------------------------------


@pytest.fixture
def small_config(cache_dir: Path) -> RuntimeConfig:
    return RuntimeConfig(cache_dir=str(cache_dir), max_payload_bytes=1024)


@pytest.mark.trio
async def test_payload_too_large(small_config: RuntimeConfig) -> None:
    async with Runtime(small_config) as rt:
        await with_echo(rt)
        assert await rt.invoke("echo", b"x" * 1024) == b"x" * 1024
        for payload in (b"x" * 1025, bytearray(5000)):
            with pytest.raises(PayloadTooLarge) as info:
                await rt.invoke("echo", payload)  # type: ignore[arg-type]
            err = check_error(info.value, PayloadTooLarge, "echo")
            assert isinstance(err, PayloadTooLarge)
            assert err.size == len(payload)
            assert err.limit == 1024
            assert not err.fatal
        with pytest.raises(PayloadTooLarge) as info:
            async for _ in rt.stream("echo", b"y" * 2048):
                pass  # pragma: no cover
        assert info.value.size == 2048 and info.value.limit == 1024
        # rejected before reaching the actor: nothing counted, nothing crashed
        stats = rt.stats().functions["echo"]
        assert stats.calls == 1 and stats.failures == 0
        await echo_still_answers(rt)


@pytest.mark.trio
async def test_emitted_chunk_too_large(small_config: RuntimeConfig) -> None:
    """EMIT_THREE emits the payload: a payload at the limit is fine, and its chunks too."""
    async with Runtime(small_config) as rt:
        await with_echo(rt)
        await rt.deploy("emit", EMIT_THREE.encode())
        assert await rt.invoke("emit", b"z" * 1024) == b"z" * 3072 + b"end"
        await echo_still_answers(rt)


@pytest.mark.trio
async def test_reply_too_large(small_config: RuntimeConfig) -> None:
    async with Runtime(small_config) as rt:
        await with_echo(rt)
        # replies with 4096 bytes of its own memory
        big_reply = ECHO.replace(
            "(i64.extend_i32_u (local.get $len))", "(i64.extend_i32_u (i32.const 4096))"
        )
        assert big_reply != ECHO
        await rt.deploy("big", big_reply.encode())
        with pytest.raises(PayloadTooLarge) as info:
            await rt.invoke("big", b"q")
        err = check_error(info.value, PayloadTooLarge, "big")
        assert isinstance(err, PayloadTooLarge) and err.size == 4096 and err.limit == 1024
        # not fatal: the same actor serves the next call
        assert rt.stats().functions["big"].crashes == 0
        await echo_still_answers(rt)


@pytest.mark.trio
@pytest.mark.parametrize("payload", ["text", 123, None, [1, 2]], ids=["str", "int", "none", "list"])
async def test_non_bytes_payload(rt: Runtime, payload: Any) -> None:
    await with_echo(rt)
    with pytest.raises(TypeError):
        await rt.invoke("echo", payload)
    await echo_still_answers(rt)


@pytest.mark.trio
async def test_bytes_like_payloads(rt: Runtime) -> None:
    await with_echo(rt)
    assert await rt.invoke("echo", bytearray(b"ba")) == b"ba"  # type: ignore[arg-type]
    assert await rt.invoke("echo", memoryview(b"mv")) == b"mv"  # type: ignore[arg-type]


# --- names ----------------------------------------------------------------------------------


@pytest.mark.trio
async def test_unknown_function(rt: Runtime) -> None:
    await with_echo(rt)
    with pytest.raises(UnknownFunction) as info:
        await rt.invoke("nope", b"x")
    check_error(info.value, UnknownFunction, "nope")
    assert "echo" in info.value.message  # lists what is deployed
    with pytest.raises(UnknownFunction):
        async for _ in rt.stream("nope", b"x"):
            pass  # pragma: no cover
    with pytest.raises(UnknownFunction) as info:
        await rt.undeploy("nope")
    check_error(info.value, UnknownFunction, "nope")
    with pytest.raises(UnknownFunction):
        rt.actors("nope")
    await echo_still_answers(rt)


@pytest.mark.trio
async def test_undeployed_function_is_unknown(rt: Runtime) -> None:
    await with_echo(rt)
    await rt.deploy("gone", ECHO.encode())
    await rt.undeploy("gone")
    with pytest.raises(UnknownFunction):
        await rt.invoke("gone", b"x")
    await echo_still_answers(rt)


@pytest.mark.trio
async def test_already_deployed(rt: Runtime) -> None:
    await with_echo(rt)
    (ref,) = rt.actors("echo")
    for module in (ECHO.encode(), EMIT_THREE.encode()):
        with pytest.raises(AlreadyDeployed) as info:
            await rt.deploy("echo", module)
        check_error(info.value, AlreadyDeployed, "echo")
    # the original deployment is untouched
    assert rt.actors("echo") == [ref]
    await echo_still_answers(rt)


@pytest.mark.trio
@pytest.mark.parametrize("name", ["", "-leading-dash", "has space", "x" * 65, "slash/name", "ünïcode"])
async def test_invalid_function_name(rt: Runtime, name: str) -> None:
    await with_echo(rt)
    with pytest.raises(InvalidConfig):
        await rt.deploy(name, ECHO.encode())
    assert rt.functions() == ["echo"]
    await echo_still_answers(rt)


# --- options --------------------------------------------------------------------------------


@pytest.mark.trio
@pytest.mark.parametrize(
    "options",
    [
        {"timeout": -1},
        {"timeout": 0},
        {"instances": 0},
        {"mode": "bogus"},
        {"memory_limit": 10},
        {"overflow": "explode"},
        {"mailbox_size": -1},
        {"mailbox_wait": -0.5},
        {"fuel": 0},
        {"timeout": "soon"},
    ],
    ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()),
)
async def test_invalid_options(rt: Runtime, options: dict[str, Any]) -> None:
    await with_echo(rt)
    with pytest.raises(InvalidConfig) as info:
        await rt.deploy("opt", ECHO.encode(), **options)
    err = info.value
    assert isinstance(err, WasmhiveError)
    assert next(iter(options)) in err.message  # names the option
    assert "opt" not in rt.functions()
    await echo_still_answers(rt)
    # the name is free: the same deploy with valid options works
    await rt.deploy("opt", ECHO.encode())
    assert await rt.invoke("opt", b"ok") == b"ok"


@pytest.mark.trio
@pytest.mark.parametrize(
    "options",
    [{"timeout": -1}, {"instances": 0}, {"mode": "bogus"}, {"memory_limit": 10}],
    ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()),
)
async def test_invalid_options_name_the_function(rt: Runtime, options: dict[str, Any]) -> None:
    """Every error a user can cause names the function it concerns (errors.py, WasmhiveError)."""
    with pytest.raises(InvalidConfig) as info:
        await rt.deploy("opt", ECHO.encode(), **options)
    assert info.value.function == "opt"


@pytest.mark.trio
async def test_fuel_needs_fuel_enabled(cache_dir: Path) -> None:
    async with Runtime(RuntimeConfig(cache_dir=str(cache_dir), fuel=False)) as rt:
        await with_echo(rt)
        with pytest.raises(InvalidConfig) as info:
            await rt.deploy("fuelled", ECHO.encode(), fuel=1000)
        check_error(info.value, InvalidConfig, "fuelled")
        await echo_still_answers(rt)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"epoch_tick": 0},
        {"max_payload_bytes": 0},
        {"memory_reservation": -1},
        {"shutdown_grace": -1},
    ],
    ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()),
)
def test_invalid_runtime_config(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidConfig) as info:
        RuntimeConfig(**kwargs)
    assert next(iter(kwargs)) in info.value.message


def test_every_public_error_is_a_wasmhive_error() -> None:
    import wasmhive.runtime as public

    names = [n for n in public.__all__ if isinstance(getattr(public, n), type)]
    errors = [getattr(public, n) for n in names if issubclass(getattr(public, n), BaseException)]
    assert len(errors) >= 15
    for cls in errors:
        assert issubclass(cls, WasmhiveError), cls
        exc = cls("m", function="f")
        assert exc.function == "f"
