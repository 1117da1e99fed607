"""The compile cache: files on disk, verification, rebuilding, in-memory hits."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import pytest
import wasmtime
from guests import COUNTER, ECHO, ECHO_LOCAL

from wasmhive.runtime import Runtime, RuntimeConfig

# The file format: magic | module sha256 | settings hash | payload sha256 | payload
MAGIC = b"WASMHIVE-CWASM-2"
HEADER = len(MAGIC) + 96
PAYLOAD_SUM = slice(len(MAGIC) + 64, HEADER)

ECHO_WASM = wasmtime.wat2wasm(ECHO)
ECHO_DIGEST = hashlib.sha256(ECHO_WASM).hexdigest()


def fresh_config(directory: Path, **kw: object) -> RuntimeConfig:
    return RuntimeConfig(cache_dir=str(directory), **kw)  # type: ignore[arg-type]


def assert_valid_cache_file(path: Path, engine: wasmtime.Engine) -> None:
    blob = path.read_bytes()
    assert blob.startswith(MAGIC)
    assert len(blob) > HEADER
    assert hashlib.sha256(blob[HEADER:]).digest() == blob[PAYLOAD_SUM]
    # the payload is a module this engine accepts
    wasmtime.Module.deserialize(engine, blob[HEADER:])


async def deploy_echo_and_call(rt: Runtime, name: str = "echo") -> str:
    stats = await rt.deploy(name, ECHO.encode())
    assert await rt.invoke(name, b"cached hello") == b"cached hello"
    return stats.digest


async def populate(directory: Path) -> Path:
    """Compile ECHO once into ``directory``; return the cache file."""
    async with Runtime(fresh_config(directory)) as rt:
        digest = await deploy_echo_and_call(rt)
        path = rt.cache.path_for(digest)
    assert path is not None and path.is_file()
    return path


# --- the happy path -----------------------------------------------------------------


@pytest.mark.trio
async def test_first_deploy_compiles_and_writes_file(tmp_path: Path) -> None:
    async with Runtime(fresh_config(tmp_path)) as rt:
        digest = await deploy_echo_and_call(rt)
        assert digest == ECHO_DIGEST
        assert rt.stats().cache == {"memory_hits": 0, "disk_hits": 0, "compiles": 1, "rebuilt": 0}
        path = rt.cache.path_for(digest)
        assert path is not None
        assert path.parent == tmp_path
        assert path.name.startswith(digest)
        assert path.is_file()
        assert_valid_cache_file(path, rt.engine)
        # no temporary files left behind
        assert [p.name for p in tmp_path.iterdir()] == [path.name]


@pytest.mark.trio
async def test_second_runtime_loads_from_disk(tmp_path: Path) -> None:
    path = await populate(tmp_path)
    mtime = path.stat().st_mtime_ns
    async with Runtime(fresh_config(tmp_path)) as rt:
        digest = await deploy_echo_and_call(rt)
        assert rt.cache.path_for(digest) == path
        assert rt.stats().cache == {"memory_hits": 0, "disk_hits": 1, "compiles": 0, "rebuilt": 0}
        assert await rt.invoke("echo", b"") == b""
        assert await rt.invoke("echo", b"x" * 70000) == b"x" * 70000
    # a disk hit does not rewrite the file
    assert path.stat().st_mtime_ns == mtime


@pytest.mark.trio
async def test_same_bytes_under_two_names_hit_memory(tmp_path: Path) -> None:
    async with Runtime(fresh_config(tmp_path)) as rt:
        d1 = await deploy_echo_and_call(rt, "one")
        d2 = await deploy_echo_and_call(rt, "two")
        assert d1 == d2
        assert rt.stats().cache == {"memory_hits": 1, "disk_hits": 0, "compiles": 1, "rebuilt": 0}
        # the two deployments are independent actors
        assert rt.actors("one") != rt.actors("two")
        await rt.undeploy("one")
        assert await rt.invoke("two", b"still here") == b"still here"


@pytest.mark.trio
async def test_wat_and_binary_of_same_module_share_cache_entry(tmp_path: Path) -> None:
    async with Runtime(fresh_config(tmp_path)) as rt:
        await rt.deploy("text", ECHO.encode())
        await rt.deploy("binary", ECHO_WASM)
        assert rt.stats().cache["compiles"] == 1
        assert rt.stats().cache["memory_hits"] == 1
        assert await rt.invoke("binary", b"bin") == b"bin"


@pytest.mark.trio
async def test_different_modules_get_different_files(tmp_path: Path) -> None:
    async with Runtime(fresh_config(tmp_path)) as rt:
        a = (await rt.deploy("a", ECHO.encode())).digest
        b = (await rt.deploy("b", ECHO_LOCAL.encode())).digest
        assert a != b
        assert rt.stats().cache["compiles"] == 2
        pa, pb = rt.cache.path_for(a), rt.cache.path_for(b)
        assert pa is not None and pb is not None and pa != pb
        assert pa.is_file() and pb.is_file()
        assert await rt.invoke("b", b"local") == b"local"


@pytest.mark.trio
async def test_engine_settings_change_the_file_name(tmp_path: Path) -> None:
    async with Runtime(fresh_config(tmp_path, fuel=True)) as fuel_rt:
        fuel_path = fuel_rt.cache.path_for(ECHO_DIGEST)
    async with Runtime(fresh_config(tmp_path, fuel=False)) as plain_rt:
        plain_path = plain_rt.cache.path_for(ECHO_DIGEST)
        await deploy_echo_and_call(plain_rt)
    assert fuel_path != plain_path


# --- damaged files ------------------------------------------------------------------


async def check_rebuilt(directory: Path, path: Path) -> None:
    """Deploying ECHO over a damaged cache file rebuilds it and still works."""
    async with Runtime(fresh_config(directory)) as rt:
        digest = await deploy_echo_and_call(rt)
        assert rt.cache.path_for(digest) == path
        assert rt.stats().cache == {"memory_hits": 0, "disk_hits": 0, "compiles": 1, "rebuilt": 1}
        assert await rt.invoke("echo", b"after rebuild") == b"after rebuild"
        assert_valid_cache_file(path, rt.engine)
    # and the rewritten file is good for the next runtime
    async with Runtime(fresh_config(directory)) as rt:
        await deploy_echo_and_call(rt)
        assert rt.stats().cache == {"memory_hits": 0, "disk_hits": 1, "compiles": 0, "rebuilt": 0}


@pytest.mark.trio
async def test_corrupted_payload_is_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = await populate(tmp_path)
    blob = bytearray(path.read_bytes())
    middle = HEADER + (len(blob) - HEADER) // 2
    for i in range(middle, middle + 8):
        blob[i] ^= 0xFF
    path.write_bytes(bytes(blob))
    with caplog.at_level(logging.WARNING, logger="wasmhive.cache"):
        await check_rebuilt(tmp_path, path)
    assert any("checksum" in r.getMessage() for r in caplog.records if r.name == "wasmhive.cache")


@pytest.mark.trio
@pytest.mark.parametrize("field", ["module_digest", "settings", "payload_sum"])
async def test_corrupted_header_is_rebuilt(tmp_path: Path, field: str) -> None:
    path = await populate(tmp_path)
    blob = bytearray(path.read_bytes())
    blob[len(MAGIC) + {"module_digest": 0, "settings": 32, "payload_sum": 64}[field]] ^= 0x01
    path.write_bytes(bytes(blob))
    await check_rebuilt(tmp_path, path)


@pytest.mark.trio
@pytest.mark.parametrize("keep", ["half", "header_only", "partial_header", "empty"])
async def test_truncated_file_is_rebuilt(tmp_path: Path, keep: str) -> None:
    path = await populate(tmp_path)
    blob = path.read_bytes()
    size = {"half": len(blob) // 2, "header_only": HEADER, "partial_header": 10, "empty": 0}[keep]
    path.write_bytes(blob[:size])
    await check_rebuilt(tmp_path, path)


@pytest.mark.trio
async def test_random_bytes_file_is_rebuilt(tmp_path: Path) -> None:
    path = await populate(tmp_path)
    path.write_bytes(os.urandom(4096))
    await check_rebuilt(tmp_path, path)


@pytest.mark.trio
async def test_valid_header_over_junk_payload_is_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Correct magic and checksum, but the payload is not a compiled module: wasmtime refuses it."""
    path = await populate(tmp_path)
    junk = b"\x7fELF" + os.urandom(2000)
    path.write_bytes(path.read_bytes()[: PAYLOAD_SUM.start] + hashlib.sha256(junk).digest() + junk)
    with caplog.at_level(logging.WARNING, logger="wasmhive.cache"):
        await check_rebuilt(tmp_path, path)
    assert any("refused" in r.getMessage() for r in caplog.records if r.name == "wasmhive.cache")


