"""Host calls of ABI v1, driven from Python through the HOST_PROXY guest, plus log/emit/WASI."""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec
import pytest
from guests import BAD_HOST_CALL, ECHO, HOST_PROXY, LOGGER, WASI_STDOUT
from helpers import settled

from wasmhive.runtime import AbiError, MemoryKeyValueStore, Runtime, RuntimeConfig


async def call(rt: Runtime, name: str, request: Any) -> dict[str, Any]:
    """Send one host-call request through a HOST_PROXY deployment; return the decoded HostResult."""
    raw = request if isinstance(request, bytes) else msgspec.msgpack.encode(request)
    result = msgspec.msgpack.decode(await rt.invoke(name, raw))
    assert isinstance(result, dict)
    assert set(result) == {"ok", "value", "error", "v"}
    assert result["v"] == 1
    return result


async def ok(rt: Runtime, name: str, request: Any) -> Any:
    result = await call(rt, name, request)
    assert result["ok"] is True, result
    assert result["error"] is None
    return result["value"]


async def err(rt: Runtime, name: str, request: Any) -> str:
    """The error code of a failing host call (after checking the result's shape)."""
    result = await call(rt, name, request)
    assert result["ok"] is False, result
    assert result["value"] is None
    error = result["error"]
    assert isinstance(error, dict) and set(error) == {"code", "message"}
    assert isinstance(error["message"], str) and error["message"]
    return error["code"]


# --- kv -------------------------------------------------------------------------------


@pytest.mark.trio
async def test_kv_set_get_delete(rt: Runtime) -> None:
    await rt.deploy("kv", HOST_PROXY.encode())
    assert await ok(rt, "kv", {"op": "kv.get", "key": "k"}) is None
    assert await ok(rt, "kv", {"op": "kv.set", "key": "k", "value": b"\x00value\xff"}) is None
    assert await ok(rt, "kv", {"op": "kv.get", "key": "k"}) == b"\x00value\xff"
    assert rt.kv.get("kv", "k") == b"\x00value\xff"
    # overwrite
    await ok(rt, "kv", {"op": "kv.set", "key": "k", "value": b"second"})
    assert await ok(rt, "kv", {"op": "kv.get", "key": "k"}) == b"second"
    # delete says whether the key existed
    assert await ok(rt, "kv", {"op": "kv.delete", "key": "k"}) is True
    assert await ok(rt, "kv", {"op": "kv.delete", "key": "k"}) is False
    assert await ok(rt, "kv", {"op": "kv.get", "key": "k"}) is None
    assert rt.kv.get("kv", "k") is None


@pytest.mark.trio
async def test_kv_empty_and_large_values(rt: Runtime) -> None:
    await rt.deploy("kv", HOST_PROXY.encode())
    await ok(rt, "kv", {"op": "kv.set", "key": "", "value": b""})
    assert await ok(rt, "kv", {"op": "kv.get", "key": ""}) == b""
    big = bytes(range(256)) * 1024  # 256 KiB
    await ok(rt, "kv", {"op": "kv.set", "key": "big", "value": big})
    assert await ok(rt, "kv", {"op": "kv.get", "key": "big"}) == big
    unicode_key = "ключ-🔑"
    await ok(rt, "kv", {"op": "kv.set", "key": unicode_key, "value": b"u"})
    assert rt.kv.get("kv", unicode_key) == b"u"


@pytest.mark.trio
async def test_kv_sees_host_side_writes(rt: Runtime) -> None:
    await rt.deploy("kv", HOST_PROXY.encode())
    rt.kv.set("kv", "from-host", b"hello guest")
    assert await ok(rt, "kv", {"op": "kv.get", "key": "from-host"}) == b"hello guest"


@pytest.mark.trio
async def test_kv_incr(rt: Runtime) -> None:
    await rt.deploy("kv", HOST_PROXY.encode())
    # absent counts as 0: the result is `by`
    assert await ok(rt, "kv", {"op": "kv.incr", "key": "n"}) == 1
    assert await ok(rt, "kv", {"op": "kv.incr", "key": "n"}) == 2
    assert await ok(rt, "kv", {"op": "kv.incr", "key": "n", "by": 40}) == 42
    assert await ok(rt, "kv", {"op": "kv.incr", "key": "n", "by": -50}) == -8
    assert await ok(rt, "kv", {"op": "kv.get", "key": "n"}) == b"-8"
    assert await ok(rt, "kv", {"op": "kv.incr", "key": "fresh", "by": 7}) == 7
    # a decimal value set by kv.set can be incremented
    await ok(rt, "kv", {"op": "kv.set", "key": "s", "value": b"100"})
    assert await ok(rt, "kv", {"op": "kv.incr", "key": "s", "by": 5}) == 105


