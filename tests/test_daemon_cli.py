"""``wasmhive deploy|invoke|ls|alias|rm`` (runtime/daemon/commands.py) against a real daemon subprocess.

The commands run in-process through click's CliRunner (one test runs the
``wasmhive`` CLI as a subprocess to see streamed chunks arrive one by one).
One daemon serves the whole module; every test deploys functions of its own names.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner, Result
from daemon import Daemon

from wasmhive.runtime.cli import main
from wasmhive.runtime.daemon.client import DaemonClient, DaemonError, DaemonUnreachable

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ECHO = EXAMPLES / "echo.wat"
HELLO = EXAMPLES / "hello.js"
STREAM = EXAMPLES / "stream.wat"
TOKEN = "cli-test-token-0123456789"

# Emits "a\n", then fails when the payload is "boom" (an error after the first chunk).
BOOM_JS = """
function handler(request, ctx) {
  ctx.emit("a\\n");
  if (request.text() === "boom") throw new Error("boom");
  return "end\\n";
}
"""
# Emits three lines 0.3 s apart (a busy wait: the guest has no sleep).
SLOW_JS = """
function handler(request, ctx) {
  for (let i = 0; i < 3; i++) {
    const start = Date.now();
    while (Date.now() - start < 300) {}
    ctx.emit(`tick ${i}\\n`);
  }
  return "";
}
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    config = {"server": {"admin_token": TOKEN, "access_log": False}}
    with Daemon(tmp_path_factory.mktemp("cli-daemon"), config=config) as d:
        yield d


def cli(
    daemon: Daemon, *args: str | Path, env: Mapping[str, str | None] | None = None, input: bytes | None = None
) -> Result:
    """Run ``wasmhive ARGS`` against ``daemon`` with the admin token in the environment."""
    environment: dict[str, str | None] = {"WASMHIVE_URL": daemon.url, "WASMHIVE_ADMIN_TOKEN": TOKEN}
    environment.update(env or {})
    return CliRunner(env=environment).invoke(main, [str(a) for a in args], input=input, catch_exceptions=False)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr)
    return result


