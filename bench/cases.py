"""Echo callers that bypass the wasmhive runtime: the comparison points of the benchmark.

* :class:`DirectEcho` instantiates the ABI v1 echo module in its own Store and
  calls it either through prebuilt ctypes arrays (the floor for a Python
  caller) or through wasmtime-py's public API.
* :func:`extism_echo` runs an equivalent echo plugin under the Extism Python SDK.

Every caller takes the payload and returns the reply as ``bytes``.
"""

from __future__ import annotations

import ctypes
from ctypes import POINTER, c_void_p

import extism  # type: ignore[import-untyped]
import wasmtime
from timing import AsyncCall, SyncCall
from wasmtime import _ffi as wasmtime_ffi

from wasmhive.actors import ffi

__all__ = [
    "EXTISM_ECHO_WAT",
    "SPIN_WAT",
    "DirectEcho",
    "check_echo",
    "check_echo_async",
    "extism_echo",
    "spin_payload",
]

_U32 = 0xFFFFFFFF
_U64 = (1 << 64) - 1

#: An Extism plugin exporting ``echo``: it copies the input into Extism memory
#: 8 bytes at a time (then byte by byte), as the Extism PDKs do, and sets it as
#: the output.  Host-function names and signatures are those of Extism's
#: ``extism:host/env`` kernel module.
EXTISM_ECHO_WAT = r"""
(module
  (import "extism:host/env" "input_length" (func $input_length (result i64)))
  (import "extism:host/env" "input_load_u8" (func $input_load_u8 (param i64) (result i32)))
  (import "extism:host/env" "input_load_u64" (func $input_load_u64 (param i64) (result i64)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "store_u64" (func $store_u64 (param i64 i64)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))
  (func (export "echo") (result i32)
    (local $n i64) (local $out i64) (local $i i64)
    (local.set $n (call $input_length))
    (local.set $out (call $alloc (local.get $n)))
    (block $words_done
      (loop $words
        (br_if $words_done (i64.gt_u (i64.add (local.get $i) (i64.const 8)) (local.get $n)))
        (call $store_u64 (i64.add (local.get $out) (local.get $i)) (call $input_load_u64 (local.get $i)))
        (local.set $i (i64.add (local.get $i) (i64.const 8)))
        (br $words)))
    (block $bytes_done
      (loop $bytes
        (br_if $bytes_done (i64.ge_u (local.get $i) (local.get $n)))
        (call $store_u8 (i64.add (local.get $out) (local.get $i)) (call $input_load_u8 (local.get $i)))
        (local.set $i (i64.add (local.get $i) (i64.const 1)))
        (br $bytes)))
    (call $output_set (local.get $out) (local.get $n))
    (i32.const 0)))
"""

#: An ABI v1 guest whose calls take a controlled time: ``wh_handle`` reads a
#: little-endian u32 ``n`` from the first 4 bytes of the payload (0 if shorter),
#: runs ``n`` steps of a linear congruential generator (about 1.1 ns each on the
#: benchmark machine), keeps the result in a global so the loop has an effect,
#: and echoes the payload.  No imports, so a call never leaves the guest.
SPIN_WAT = r"""
(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (global $sink (mut i32) (i32.const 0))
  (func (export "wh_alloc") (param $size i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $size)))
    (local.get $ptr))
  (func (export "wh_handle") (param $ptr i32) (param $len i32) (result i64)
    (local $n i32) (local $acc i32)
    (global.set $heap (i32.const 1024))
    (if (i32.ge_u (local.get $len) (i32.const 4))
      (then (local.set $n (i32.load (local.get $ptr)))))
    (local.set $acc (global.get $sink))
    (block $done
      (loop $spin
        (br_if $done (i32.eqz (local.get $n)))
        (local.set $acc (i32.add (i32.mul (local.get $acc) (i32.const 1103515245)) (i32.const 12345)))
        (local.set $n (i32.sub (local.get $n) (i32.const 1)))
        (br $spin)))
    (global.set $sink (local.get $acc))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32))
            (i64.extend_i32_u (local.get $len)))))
"""


def spin_payload(iterations: int) -> bytes:
    """The payload that makes a :data:`SPIN_WAT` call run ``iterations`` loop steps."""
    return iterations.to_bytes(4, "little")


#: Payload sizes used to check that a caller really echoes (word and byte tails).
_CHECK_SIZES = (0, 1, 7, 8, 9, 64, 1000)


_PATTERN = bytes(range(256)) * 4


def _check_reply(name: str, payload: bytes, reply: bytes) -> None:
    if reply != payload:
        raise AssertionError(f"{name} does not echo a {len(payload)}-byte payload: got {len(reply)} bytes")


def check_echo(name: str, call: SyncCall) -> None:
    """Raise AssertionError unless ``call`` returns its payload for a range of sizes."""
    for size in _CHECK_SIZES:
        _check_reply(name, _PATTERN[:size], call(_PATTERN[:size]))