@pytest.mark.trio
@pytest.mark.parametrize("value", [b"abc", b"1.5", b"\xff\xfe", b""])
async def test_kv_incr_non_integer_is_type_error(rt: Runtime, value: bytes) -> None:
    await rt.deploy("kv", HOST_PROXY.encode())
    await ok(rt, "kv", {"op": "kv.set", "key": "x", "value": value})
    assert await err(rt, "kv", {"op": "kv.incr", "key": "x"}) == "type_error"
    # the value is untouched and the actor still serves
    assert await ok(rt, "kv", {"op": "kv.get", "key": "x"}) == value
    assert rt.stats().functions["kv"].crashes == 0


@pytest.mark.trio
async def test_kv_incr_at_64_bit_edges(rt: Runtime) -> None:
    await rt.deploy("kv", HOST_PROXY.encode())
    rt.kv.set("kv", "hi", str(2**63 - 2).encode())
    assert await ok(rt, "kv", {"op": "kv.incr", "key": "hi"}) == 2**63 - 1
    rt.kv.set("kv", "lo", str(-(2**63) + 1).encode())
    assert await ok(rt, "kv", {"op": "kv.incr", "key": "lo", "by": -1}) == -(2**63)
    assert rt.stats().functions["kv"].crashes == 0


@pytest.mark.trio
@pytest.mark.parametrize(("start", "by"), [(2**63 - 1, 1), (-(2**63), -1)], ids=["over-int64", "under-int64"])
async def test_kv_incr_overflowing_msgpack_is_an_error_result(rt: Runtime, start: int, by: int) -> None:
    """A well-formed kv.incr whose result leaves the signed 64-bit range gets an error
    result (the guest did nothing wrong), stores nothing, and the actor lives on."""
    await rt.deploy("kv", HOST_PROXY.encode())
    rt.kv.set("kv", "n", str(start).encode())
    result = await call(rt, "kv", {"op": "kv.incr", "key": "n", "by": by})
    assert result["ok"] is False
    assert rt.stats().functions["kv"].crashes == 0
    assert rt.kv.get("kv", "n") == str(start).encode()


@pytest.mark.trio
async def test_kv_ttl_expiry_with_injected_clock(config: RuntimeConfig) -> None:
    now = [1000.0]
    store = MemoryKeyValueStore(clock=lambda: now[0])
    async with Runtime(config, kv=store) as rt:
        assert rt.kv is store
        await rt.deploy("kv", HOST_PROXY.encode())
        await ok(rt, "kv", {"op": "kv.set", "key": "short", "value": b"v", "ttl": 5})
        await ok(rt, "kv", {"op": "kv.set", "key": "forever", "value": b"f"})
        assert await ok(rt, "kv", {"op": "kv.incr", "key": "ctr", "ttl": 10}) == 1
        now[0] += 4.5
        assert await ok(rt, "kv", {"op": "kv.get", "key": "short"}) == b"v"
        # incr of an existing key keeps its expiry
        assert await ok(rt, "kv", {"op": "kv.incr", "key": "ctr", "ttl": 1000}) == 2
        now[0] += 0.5
        assert await ok(rt, "kv", {"op": "kv.get", "key": "short"}) is None
        assert await ok(rt, "kv", {"op": "kv.delete", "key": "short"}) is False
        assert store.get("kv", "short") is None
        assert await ok(rt, "kv", {"op": "kv.get", "key": "ctr"}) == b"2"
        now[0] += 5
        assert await ok(rt, "kv", {"op": "kv.get", "key": "ctr"}) is None
        # an expired counter starts again from 0
        assert await ok(rt, "kv", {"op": "kv.incr", "key": "ctr"}) == 1
        now[0] += 10**6
        assert await ok(rt, "kv", {"op": "kv.get", "key": "forever"}) == b"f"
        assert set(store.keys("kv")) == {"forever", "ctr"}