def failed(result: Result, code: int = 1) -> str:
    """The stderr of a command that failed with ``code``, checked to be short and traceback-free."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.output
    return result.stderr


def deploy(daemon: Daemon, name: str, path: Path, *args: str) -> dict[str, object]:
    record = json.loads(ok(cli(daemon, "deploy", name, path, "--json", *args)).stdout)
    assert isinstance(record, dict)
    return record


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- deploy --------------------------------------------------------------------------------------


def test_deploy_wasm_readable_then_json_with_options(daemon: Daemon) -> None:
    out = ok(cli(daemon, "deploy", "dep", ECHO)).stdout
    assert out.startswith("deployed dep@1  (wasm, 1.0 KiB, sha256 ")
    assert len(out.splitlines()) == 1  # no options line without options

    args = ["--timeout", "2", "--instances", "2", "--memory-limit", "64MiB", "--options", '{"mailbox_size": 64}']
    record = deploy(daemon, "dep", ECHO, *args)
    assert record["version"] == 2 and record["kind"] == "wasm"
    assert record["options"] == {"timeout": 2.0, "instances": 2, "memory_limit": 64 * 1024 * 1024, "mailbox_size": 64}
    assert record["size"] == ECHO.stat().st_size and len(str(record["digest"])) == 64


def test_deploy_js(daemon: Daemon) -> None:
    out = ok(cli(daemon, "deploy", "hello-cli", HELLO)).stdout
    assert out.startswith("deployed hello-cli@1  (js, ")
    reply = ok(cli(daemon, "invoke", "hello-cli", "--data", '{"name": "cli"}')).stdout
    assert json.loads(reply)["greeting"] == "hello cli"


def test_deploy_mistakes(daemon: Daemon, tmp_path: Path) -> None:
    assert "must be a JSON object" in failed(cli(daemon, "deploy", "bad", ECHO, "--options", "[1]"), 2)
    assert "not valid JSON" in failed(cli(daemon, "deploy", "bad", ECHO, "--options", "{"), 2)
    assert "is not a size" in failed(cli(daemon, "deploy", "bad", ECHO, "--memory-limit", "12Q"), 2)
    assert "does not exist" in failed(cli(daemon, "deploy", "bad", tmp_path / "nope.wasm"), 2)
    # the daemon's own checks: exit 1 with its error kind
    err = failed(cli(daemon, "deploy", "bad", ECHO, "--timeout", "-1"))
    assert err.startswith("error: InvalidConfig: ") and "timeout" in err
    junk = tmp_path / "junk.wasm"
    junk.write_bytes(b"\0asm not really")
    assert failed(cli(daemon, "deploy", "bad", junk)).startswith("error: InvalidModule: ")
    assert failed(cli(daemon, "ls", "bad")).startswith("error: UnknownFunction: ")


# --- ls ------------------------------------------------------------------------------------------


def test_ls_readable_and_json(daemon: Daemon) -> None:
    deploy(daemon, "ls-a", ECHO)
    deploy(daemon, "ls-a", ECHO, "--timeout", "3")
    deploy(daemon, "ls-b", HELLO)

    lines = ok(cli(daemon, "ls")).stdout.splitlines()
    assert lines[0].split() == ["NAME", "VERSIONS", "ALIASES"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert rows["ls-a"].split()[1:] == ["1-2", "latest", "->", "2"]
    assert rows["ls-b"].split()[1:] == ["1", "latest", "->", "1"]
    column = lines[0].index("VERSIONS")  # aligned
    assert rows["ls-a"][column : column + 3] == "1-2" and rows["ls-b"][column] == "1"

    listed = json.loads(ok(cli(daemon, "ls", "--json")).stdout)
    mine = {f["name"]: f for f in listed["functions"] if f["name"].startswith("ls-")}
    assert mine == {
        "ls-a": {"name": "ls-a", "versions": [1, 2], "aliases": {"latest": {"2": 100}}},
        "ls-b": {"name": "ls-b", "versions": [1], "aliases": {"latest": {"1": 100}}},
    }

    one = json.loads(ok(cli(daemon, "ls", "ls-a", "--json")).stdout)
    assert [v["version"] for v in one["versions"]] == [1, 2]
    assert one["versions"][1]["options"] == {"timeout": 3.0}
    digest = one["versions"][0]["digest"]

    out = ok(cli(daemon, "ls", "ls-a")).stdout.splitlines()
    assert out[0] == "ls-a: 2 versions"
    assert out[1].split() == ["VERSION", "DIGEST", "KIND", "SIZE", "CREATED", "STATUS", "ALIASES", "OPTIONS"]
    v1, v2 = out[2].split(), out[3].split()
    assert v1[:5] == ["1", digest[:12], "wasm", "1.0", "KiB"] and v1[7] == "running" and len(v1) == 8
    assert v2[0] == "2" and v2[7:] == ["running", "latest", "timeout=3.0"]
    time.strptime(" ".join(v1[5:7]), "%Y-%m-%d %H:%M:%S")


# --- invoke --------------------------------------------------------------------------------------


def test_invoke_data_file_and_stdin(daemon: Daemon, tmp_path: Path) -> None:
    deploy(daemon, "inv", ECHO)
    assert ok(cli(daemon, "invoke", "inv", "--data", "hello")).stdout_bytes == b"hello"
    binary = bytes(range(256)) * 3
    payload = tmp_path / "payload.bin"
    payload.write_bytes(binary)
    assert ok(cli(daemon, "invoke", "inv", "--file", payload)).stdout_bytes == binary
    assert ok(cli(daemon, "invoke", "inv", "--file", "-", input=b"from stdin\n")).stdout_bytes == b"from stdin\n"
    assert ok(cli(daemon, "invoke", "inv")).stdout_bytes == b""  # no payload: an empty one
    assert ok(cli(daemon, "invoke", "inv", "--data", "k", "--key", "user-1")).stdout_bytes == b"k"

    body = json.loads(ok(cli(daemon, "invoke", "inv", "--data", "hi", "--json")).stdout)
    assert body["reply"] == "hi" and body["version"] == 1 and body["target"] == "inv" and body["request_id"]
    body = json.loads(ok(cli(daemon, "invoke", "inv", "--file", payload, "--json")).stdout)
    assert "reply" not in body and len(body["reply_base64"]) == 4 * len(binary) // 3

    assert "not both" in failed(cli(daemon, "invoke", "inv", "--data", "x", "--file", payload), 2)
    err = failed(cli(daemon, "invoke", "nope", "--data", "x"))
    assert err == "error: UnknownFunction: no function named 'nope'\n"


def test_invoke_by_version_and_alias(daemon: Daemon) -> None:
    deploy(daemon, "tgt", ECHO)
    deploy(daemon, "tgt", ECHO, "--timeout", "4")
    ok(cli(daemon, "alias", "tgt", "stable", "1"))

    def version(target: str) -> int:
        result = json.loads(ok(cli(daemon, "invoke", target, "--data", "x", "--json")).stdout)
        assert result["reply"] == "x"
        return int(result["version"])

    assert version("tgt") == 2
    assert version("tgt@latest") == 2
    assert version("tgt@1") == 1
    assert version("tgt@stable") == 1
    assert failed(cli(daemon, "invoke", "tgt@7")).startswith("error: UnknownFunction: ")
    assert failed(cli(daemon, "invoke", "tgt@nope")).startswith("error: UnknownFunction: ")


# --- streaming -----------------------------------------------------------------------------------


def test_stream_raw_and_json(daemon: Daemon) -> None:
    deploy(daemon, "lines", STREAM)
    out = ok(cli(daemon, "invoke", "lines", "--stream", "--data", "a\nb\nc")).stdout_bytes
    assert out == b"a\nb\nc"
    piped = ok(cli(daemon, "invoke", "lines@1", "--stream", "--file", "-", input=b"x\n\xff\n"))
    assert piped.stdout_bytes == b"x\n\xff\n"

    lines = [
        json.loads(line)
        for line in ok(cli(daemon, "invoke", "lines", "--stream", "--json", "--data", "a\nb\nc")).stdout.splitlines()
    ]
    assert lines[:-1] == [{"chunk": "a\n"}, {"chunk": "b\n"}, {"chunk": "c"}]
    assert lines[-1]["done"] is True and lines[-1]["version"] == 1 and lines[-1]["request_id"]
    lines = [
        json.loads(line)
        for line in ok(cli(daemon, "invoke", "lines", "--stream", "--json", "--data", "\xff")).stdout.splitlines()
    ]
    assert lines[0] == {"chunk": "\xff"}  # --data is text: U+00FF, UTF-8 encoded

    assert failed(cli(daemon, "invoke", "nope", "--stream")).startswith("error: UnknownFunction: ")


def test_stream_error_after_first_chunk(daemon: Daemon, tmp_path: Path) -> None:
    source = tmp_path / "boom.js"
    source.write_text(BOOM_JS)
    deploy(daemon, "boom", source)
    assert ok(cli(daemon, "invoke", "boom", "--stream", "--data", "fine")).stdout == "a\nend\n"
    result = cli(daemon, "invoke", "boom", "--stream", "--data", "boom")
    assert result.stdout == "a\n"  # the chunk before the error was written
    assert failed(result) == "error: GuestError: Error: boom\n"

    # the client read as a plain chunked body: the error can only cut it short
    with DaemonClient(daemon.url) as client:
        chunks = client.stream("boom", b"boom", events=False)
        assert chunks.version == 1
        seen = []
        with pytest.raises(DaemonError) as info:
            for chunk in chunks:
                seen.append(chunk)
        assert seen == [b"a\n"] and info.value.kind == "StreamAborted" and info.value.status == 200
        # and as events: the error's own kind
        with pytest.raises(DaemonError) as info:
            list(client.stream("boom", b"boom"))
        assert (info.value.kind, info.value.message, info.value.function) == ("GuestError", "Error: boom", "boom")


def test_stream_chunks_are_written_as_they_arrive(daemon: Daemon, tmp_path: Path) -> None:
    source = tmp_path / "slow.js"
    source.write_text(SLOW_JS)
    deploy(daemon, "slow", source)
    env = {**os.environ, "WASMHIVE_URL": daemon.url}
    argv = [sys.executable, "-m", "wasmhive.runtime.cli", "invoke", "slow", "--stream"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env) as proc:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        first_at = time.monotonic()
        rest = proc.stdout.read()
        ended_at = time.monotonic()
        assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else None
    assert first == b"tick 0\n" and rest == b"tick 1\ntick 2\n"
    # the guest emits the next two lines 0.3 s apart: the first one was out well before
    assert ended_at - first_at > 0.3


# --- alias ---------------------------------------------------------------------------------------


def test_alias_weights_then_ls(daemon: Daemon) -> None:
    deploy(daemon, "can", ECHO)
    deploy(daemon, "can", ECHO, "--timeout", "2")
    assert ok(cli(daemon, "alias", "can", "canary", "1=90", "2=10")).stdout == "can@canary -> 1 (90%), 2 (10%)\n"
    assert ok(cli(daemon, "alias", "can", "prod", "1")).stdout == "can@prod -> 1\n"
    result = json.loads(ok(cli(daemon, "alias", "can", "third", "1=1", "2=2", "--json")).stdout)
    assert result == {"name": "can", "alias": "third", "weights": {"1": 1, "2": 2}}

    row = next(line for line in ok(cli(daemon, "ls")).stdout.splitlines() if line.startswith("can "))
    assert row.split(None, 2)[2] == "canary -> 1=90 2=10, latest -> 2, prod -> 1, third -> 1=1 2=2"
    table = ok(cli(daemon, "ls", "can")).stdout
    assert "canary (90%), prod, third (33.3%)" in table and "canary (10%), latest, third (66.7%)" in table
    aliases = json.loads(ok(cli(daemon, "ls", "can", "--json")).stdout)["aliases"]
    assert aliases["canary"] == {"1": 90, "2": 10} and aliases["prod"] == {"1": 100}

    # rollback: move the alias back
    ok(cli(daemon, "alias", "can", "canary", "1"))
    assert json.loads(ok(cli(daemon, "ls", "can", "--json")).stdout)["aliases"]["canary"] == {"1": 100}

    assert "VERSION=WEIGHT" in failed(cli(daemon, "alias", "can", "x", "1=a"), 2)
    assert "VERSION=WEIGHT" in failed(cli(daemon, "alias", "can", "x", "1", "2"), 2)
    assert "given twice" in failed(cli(daemon, "alias", "can", "x", "1=5", "1=6"), 2)
    assert "Missing argument" in failed(cli(daemon, "alias", "can", "x"), 2)
    assert failed(cli(daemon, "alias", "can", "x", "9")).startswith("error: UnknownFunction: ")
    assert failed(cli(daemon, "alias", "can", "x", "1=0")).startswith("error: InvalidConfig: ")


# --- rm ------------------------------------------------------------------------------------------


def test_rm_version_alias_and_function(daemon: Daemon) -> None:
    for _ in range(3):
        deploy(daemon, "gone", ECHO)
    ok(cli(daemon, "alias", "gone", "prod", "1"))

    assert failed(cli(daemon, "rm", "gone", "1")).startswith("error: VersionInUse: ")
    assert ok(cli(daemon, "rm", "gone", "--alias", "prod")).stdout == "deleted alias gone@prod\n"
    assert "prod" not in json.loads(ok(cli(daemon, "ls", "gone", "--json")).stdout)["aliases"]
    assert ok(cli(daemon, "rm", "gone", "1")).stdout == "deleted gone@1\n"
    assert json.loads(ok(cli(daemon, "rm", "gone", "2", "--json")).stdout) == {"deleted": [2]}
    assert json.loads(ok(cli(daemon, "ls", "gone", "--json")).stdout)["versions"][0]["version"] == 3
    assert failed(cli(daemon, "rm", "gone", "--alias", "latest")).startswith("error: InvalidConfig: ")
    assert "not both" in failed(cli(daemon, "rm", "gone", "3", "--alias", "x"), 2)

    deploy(daemon, "gone", ECHO)
    assert ok(cli(daemon, "rm", "gone")).stdout == "deleted gone (versions 3, 4)\n"
    assert failed(cli(daemon, "ls", "gone")) == "error: UnknownFunction: no function named 'gone'\n"
    assert failed(cli(daemon, "rm", "gone")).startswith("error: UnknownFunction: ")
    deploy(daemon, "gone", ECHO)
    assert json.loads(ok(cli(daemon, "rm", "gone", "--json")).stdout) == {"deleted": [5]}


# --- auth, url, errors ---------------------------------------------------------------------------


def test_admin_token_from_env_flag_missing_and_wrong(daemon: Daemon) -> None:
    no_token = {"WASMHIVE_ADMIN_TOKEN": None}
    err = failed(cli(daemon, "deploy", "auth", ECHO, env=no_token))
    assert err.startswith("error: Unauthorized: ") and "WASMHIVE_ADMIN_TOKEN" in err
    for args in (["alias", "auth", "prod", "1"], ["rm", "auth"], ["rm", "auth", "1"], ["rm", "auth", "--alias", "a"]):
        assert failed(cli(daemon, *args, env=no_token)).startswith("error: Unauthorized: ")
    wrong = {"WASMHIVE_ADMIN_TOKEN": "x" * 20}
    assert failed(cli(daemon, "deploy", "auth", ECHO, env=wrong)).startswith("error: Forbidden: ")

    ok(cli(daemon, "deploy", "auth", ECHO, "--token", TOKEN, env=no_token))  # --token
    ok(cli(daemon, "deploy", "auth", ECHO))  # $WASMHIVE_ADMIN_TOKEN
    # reading needs no token
    assert ok(cli(daemon, "invoke", "auth", "--data", "open", env=no_token)).stdout == "open"
    assert "auth" in ok(cli(daemon, "ls", env=no_token)).stdout


def test_unreachable_daemon(daemon: Daemon) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for args in (["ls"], ["invoke", "x", "--data", "y"], ["invoke", "x", "--stream"], ["deploy", "x", str(ECHO)]):
        err = failed(cli(daemon, *args, "--url", url))
        assert err.startswith(f"error: DaemonUnreachable: cannot reach the daemon at {url}: "), err
        assert len(err.splitlines()) == 1
    err = failed(cli(daemon, "ls", "--json", env={"WASMHIVE_URL": url}))  # $WASMHIVE_URL
    assert f"cannot reach the daemon at {url}" in err
    # --url wins over $WASMHIVE_URL; a URL without a scheme is http
    bare = daemon.url.removeprefix("http://")
    assert ok(cli(daemon, "ls", "--url", bare, env={"WASMHIVE_URL": url})).stdout.startswith("NAME")


def test_help_lists_the_commands() -> None:
    out = ok(CliRunner().invoke(main, ["--help"])).stdout
    for command in ("deploy", "invoke", "ls", "alias", "rm", "serve", "build"):
        assert f"  {command} " in out
    out = ok(CliRunner().invoke(main, ["invoke", "--help"])).stdout
    for option in ("--data", "--file", "--stream", "--key", "--json", "--url", "--token", "WASMHIVE_URL"):
        assert option in out


# --- the client library --------------------------------------------------------------------------


def test_client_api(daemon: Daemon) -> None:
    with DaemonClient(daemon.url, TOKEN) as client:
        record = client.deploy("lib", ECHO.read_bytes(), options={"timeout": 1.5})
        assert record["version"] == 1 and record["options"] == {"timeout": 1.5}
        assert client.deploy("lib", str(ECHO))["version"] == 2
        reply, headers = client.invoke("lib@1", "hi", key="k", request_id="req-123")
        assert reply == b"hi" and headers["x-wasmhive-version"] == "1" and headers["x-request-id"] == "req-123"
        assert client.set_alias("lib", "beta", {1: 3, 2: 1})["weights"] == {"1": 3, "2": 1}
        assert client.function("lib")["aliases"]["beta"] == {"1": 3, "2": 1}
        assert any(f["name"] == "lib" for f in client.functions())
        assert client.delete_alias("lib", "beta") is None
        assert client.delete_version("lib", 1) == {"deleted": [1]}
        with pytest.raises(DaemonError) as info:
            client.invoke("lib@1")
        assert (info.value.status, info.value.kind, info.value.function) == (404, "UnknownFunction", "lib")
        assert info.value.request_id and str(info.value).startswith("UnknownFunction: ")
        assert client.delete_function("lib") == {"deleted": [2]}
        with pytest.raises(DaemonError) as info:
            client.function("a/b")  # not a route: a body that is not wasmhive's
        assert info.value.status == 404 and info.value.kind == "HTTP 404"
    with DaemonClient(daemon.url) as anonymous, pytest.raises(DaemonError) as info:
        anonymous.delete_function("lib")
    assert (info.value.status, info.value.kind) == (401, "Unauthorized")
    with DaemonClient(f"http://127.0.0.1:{free_port()}") as nowhere, pytest.raises(DaemonUnreachable):
        nowhere.functions()

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    with DaemonClient("http://daemon", transport=httpx.MockTransport(refuse)) as slow:
        with pytest.raises(DaemonUnreachable, match="cannot reach the daemon at http://daemon: no answer in time"):
            slow.invoke("x")
