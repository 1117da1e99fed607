"""Secrets: granted by name, read-only, and never shown."""

from __future__ import annotations

import logging
from pathlib import Path

import guests
import msgspec
import pytest

from wasmhive.runtime import InvalidConfig, Runtime, RuntimeConfig, SecretStore

VALUE = "s3cr3t-value-do-not-print"


async def get(rt: Runtime, function: str, name: str) -> dict[str, object]:
    reply = await rt.invoke(function, msgspec.msgpack.encode({"op": "secret.get", "name": name}))
    return msgspec.msgpack.decode(reply)  # type: ignore[no-any-return]


@pytest.mark.trio
async def test_a_guest_reads_only_the_secrets_granted_to_it(config: RuntimeConfig, caplog: pytest.LogCaptureFixture) -> None:
    store = SecretStore({"API_KEY": VALUE, "OTHER": "other-value"})
    caplog.set_level(logging.DEBUG)
    async with Runtime(config, secrets=store) as rt:
        await rt.deploy("granted", guests.HOST_PROXY.encode(), secrets=["API_KEY"])
        await rt.deploy("plain", guests.HOST_PROXY.encode())
        assert (await get(rt, "granted", "API_KEY"))["value"] == VALUE
        refused = await get(rt, "granted", "OTHER")
        assert refused["ok"] is False and refused["error"]["code"] == "not_granted"  # type: ignore[index]
        assert (await get(rt, "plain", "API_KEY"))["ok"] is False
        with pytest.raises(InvalidConfig, match="'MISSING' is not defined") as info:
            await rt.deploy("bad", guests.HOST_PROXY.encode(), secrets=["MISSING"])
        shown = " ".join([str(info.value), repr(store), repr(rt.stats()), caplog.text, str(refused)])
    assert VALUE not in shown and "other-value" not in shown


def test_secrets_come_from_the_environment_and_files(tmp_path: Path) -> None:
    env = {"WASMHIVE_SECRET_TOKEN": "t", "PATH": "/bin", "WASMHIVE_SECRET_": "ignored"}
    assert SecretStore.from_env(env).names() == ["TOKEN"]
    toml_file = tmp_path / "secrets.toml"
    toml_file.write_text('TOKEN = "from-file"\nDB = "db"\n')
    json_file = tmp_path / "secrets.json"
    json_file.write_text('{"DB": "json-db"}')
    merged = SecretStore.from_env(env).merged(SecretStore.from_file(toml_file)).merged(SecretStore.from_file(json_file))
    assert merged.grant(["TOKEN", "DB"], "f") == {"TOKEN": "from-file", "DB": "json-db"}
    bad = tmp_path / "bad.toml"
    bad.write_text(f'TOKEN = "{VALUE}\n')  # unterminated: the error must not echo the value
    with pytest.raises(InvalidConfig) as info:
        SecretStore.from_file(bad)
    assert VALUE not in str(info.value)
    with pytest.raises(InvalidConfig, match="string values"):
        nested = tmp_path / "nested.toml"
        nested.write_text("[table]\nx = 1\n")
        SecretStore.from_file(nested)