@pytest.mark.trio
@pytest.mark.parametrize(
    "request_",
    [
        {"op": "kv.set", "key": "k", "value": b"v", "ttl": 0},
        {"op": "kv.set", "key": "k", "value": b"v", "ttl": -1.5},
        {"op": "kv.incr", "key": "k", "ttl": 0},
    ],
)
async def test_kv_non_positive_ttl_is_bad_request(rt: Runtime, request_: dict[str, Any]) -> None:
    await rt.deploy("kv", HOST_PROXY.encode())
    assert await err(rt, "kv", request_) == "bad_request"
    assert rt.kv.get("kv", "k") is None


@pytest.mark.trio
async def test_kv_namespaces_are_per_function(rt: Runtime) -> None:
    await rt.deploy("alice", HOST_PROXY.encode())
    await rt.deploy("bob", HOST_PROXY.encode())
    await ok(rt, "alice", {"op": "kv.set", "key": "secret", "value": b"A"})
    assert await ok(rt, "bob", {"op": "kv.get", "key": "secret"}) is None
    assert await ok(rt, "bob", {"op": "kv.delete", "key": "secret"}) is False
    await ok(rt, "bob", {"op": "kv.set", "key": "secret", "value": b"B"})
    assert await ok(rt, "bob", {"op": "kv.incr", "key": "n"}) == 1
    assert await ok(rt, "alice", {"op": "kv.incr", "key": "n"}) == 1
    assert await ok(rt, "alice", {"op": "kv.get", "key": "secret"}) == b"A"
    assert rt.kv.get("alice", "secret") == b"A"
    assert rt.kv.get("bob", "secret") == b"B"


@pytest.mark.trio
async def test_kv_survives_undeploy_and_redeploy(rt: Runtime) -> None:
    await rt.deploy("kv", HOST_PROXY.encode())
    await ok(rt, "kv", {"op": "kv.set", "key": "k", "value": b"kept"})
    await rt.undeploy("kv")
    await rt.deploy("kv", HOST_PROXY.encode())
    assert await ok(rt, "kv", {"op": "kv.get", "key": "k"}) == b"kept"


# --- time and random ---------------------------------------------------------------------


@pytest.mark.trio
async def test_time_monotonic(rt: Runtime) -> None:
    await rt.deploy("t", HOST_PROXY.encode())
    before = time.monotonic_ns()
    first = await ok(rt, "t", {"op": "time.monotonic"})
    second = await ok(rt, "t", {"op": "time.monotonic"})
    after = time.monotonic_ns()
    assert type(first) is int and type(second) is int
    assert before <= first <= second <= after


@pytest.mark.trio
async def test_time_wall(rt: Runtime) -> None:
    await rt.deploy("t", HOST_PROXY.encode())
    before = time.time_ns()
    value = await ok(rt, "t", {"op": "time.wall"})
    after = time.time_ns()
    assert type(value) is int
    # nanoseconds since the epoch: after 2020-01-01, and taken during the call
    assert value > 1_577_836_800 * 10**9
    assert before - 10**9 <= value <= after + 10**9


@pytest.mark.trio
@pytest.mark.parametrize("n", [0, 1, 32, 65536])
async def test_random_bytes(rt: Runtime, n: int) -> None:
    await rt.deploy("r", HOST_PROXY.encode())
    value = await ok(rt, "r", {"op": "random.bytes", "n": n})
    assert isinstance(value, bytes) and len(value) == n
    if n >= 32:
        assert value != await ok(rt, "r", {"op": "random.bytes", "n": n})


@pytest.mark.trio
async def test_random_bytes_default_n(rt: Runtime) -> None:
    await rt.deploy("r", HOST_PROXY.encode())
    value = await ok(rt, "r", {"op": "random.bytes"})
    assert isinstance(value, bytes) and len(value) == 32


@pytest.mark.trio
@pytest.mark.parametrize("n", [65537, 10**9, -1])
async def test_random_bytes_out_of_range(rt: Runtime, n: int) -> None:
    await rt.deploy("r", HOST_PROXY.encode())
    assert await err(rt, "r", {"op": "random.bytes", "n": n}) == "bad_request"
    assert rt.stats().functions["r"].crashes == 0


# --- malformed requests ----------------------------------------------------------------