@pytest.mark.trio
async def test_module_from_other_engine_settings_is_rebuilt(tmp_path: Path) -> None:
    """A genuine compiled module, correctly framed, but for an engine with other settings."""
    path = await populate(tmp_path)
    other_config = wasmtime.Config()
    other_config.consume_fuel = False
    other_config.epoch_interruption = False
    other = wasmtime.Module(wasmtime.Engine(other_config), ECHO_WASM).serialize()
    path.write_bytes(path.read_bytes()[: PAYLOAD_SUM.start] + hashlib.sha256(other).digest() + other)
    await check_rebuilt(tmp_path, path)


@pytest.mark.trio
async def test_file_for_a_different_module_is_rebuilt(tmp_path: Path) -> None:
    """A valid cache file of another module, placed under ECHO's name, must not run as ECHO.

    The cache promises that a foreign file is "detected, removed and rebuilt,
    never run"; the file header should tie the payload to the module digest.
    """
    async with Runtime(fresh_config(tmp_path)) as rt:
        counter_digest = (await rt.deploy("counter", COUNTER.encode())).digest
        echo_digest = (await rt.deploy("echo", ECHO.encode())).digest
        counter_path = rt.cache.path_for(counter_digest)
        echo_path = rt.cache.path_for(echo_digest)
    assert counter_path is not None and echo_path is not None
    echo_path.write_bytes(counter_path.read_bytes())
    async with Runtime(fresh_config(tmp_path)) as rt:
        await rt.deploy("echo", ECHO.encode())
        assert await rt.invoke("echo", b"must echo") == b"must echo"


