"""One guest instance: a wasmtime Store and Instance, called through ABI v1.

:class:`WasmInstance` is synchronous and thread-agnostic: an actor calls it on
the event-loop thread (``inline``) or on its own OS thread (``thread``), never
from two threads at once.  It turns every way a call can go wrong into a typed
error; :attr:`WasmhiveError.fatal` errors mean the instance must be dropped.

Two call paths give the same results: ``fast`` calls the fixed ABI signatures
through prebuilt ctypes argument arrays (see :mod:`.ffi`), ``public`` through
wasmtime-py's ``Func.__call__``.  Everything but the call itself (limits,
bounds checks, copying, error classification) is shared.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable
from ctypes import POINTER, c_uint64, c_void_p
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

import wasmtime
from wasmtime import _ffi as wasmtime_ffi

from . import abi, ffi
from .errors import (
    AbiError,
    ActorKilled,
    CallTimeout,
    FuelExhausted,
    GuestError,
    GuestTrap,
    OutOfMemory,
    PayloadTooLarge,
    WasmhiveError,
)
from .host import AbiViolation, HostServices, current

__all__ = ["CallPath", "ChunkSink", "InstanceSpec", "WasmInstance"]

CallPath = Literal["fast", "public"]

_U64_MAX = 2**64 - 1
_PAGE = 65536
# Traps that clearly have nothing to do with running out of memory.
_NOT_MEMORY_TRAPS = frozenset(
    {
        wasmtime.TrapCode.INTEGER_DIVISION_BY_ZERO,
        wasmtime.TrapCode.INTEGER_OVERFLOW,
        wasmtime.TrapCode.BAD_CONVERSION_TO_INTEGER,
        wasmtime.TrapCode.STACK_OVERFLOW,
        wasmtime.TrapCode.INDIRECT_CALL_TO_NULL,
        wasmtime.TrapCode.BAD_SIGNATURE,
    }
)


class ChunkSink(Protocol):
    """Where a call's emitted stream chunks go."""

    def emit(self, data: bytes) -> None: ...


@dataclass(frozen=True)
class InstanceSpec:
    """Everything needed to spawn instances of one deployment."""

    function: str
    engine: wasmtime.Engine
    instance_pre: wasmtime.InstancePre
    services: HostServices
    #: Seconds a call may run.
    timeout: float
    #: Seconds ``_initialize`` and ``wh_init`` may take together at spawn.
    init_timeout: float
    #: The epoch ticker's period (seconds).
    tick: float
    memory_limit: int | None
    fuel: int | None
    fuel_enabled: bool
    uses_wasi: bool
    has_initialize: bool
    has_init: bool
    max_payload_bytes: int
    #: A WASI command (exports ``_start``): a fresh instance runs per call.
    command: bool = False
    #: Whether starting an instance runs guest code (a start function, ``_initialize``
    #: or ``wh_init``); if not, a thread actor may start on the loop (it is quick and bounded).
    starts_guest_code: bool = True
    #: Total bytes one call may emit as stream chunks (further chunks are dropped).
    max_stream_bytes: int = 64 * 1024 * 1024
    #: Largest table (elements) a guest may have; tables are host memory too.
    max_table_elements: int = 100_000
    call_path: CallPath = "fast"
    # --- JS actors (actors/js.py) ---
    #: The user's JavaScript source: instances run it on QuickJS (see docs/js.md).
    js_source: str | None = None