@pytest.mark.trio
@pytest.mark.parametrize(
    ("request_", "code"),
    [
        ({"op": "teleport"}, "unknown_op"),
        ({"op": "kv.scan", "prefix": "a"}, "unknown_op"),
        ({"op": ""}, "unknown_op"),
        ({"op": "kv.get", "key": 5}, "bad_request"),
        ({"op": "kv.set", "key": "k", "value": "text, not bytes"}, "bad_request"),
        ({"op": "kv.incr", "key": "k", "by": "1"}, "bad_request"),
        ({"op": "random.bytes", "n": 1.5}, "bad_request"),
        ({"op": "log", "level": "loud", "message": "x"}, "bad_request"),
        ({"op": "kv.get", "key": "k", "extra": 1}, "bad_request"),
        ({"key": "k"}, "bad_request"),
        ({"op": 7}, "bad_request"),
        ({"op": None}, "bad_request"),
        ({"op": "kv.get", "key": "k", "v": 2}, "unsupported_version"),
        ({"op": "time.wall", "v": 0}, "unsupported_version"),
        ({"op": "kv.get", "key": "k", "v": "1"}, "bad_request"),
        (42, "bad_request"),
        ("kv.get", "bad_request"),
        ([{"op": "kv.get"}], "bad_request"),
        (None, "bad_request"),
        ({}, "bad_request"),
    ],
)
async def test_invalid_requests_get_error_results(rt: Runtime, request_: Any, code: str) -> None:
    await rt.deploy("p", HOST_PROXY.encode())
    assert await err(rt, "p", request_) == code
    # an invalid request is the guest's problem to handle, not a fault: the actor lives on
    ref = rt.actors("p")
    assert await ok(rt, "p", {"op": "kv.get", "key": "k"}) is None
    assert rt.actors("p") == ref
    assert rt.stats().functions["p"].crashes == 0


@pytest.mark.trio
async def test_unsupported_version_does_not_run_the_op(rt: Runtime) -> None:
    await rt.deploy("p", HOST_PROXY.encode())
    assert await err(rt, "p", {"op": "kv.set", "key": "k", "value": b"v", "v": 2}) == "unsupported_version"
    assert rt.kv.get("p", "k") is None


@pytest.mark.trio
async def test_non_msgpack_host_call_is_abi_error_and_actor_is_replaced(rt: Runtime) -> None:
    await rt.deploy("bad", BAD_HOST_CALL.encode())
    await rt.deploy("echo", ECHO.encode())
    (first,) = rt.actors("bad")
    with pytest.raises(AbiError) as info:
        await rt.invoke("bad", b"anything")
    assert info.value.function == "bad"
    assert "msgpack" in info.value.message
    await settled(rt, "bad")
    stats = rt.stats().functions["bad"]
    assert stats.crashes == 1
    assert stats.restarts == 1
    assert stats.instances == 1
    (second,) = rt.actors("bad")
    assert second != first
    assert rt.state(first).value == "crashed"
    # the replacement fails the same way, and other functions keep serving
    assert await rt.invoke("echo", b"still fine") == b"still fine"
    with pytest.raises(AbiError):
        await rt.invoke("bad", b"again")
    assert rt.stats().functions["bad"].crashes == 2
    assert rt.stats().functions["echo"].crashes == 0


@pytest.mark.trio
async def test_non_msgpack_through_host_proxy_is_abi_error(rt: Runtime) -> None:
    """Truncated msgpack (a map header promising more entries) is not msgpack: AbiError."""
    await rt.deploy("p", HOST_PROXY.encode())
    with pytest.raises(AbiError):
        await rt.invoke("p", b"\x82\xa2op")
    assert rt.stats().functions["p"].crashes == 1
    assert await ok(rt, "p", {"op": "kv.get", "key": "k"}) is None


# --- logging -----------------------------------------------------------------------------