# --- no usable directory --------------------------------------------------------------


@pytest.mark.trio
async def test_unwritable_cache_dir_still_works(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "a-regular-file"
    blocker.write_bytes(b"not a directory")
    directory = blocker / "cache"
    with caplog.at_level(logging.WARNING, logger="wasmhive.cache"):
        for _ in range(2):
            async with Runtime(fresh_config(directory)) as rt:
                await deploy_echo_and_call(rt)
                assert rt.stats().cache == {"memory_hits": 0, "disk_hits": 0, "compiles": 1, "rebuilt": 0}
    assert blocker.read_bytes() == b"not a directory"
    assert any("cannot write" in r.getMessage() for r in caplog.records if r.name == "wasmhive.cache")


@pytest.mark.trio
async def test_cache_dir_is_created(tmp_path: Path) -> None:
    directory = tmp_path / "deep" / "er" / "cache"
    async with Runtime(fresh_config(directory)) as rt:
        digest = await deploy_echo_and_call(rt)
        path = rt.cache.path_for(digest)
        assert path is not None and path.is_file() and path.parent == directory


@pytest.mark.trio
async def test_cache_disabled_writes_nothing(tmp_path: Path) -> None:
    async with Runtime(fresh_config(tmp_path, cache_enabled=False)) as rt:
        digest = await deploy_echo_and_call(rt)
        assert rt.cache.directory is None
        assert rt.cache.path_for(digest) is None
        assert rt.stats().cache["compiles"] == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.trio
async def test_invalid_module_writes_no_cache_file(tmp_path: Path) -> None:
    from wasmhive.runtime import InvalidModule

    async with Runtime(fresh_config(tmp_path)) as rt:
        with pytest.raises(InvalidModule):
            await rt.deploy("bad", b"\0asm\x01\x00\x00\x00\xff\xff")
        assert rt.stats().cache["compiles"] == 0
        assert list(tmp_path.iterdir()) == []
        await deploy_echo_and_call(rt)