class WasmInstance:
    """A live guest instance.  Create it with :meth:`spawn`."""

    def __init__(self, spec: InstanceSpec, actor_id: int | None = None) -> None:
        self.spec = spec
        self.function = spec.function
        self.services = spec.services
        self.actor_id = actor_id
        # Set by spawn(), once the instance exists.
        self._memory: wasmtime.Memory
        self._alloc_func: wasmtime.Func
        self._handle_func: wasmtime.Func
        self._mem_addr: int
        self._alloc_addr: int
        self._handle_addr: int
        self._fault: WasmhiveError | None = None
        #: A non-fatal error the running call will raise when it returns.
        self._pending: WasmhiveError | None = None
        self._sink: ChunkSink | None = None
        self._emitted = 0

        self._killed = False
        #: The limits calls run under: the deployment's, unless a fault injection changed them
        #: (see "fault injection" below).
        self._timeout = spec.timeout
        self._fuel = spec.fuel
        self._memory_limit = spec.memory_limit
        self._where = "start-up"
        self._deadline = time.monotonic() + spec.init_timeout
        self._store: wasmtime.Store
        self._ctx = 0
        if not spec.command:
            self._open_store(self._wasi_config() if spec.uses_wasi else None)

        # Raw argument arrays and trap slots, built once.  The nested ones are
        # for wh_alloc calls made from inside a host call.
        self._args = (ffi.ValRaw * 2)()
        self._args_addr = ctypes.addressof(self._args)
        self._trap = c_void_p()
        self._trap_addr = ctypes.addressof(self._trap)
        self._nested_args = (ffi.ValRaw * 1)()
        self._nested_trap = c_void_p()

        #: Ticks to the first deadline check of a call (see _deadline_reached).
        self._first_ticks = self._ticks_for(spec.timeout)
        if ffi.AVAILABLE:
            self._first_ticks = min(_CHECK_TICKS, self._first_ticks)
        use_fast = spec.call_path == "fast" and ffi.AVAILABLE
        self._call_alloc: Callable[[int, bool], int] = self._alloc_fast if use_fast else self._alloc_public
        self._call_handle: Callable[[int, int], int] = self._handle_fast if use_fast else self._handle_public
        self._call_void: Callable[[wasmtime.Func, str], None] = self._void_fast if use_fast else self._void_public

    # --- spawning -----------------------------------------------------------

    @classmethod
    def spawn(cls, spec: InstanceSpec, actor_id: int | None = None) -> WasmInstance:
        """Instantiate the guest and run its ``_initialize`` and ``wh_init``.

        Raises :class:`OutOfMemory` if the module's initial memory is over the
        limit, or the typed fault of a trapping initializer.
        """
        self = cls(spec, actor_id)
        previous = current.instance
        current.instance = self
        try:
            try:
                instance = spec.instance_pre.instantiate(self._store)
            except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
                if self._fault is None and "memory" in str(exc) and spec.memory_limit is not None:
                    raise OutOfMemory(
                        f"cannot instantiate within memory_limit={spec.memory_limit} bytes: {exc}",
                        function=spec.function,
                    ) from None
                raise self._classify(exc, "instantiation") from None
            exports = instance.exports(self._store)
            memory, alloc, handle = exports["memory"], exports["wh_alloc"], exports["wh_handle"]
            # Checked at deploy time (runtime.module.inspect_module).
            assert isinstance(memory, wasmtime.Memory)
            assert isinstance(alloc, wasmtime.Func) and isinstance(handle, wasmtime.Func)
            self._memory, self._alloc_func, self._handle_func = memory, alloc, handle
            self._mem_addr = ctypes.addressof(self._memory._memory)
            self._alloc_addr = ctypes.addressof(self._alloc_func._func)
            self._handle_addr = ctypes.addressof(self._handle_func._func)
            for name, present in (("_initialize", spec.has_initialize), ("wh_init", spec.has_init)):
                if present:
                    func = exports[name]
                    assert isinstance(func, wasmtime.Func)
                    self._call_void(func, name)
                    self._raise_recorded()
        finally:
            current.instance = previous
        return self

    def _open_store(self, wasi: wasmtime.WasiConfig | None) -> None:
        """A new Store with the deployment's limits, deadline and WASI context."""
        spec = self.spec
        store = wasmtime.Store(spec.engine)
        # One memory, a few bounded tables, one instance: everything a guest can
        # allocate in the host is capped, not only its linear memory.
        store.set_limits(
            memory_size=-1 if spec.memory_limit is None else spec.memory_limit,
            table_elements=spec.max_table_elements,
            instances=1,
            tables=8,
            memories=1,
        )
        if spec.fuel_enabled:
            store.set_fuel(_U64_MAX if spec.fuel is None else spec.fuel)
        if ffi.AVAILABLE:
            ffi.set_epoch_deadline_callback(ctypes.cast(store.ptr(), c_void_p).value, _ON_DEADLINE_ADDR, None, None)
        store.set_epoch_deadline(self._ticks_until(self._deadline))
        if wasi is not None:
            store.set_wasi(wasi)
        self._store = store
        self._ctx = ctypes.cast(store._context(), c_void_p).value or 0

    def _wasi_config(self) -> wasmtime.WasiConfig:
        config = wasmtime.WasiConfig()
        config.argv = [self.function]
        services, actor_id = self.services, self.actor_id

        def to_log(level: int) -> Callable[[bytes], None]:
            def write(data: bytes) -> None:
                for line in data.decode("utf-8", "replace").splitlines():
                    services.log(level, line, actor_id)

            return write

        config.stdout_custom = to_log(2)
        config.stderr_custom = to_log(3)
        return config

    # --- the call -------------------------------------------------------------

    def handle(self, payload: bytes, sink: ChunkSink | None = None) -> bytes:
        """Run ``wh_handle`` once with ``payload`` and return the reply bytes.

        Emitted chunks go to ``sink`` as they are produced.  Raises
        :class:`GuestError` (the instance lives on), :class:`PayloadTooLarge`
        for an oversized reply (the instance lives on), or a fatal
        :class:`GuestFault`.
        """
        spec = self.spec
        n = len(payload)
        if n > spec.max_payload_bytes:  # (checked inline: this is the hot path)
            self._check_size(n, "payload")
        ctx = self._ctx
        self._where = "wh_handle"
        self._deadline = time.monotonic() + self._timeout
        fuel = self._fuel
        if ffi.AVAILABLE:
            ffi.set_epoch_deadline(ctx, self._first_ticks)
            if fuel is not None:
                ffi.set_fuel(ctx, fuel)
        else:  # pragma: no cover - depends on the wasmtime build
            self._store.set_epoch_deadline(self._first_ticks)
            if fuel is not None:
                self._store.set_fuel(fuel)
        self._sink = sink
        self._pending = None
        self._emitted = 0
        previous = current.instance
        current.instance = self
        try:
            ptr = self._call_alloc(n, False)
            self._write(ptr, payload, "wh_alloc")
            packed = self._call_handle(ptr, n)
        except AbiViolation as exc:
            raise AbiError(str(exc), function=self.function) from None
        finally:
            current.instance = previous
            self._sink = None
        reply_ptr, reply_len = abi.unpack_location(packed)
        if self._pending is not None:
            pending, self._pending = self._pending, None
            raise pending
        if reply_len > spec.max_payload_bytes:
            self._check_size(reply_len, "reply")
        try:
            return self._read(reply_ptr, reply_len)
        except AbiViolation as exc:
            raise AbiError(f"wh_handle returned {exc}", function=self.function) from None

    # Deadlines, kill and grace -----------------------------------------------------

    def kill(self) -> None:
        """Stop the guest at its next deadline check (within a few ms), from any thread.

        The running call (if any) ends with :class:`ActorKilled`; the instance
        must then be dropped.
        """
        self._killed = True

    def check_deadline(self) -> None:
        """From host code the guest waits in: raise the call's fault if it is killed or out of time."""
        fault = self._overdue()
        if fault is not None:
            raise fault

    @property
    def deadline(self) -> float:
        """When the running call's time is up (``time.monotonic()`` seconds)."""
        return self._deadline

    def shorten_deadline(self, seconds: float) -> None:
        """Let the running call go on for at most ``seconds`` more (from any thread)."""
        self._deadline = min(self._deadline, time.monotonic() + seconds)

    # Fault injection (the stress harness, docs/stress.md) -------------------------------
    # Each is called on the thread that runs the guest, between two calls (from an
    # actor's call hook), and changes only what the next calls meet; the real fault
    # path (epoch deadline, store limits, fuel metering) does the rest.

    def expire_next_call(self) -> None:
        """The next call runs out of time at its first deadline check: :class:`CallTimeout`, as an overrun."""
        self._timeout = 0.0
        self._first_ticks = 0

    def kill_next_call(self) -> None:
        """Kill the instance now, so the next call stops at its first deadline check: :class:`ActorKilled`."""
        self._killed = True
        self._first_ticks = 0

    def limit_memory(self, limit: int | None = None) -> None:
        """Lower the store's memory limit (default: the current size): the guest's next ``memory.grow`` is refused.

        A guest that traps on the refusal ends with :class:`OutOfMemory` (the usual inference
        of ``_memory_exhausted``, against this limit).  A guest that never grows is not affected.
        """
        self._check_open()
        new = self.memory_size() if limit is None else limit
        self._memory_limit = new
        self._store.set_limits(
            memory_size=new,
            table_elements=self.spec.max_table_elements,
            instances=1,
            tables=8,
            memories=1,
        )

    def drain_fuel(self) -> None:
        """The next call starts with no fuel: it traps at once with :class:`FuelExhausted` (needs fuel metering)."""
        if not self.spec.fuel_enabled:
            raise RuntimeError("fuel metering is off: RuntimeConfig(fuel=True) is needed")
        self._fuel = 0

    def _ticks_for(self, seconds: float) -> int:
        return max(1, int(-(-seconds // self.spec.tick))) + 1

    def _ticks_until(self, deadline: float) -> int:
        ticks = self._ticks_for(max(0.0, deadline - time.monotonic()))
        # With the deadline callback, check every few ticks (kill, grace); without it, arm it all.
        return min(_CHECK_TICKS, ticks) if ffi.AVAILABLE else ticks

    #: The name ``_where`` has while a call (not start-up) runs.
    CALL_PHASE: ClassVar[str] = "wh_handle"

    def _overdue(self) -> WasmhiveError | None:
        """The fault that must end the guest now (killed, or out of time), if any."""
        if self._killed:
            return ActorKilled(f"{self._where} was killed", function=self.function)
        if time.monotonic() >= self._deadline:
            timeout = self.spec.timeout if self._where == self.CALL_PHASE else self.spec.init_timeout
            message = f"{self._where} ran past the timeout of {timeout:g}s"
            return CallTimeout(message, function=self.function, timeout=timeout)
        return None

    def _deadline_reached(self, delta: Any, kind: Any) -> int | None:
        """The epoch deadline came (on the guest's thread): stop the guest or let it go on."""
        fault = self._overdue()
        if fault is not None:
            self.record_fault(fault)
            return _interrupt()
        delta[0] = self._ticks_until(self._deadline)
        kind[0] = ffi.UPDATE_DEADLINE_CONTINUE
        return None

    def _check_size(self, size: int, what: str) -> None:
        """Refuse a payload or reply over ``max_payload_bytes`` (not a fault: the actor lives on)."""
        limit = self.spec.max_payload_bytes
        if size > limit:
            raise PayloadTooLarge(
                f"{what} of {size} bytes is over max_payload_bytes={limit}",
                function=self.function,
                size=size,
                limit=limit,
            )

    # Called by host functions while the guest runs -----------------------------

    def emit(self, data: bytes) -> None:
        """Deliver one stream chunk of the running call.

        An oversized chunk is not delivered; the call then ends with
        :class:`PayloadTooLarge` (the actor lives on).
        """
        limit = self.spec.max_payload_bytes
        self._emitted += len(data)
        if len(data) > limit:
            if self._pending is None:
                self._pending = PayloadTooLarge(
                    f"emitted chunk of {len(data)} bytes is over max_payload_bytes={limit}",
                    function=self.function,
                    size=len(data),
                    limit=limit,
                )
        elif self._emitted > self.spec.max_stream_bytes:
            # The rest of the call's output is dropped: the host's memory stays bounded.
            if self._pending is None:
                self._pending = PayloadTooLarge(
                    f"the call emitted more than max_stream_bytes={self.spec.max_stream_bytes}",
                    function=self.function,
                    size=self._emitted,
                    limit=self.spec.max_stream_bytes,
                )
        elif self._sink is not None:
            self._sink.emit(data)

    def record_guest_error(self, message: str) -> None:
        """Remember a ``fail`` call: the running call will raise :class:`GuestError`."""
        if self._pending is None:
            self._pending = GuestError(message, function=self.function)

    def record_fault(self, fault: WasmhiveError) -> None:
        """Remember why a host function aborted the call (wins over the trap it causes)."""
        if self._fault is None:
            self._fault = fault

    def read(self, ptr: int, length: int, what: str = "guest") -> bytes:
        """Copy ``length`` bytes at ``ptr`` out of guest memory, bounds-checked."""
        return self._read(ptr & 0xFFFFFFFF, length & 0xFFFFFFFF, what)

    def write_new(self, data: bytes) -> int:
        """Copy ``data`` into fresh guest memory from ``wh_alloc``; return it packed."""
        ptr = self._call_alloc(len(data), True)
        self._write(ptr, data, "wh_alloc")
        return abi.pack_location(ptr, len(data))

    # --- memory -----------------------------------------------------------------

    def _bounds(self) -> tuple[int, int]:
        if ffi.AVAILABLE and self.spec.call_path == "fast":
            return ffi.memory_data(self._ctx, self._mem_addr) or 0, ffi.memory_data_size(self._ctx, self._mem_addr)
        base = ctypes.cast(self._memory.data_ptr(self._store), c_void_p).value or 0
        return base, self._memory.data_len(self._store)

    def _read(self, ptr: int, length: int, what: str = "reply") -> bytes:
        base, size = self._bounds()
        if ptr + length > size:
            raise AbiViolation(f"{what} range [{ptr}, {ptr + length}) is outside guest memory of {size} bytes")
        return ctypes.string_at(base + ptr, length) if length else b""

    def _write(self, ptr: int, data: bytes, what: str) -> None:
        base, size = self._bounds()
        if ptr + len(data) > size:
            raise AbiViolation(f"{what} returned [{ptr}, {ptr + len(data)}), outside guest memory of {size} bytes")
        ctypes.memmove(base + ptr, data, len(data))

    # --- the two call paths ---------------------------------------------------

    def _alloc_fast(self, size: int, nested: bool) -> int:
        args = self._nested_args if nested else self._args
        trap = self._nested_trap if nested else self._trap
        args[0].i32 = size
        err = ffi.func_call_unchecked(self._ctx, self._alloc_addr, ctypes.addressof(args), 1, ctypes.addressof(trap))
        if err or trap.value:
            raise self._raw_failure(err, trap, "wh_alloc")
        return self._allocated(args[0].i32 & 0xFFFFFFFF, size)

    def _handle_fast(self, ptr: int, size: int) -> int:
        args = self._args
        args[0].i32 = ptr
        args[1].i32 = size
        err = ffi.func_call_unchecked(self._ctx, self._handle_addr, self._args_addr, 2, self._trap_addr)
        if err or self._trap.value:
            raise self._raw_failure(err, self._trap, "wh_handle")
        return args[0].i64

    def _void_fast(self, func: wasmtime.Func, name: str) -> None:
        err = ffi.func_call_unchecked(
            self._ctx, ctypes.addressof(func._func), self._args_addr, 0, self._trap_addr
        )
        if err or self._trap.value:
            raise self._raw_failure(err, self._trap, name)

    def _alloc_public(self, size: int, nested: bool) -> int:
        try:
            ptr = int(self._alloc_func(self._store, size)) & 0xFFFFFFFF
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            raise self._classify(exc, "wh_alloc") from None
        return self._allocated(ptr, size)

    def _allocated(self, ptr: int, size: int) -> int:
        if ptr == 0 and size > 0:
            # NULL from a C-style allocator: it could not find the memory.
            raise OutOfMemory(
                f"wh_alloc returned NULL for {size} bytes (memory_limit={self.spec.memory_limit})",
                function=self.function,
                memory_limit=self.spec.memory_limit,
            )
        return ptr

    def _handle_public(self, ptr: int, size: int) -> int:
        try:
            return int(self._handle_func(self._store, ptr, size))
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            raise self._classify(exc, "wh_handle") from None

    def _void_public(self, func: wasmtime.Func, name: str) -> None:
        try:
            func(self._store)
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            raise self._classify(exc, name) from None

    # --- errors -----------------------------------------------------------------

    def _raw_failure(self, err: int | None, trap: c_void_p, where: str) -> WasmhiveError:
        exc: wasmtime.Trap | wasmtime.WasmtimeError
        if trap.value:
            exc = wasmtime.Trap._from_ptr(ctypes.cast(trap.value, POINTER(wasmtime_ffi.wasm_trap_t)))
            trap.value = None
            if err:
                wasmtime.WasmtimeError._from_ptr(
                    ctypes.cast(err, POINTER(wasmtime_ffi.wasmtime_error_t))
                )
        else:
            assert err is not None
            exc = wasmtime.WasmtimeError._from_ptr(
                ctypes.cast(err, POINTER(wasmtime_ffi.wasmtime_error_t))
            )
        return self._classify(exc, where)

    def _raise_recorded(self) -> None:
        if self._fault is not None:
            fault, self._fault = self._fault, None
            raise fault

    def _classify(self, exc: wasmtime.Trap | wasmtime.WasmtimeError, where: str) -> WasmhiveError:
        """Turn a wasmtime trap or error into the typed fault it stands for."""
        if self._fault is not None:
            fault, self._fault = self._fault, None
            return fault
        if isinstance(exc, wasmtime.ExitTrap):
            return self._exited(exc.code, where)
        spec, fn = self.spec, self.function
        code = exc.trap_code if isinstance(exc, wasmtime.Trap) else None
        message = _cause(exc.message if isinstance(exc, wasmtime.Trap) else str(exc))
        if code is None and "all fuel consumed" in message:
            code = wasmtime.TrapCode.OUT_OF_FUEL
        if code == wasmtime.TrapCode.INTERRUPT:  # only without the deadline callback
            timeout = spec.timeout if where in ("wh_handle", "wh_alloc") else spec.init_timeout
            return CallTimeout(f"{where} ran past the timeout of {timeout:g}s", function=fn, timeout=timeout)
        if code == wasmtime.TrapCode.OUT_OF_FUEL:
            budget = self._fuel  # (this call's: the function's, or 0 from drain_fuel)
            of = f" budget of {budget}" if budget is not None else ""
            return FuelExhausted(f"{where} used up its fuel{of}", function=fn, fuel=budget)
        if code == wasmtime.TrapCode.ALLOCATION_TOO_LARGE or (
            code not in _NOT_MEMORY_TRAPS and self._memory_exhausted()
        ):
            return OutOfMemory(
                f"{where} ran out of memory: memory_limit={self._memory_limit} bytes reached ({message})",
                function=fn,
                memory_limit=self._memory_limit,
            )
        frames = []
        if isinstance(exc, wasmtime.Trap):
            for frame in exc.frames:
                name = frame.func_name or f"func[{frame.func_index}]"
                frames.append(f"{frame.module_name or '<module>'}!{name} @ {frame.module_offset:#x}")
        return GuestTrap(
            f"{where} trapped: {message}",
            function=fn,
            trap_code=None if code is None else code.name.lower(),
            backtrace=frames,
        )

    def _exited(self, code: int, where: str) -> WasmhiveError:
        """The guest called WASI ``proc_exit``: in the middle of a handler, a fault."""
        return GuestTrap(
            f"{where} called proc_exit({code})", function=self.function, trap_code="proc_exit", exit_code=code
        )

    def _memory_exhausted(self) -> bool:
        """Whether a trap should count as running out of memory.

        wasmtime's C API does not report a refused ``memory.grow``, so this is
        a rule: the guest trapped while using more than three quarters of its
        memory limit (or less than a page below it).
        """
        limit = self._memory_limit
        if limit is None or not hasattr(self, "_memory"):
            return False
        _, size = self._bounds()
        return size + _PAGE > limit or size * 4 > limit * 3

    # --- introspection and teardown ---------------------------------------------------

    def _check_open(self) -> None:
        if "_store" not in self.__dict__:
            raise RuntimeError("the instance is closed")

    def close(self) -> None:
        """Free the Store now (not at some later garbage collection).

        Call it only when no call is running.  The instance is unusable after.
        """
        store = self.__dict__.pop("_store", None)
        for name in ("_memory", "_alloc_func", "_handle_func", "_call_alloc", "_call_handle", "_call_void"):
            self.__dict__.pop(name, None)
        if store is not None:
            store.close()

    def memory_size(self) -> int:
        """Current size of the guest's linear memory in bytes."""
        self._check_open()
        return self._bounds()[1]

    def fuel_left(self) -> int | None:
        """Fuel left in the store (None when fuel is not enabled)."""
        self._check_open()
        if not self.spec.fuel_enabled:
            return None
        out = c_uint64()
        err = ffi.get_fuel(self._ctx, ctypes.byref(out)) if ffi.AVAILABLE else None
        return None if err else out.value


#: Longest stretch (in ticks) between two deadline checks of a running call.
_CHECK_TICKS = 10


def _interrupt() -> int:
    return int(ffi.error_new(b"wasmhive: call interrupted") or 0)


def _on_deadline(ctx: int, data: int, delta: Any, kind: Any) -> int | None:
    instance = current.instance
    if instance is None:  # pragma: no cover - a store only runs guest code under an instance
        return _interrupt()
    try:
        return instance._deadline_reached(delta, kind)
    except BaseException:  # never let an exception cross into wasmtime
        return _interrupt()


_ON_DEADLINE = ffi.DeadlineCallback(_on_deadline)
_ON_DEADLINE_ADDR = ctypes.cast(_ON_DEADLINE, c_void_p).value


def _cause(message: str) -> str:
    """The one-line reason in a wasmtime trap message (which also holds a backtrace)."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if not lines:
        return "unknown trap"
    if "Caused by:" in lines:
        after = lines[lines.index("Caused by:") + 1 :]
        if after:
            return after[-1]
    return lines[-1] if lines[0].startswith("error while executing") else lines[0]