@pytest.mark.trio
async def test_log_import(rt: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    await rt.deploy("logger", LOGGER.encode())
    caplog.set_level(logging.DEBUG, logger="wasmhive.guest")
    assert await rt.invoke("logger", b"something odd happened") == b"something odd happened"
    records = [r for r in caplog.records if r.name == "wasmhive.guest"]
    assert len(records) == 1
    (record,) = records
    assert record.levelno == logging.WARNING
    assert "something odd happened" in record.getMessage()
    assert "logger" in record.getMessage()
    assert record.wasmhive_function == "logger"
    (ref,) = rt.actors("logger")
    assert record.wasmhive_actor == ref.id


@pytest.mark.trio
async def test_log_import_invalid_utf8_is_replaced(rt: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    await rt.deploy("logger", LOGGER.encode())
    caplog.set_level(logging.DEBUG, logger="wasmhive.guest")
    assert await rt.invoke("logger", b"bad \xff byte") == b"bad \xff byte"
    (record,) = [r for r in caplog.records if r.name == "wasmhive.guest"]
    assert "bad \ufffd byte" in record.getMessage()


@pytest.mark.trio
@pytest.mark.parametrize(
    ("level", "py_level"),
    [(0, logging.DEBUG), (1, logging.DEBUG), (2, logging.INFO), (3, logging.WARNING), (4, logging.ERROR)],
)
async def test_log_host_call(rt: Runtime, caplog: pytest.LogCaptureFixture, level: int, py_level: int) -> None:
    await rt.deploy("p", HOST_PROXY.encode())
    caplog.set_level(logging.DEBUG, logger="wasmhive.guest")
    assert await ok(rt, "p", {"op": "log", "level": level, "message": f"level {level} line"}) is None
    records = [r for r in caplog.records if r.name == "wasmhive.guest"]
    assert len(records) == 1
    assert records[0].levelno == py_level
    assert f"level {level} line" in records[0].getMessage()
    assert records[0].wasmhive_function == "p"


@pytest.mark.trio
async def test_log_host_call_default_level_is_info(rt: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    await rt.deploy("p", HOST_PROXY.encode())
    caplog.set_level(logging.DEBUG, logger="wasmhive.guest")
    await ok(rt, "p", {"op": "log", "message": "plain"})
    (record,) = [r for r in caplog.records if r.name == "wasmhive.guest"]
    assert record.levelno == logging.INFO
    assert "plain" in record.getMessage()


# --- WASI --------------------------------------------------------------------------------


@pytest.mark.trio
async def test_wasi_stdout_becomes_log_lines(rt: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    await rt.deploy("wasi", WASI_STDOUT.encode())
    caplog.set_level(logging.DEBUG, logger="wasmhive.guest")
    payload = b"hello from wasi\nsecond line\n"
    assert await rt.invoke("wasi", payload) == payload
    messages = [r.getMessage() for r in caplog.records if r.name == "wasmhive.guest"]
    assert any("hello from wasi" in m for m in messages), messages
    assert any("second line" in m for m in messages), messages
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "wasmhive.guest")
    assert all(r.wasmhive_function == "wasi" for r in caplog.records if r.name == "wasmhive.guest")


@pytest.mark.trio
async def test_wasi_guest_serves_many_calls(rt: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    await rt.deploy("wasi", WASI_STDOUT.encode())
    caplog.set_level(logging.DEBUG, logger="wasmhive.guest")
    for i in range(5):
        assert await rt.invoke("wasi", f"line {i}\n".encode()) == f"line {i}\n".encode()
    messages = [r.getMessage() for r in caplog.records if r.name == "wasmhive.guest"]
    for i in range(5):
        assert any(f"line {i}" in m for m in messages), messages


@pytest.mark.trio
async def test_kv_quotas_bound_what_a_guest_can_store(config: RuntimeConfig) -> None:
    store = MemoryKeyValueStore(max_value_bytes=100, max_namespace_bytes=1000, max_namespace_keys=5)
    async with Runtime(config, kv=store) as rt:
        await rt.deploy("kv", HOST_PROXY.encode())
        too_big = await call(rt, "kv", {"op": "kv.set", "key": "k", "value": b"x" * 101})
        assert too_big["error"]["code"] == "quota_exceeded"
        for i in range(5):
            assert (await call(rt, "kv", {"op": "kv.set", "key": f"k{i}", "value": b"x" * 100}))["ok"]
        sixth = await call(rt, "kv", {"op": "kv.set", "key": "k5", "value": b"x"})
        assert sixth["error"]["code"] == "quota_exceeded"
        assert (await call(rt, "kv", {"op": "kv.set", "key": "k0", "value": b"y" * 100}))["ok"]  # overwrite fits
        assert (await call(rt, "kv", {"op": "kv.delete", "key": "k1"}))["value"] is True
        assert (await call(rt, "kv", {"op": "kv.set", "key": "k5", "value": b"x"}))["ok"]  # room again
        assert store.usage("kv") == (5 * 2 + 4 * 100 + 1, 5)
        assert rt.stats().functions["kv"].crashes == 0