async def check_echo_async(name: str, call: AsyncCall) -> None:
    """The awaitable twin of :func:`check_echo`."""
    for size in _CHECK_SIZES:
        _check_reply(name, _PATTERN[:size], await call(_PATTERN[:size]))


def extism_echo() -> SyncCall:
    """A caller of the Extism echo plugin (the plugin lives as long as the caller)."""
    plugin = extism.Plugin(bytes(wasmtime.wat2wasm(EXTISM_ECHO_WAT)), wasi=False, functions=[])
    call = plugin.call

    def echo(payload: bytes) -> bytes:
        reply: bytes = call("echo", payload)
        return reply

    return echo


class DirectEcho:
    """The ABI v1 echo module in a Store of its own, with no actor around it.

    It uses the runtime's engine (same fuel and epoch settings) with limits
    that never trip, so the guest does the same work as under wasmhive.
    """

    def __init__(self, engine: wasmtime.Engine, module: wasmtime.Module, *, fuel: bool) -> None:
        store = wasmtime.Store(engine)
        if fuel:
            store.set_fuel(_U64)
        store.set_epoch_deadline(1 << 40)
        exports = wasmtime.Instance(store, module, []).exports(store)
        memory, alloc, handle = exports["memory"], exports["wh_alloc"], exports["wh_handle"]
        assert isinstance(memory, wasmtime.Memory)
        assert isinstance(alloc, wasmtime.Func)
        assert isinstance(handle, wasmtime.Func)
        self.store = store
        self.memory = memory
        self.alloc = alloc
        self.handle = handle

    def raw_ctypes(self) -> SyncCall:
        """Echo through ``wasmtime_func_call_unchecked`` with argument arrays built once.

        Does what any ABI v1 call must: alloc, copy in, handle, bounds check,
        copy out.  Nothing else (no limits reset, no error classification).
        """
        if not ffi.AVAILABLE:
            raise RuntimeError("wasmhive.actors.ffi is not available with this wasmtime build")
        ctx = ctypes.cast(self.store._context(), c_void_p).value
        mem = ctypes.addressof(self.memory._memory)
        alloc = ctypes.addressof(self.alloc._func)
        handle = ctypes.addressof(self.handle._func)
        args = (ffi.ValRaw * 2)()
        trap = c_void_p()
        args_addr, trap_addr = ctypes.addressof(args), ctypes.addressof(trap)
        call, data, data_size = ffi.func_call_unchecked, ffi.memory_data, ffi.memory_data_size
        memmove, string_at = ctypes.memmove, ctypes.string_at
        # ctx and the addresses point into the Store: the closure must keep it
        # (and so this object) alive, which it does by raising through it.
        owner = self

        def echo(payload: bytes) -> bytes:
            n = len(payload)
            args[0].i32 = n
            err = call(ctx, alloc, args_addr, 1, trap_addr)
            if err or trap.value:
                raise owner.failure("wh_alloc", err, trap)
            ptr = args[0].i32 & _U32
            if ptr + n > data_size(ctx, mem):
                raise RuntimeError("wh_alloc returned memory out of bounds")
            memmove(data(ctx, mem) + ptr, payload, n)
            args[0].i32 = ptr
            args[1].i32 = n
            err = call(ctx, handle, args_addr, 2, trap_addr)
            if err or trap.value:
                raise owner.failure("wh_handle", err, trap)
            packed = args[0].i64 & _U64
            reply_ptr, reply_len = packed >> 32, packed & _U32
            if reply_ptr + reply_len > data_size(ctx, mem):
                raise RuntimeError("wh_handle returned a reply out of bounds")
            return string_at(data(ctx, mem) + reply_ptr, reply_len)

        return echo

    @staticmethod
    def failure(where: str, err: int | None, trap: c_void_p) -> RuntimeError:
        """The error for a raw call that trapped (``trap``) or failed (``err``); frees either."""
        exc: Exception
        if trap.value:
            trap_ptr = ctypes.cast(trap.value, POINTER(wasmtime_ffi.wasm_trap_t))
            exc = wasmtime.Trap._from_ptr(trap_ptr)
            trap.value = None
        else:
            error_ptr = ctypes.cast(err or 0, POINTER(wasmtime_ffi.wasmtime_error_t))
            exc = wasmtime.WasmtimeError._from_ptr(error_ptr)
        return RuntimeError(f"{where} failed: {exc}")

    def public(self) -> SyncCall:
        """Echo through wasmtime-py's ``Func.__call__``, ``Memory.write`` and ``Memory.read``."""
        store, memory, alloc, handle = self.store, self.memory, self.alloc, self.handle

        def echo(payload: bytes) -> bytes:
            n = len(payload)
            ptr = alloc(store, n) & _U32
            memory.write(store, payload, ptr)
            packed = handle(store, ptr, n) & _U64
            reply_ptr, reply_len = packed >> 32, packed & _U32
            return bytes(memory.read(store, reply_ptr, reply_ptr + reply_len))

        return echo
