"""The host side of guest ABI v1: the ``wasmhive`` imports and host-call dispatch.

The four imports (``emit``, ``fail``, ``log``, ``host_call``) are defined once
per deployment's linker as raw ("unchecked") wasmtime callbacks.  They are
shared by every instance of the deployment, so each callback finds the
instance it serves through :data:`current`, a thread-local that an instance
sets around every call into its guest (a Store is only ever entered from one
thread at a time, so the thread identifies the call).

No callback ever lets a Python exception escape into wasmtime: a violation is
recorded on the instance as a typed fault and the callback returns a trap,
which ends the call.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from ctypes import c_size_t, c_void_p
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
import wasmtime

from . import abi, ffi
from .errors import AbiError, HostError, WasmhiveError

if TYPE_CHECKING:
    from .instance import WasmInstance

__all__ = [
    "AbiViolation",
    "Fetcher",
    "HostCallError",
    "HostCallHook",
    "HostCallHooks",
    "HostServices",
    "KeyValueStore",
    "current",
    "define_host_imports",
    "dispatch_host_call",
]

guest_logger = logging.getLogger("wasmhive.guest")

#: Longest log line kept; longer ones are cut.
MAX_LOG_LINE = 8192

_PY_LEVELS = {0: logging.DEBUG, 1: logging.DEBUG, 2: logging.INFO, 3: logging.WARNING, 4: logging.ERROR}


class AbiViolation(Exception):
    """Raised inside host code when the guest broke the ABI; becomes :class:`AbiError`."""


class KeyValueStore(Protocol):
    """What the key-value host calls need.  Keys live in one namespace per function.

    Implementations must be safe to call from several threads at once.
    """

    def get(self, namespace: str, key: str) -> bytes | None: ...

    def set(self, namespace: str, key: str, value: bytes, ttl: float | None = None) -> None: ...

    def delete(self, namespace: str, key: str) -> bool: ...

    def incr(self, namespace: str, key: str, by: int = 1, ttl: float | None = None) -> int: ...


class HostCallError(Exception):
    """Raised by host-call code: the guest gets an error result with this ``code``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


#: Runs one ``http.fetch`` for a guest, blocking the calling (actor) thread.
#: Arguments: the request, where relayed chunks go, the call's deadline
#: (``time.monotonic()`` seconds).  Returns the result value; raises HostCallError.
Fetcher = Callable[[abi.HttpFetchRequest, Callable[[bytes], None], float], dict[str, Any]]


#: Called as ``hook(op, function)`` on the guest's thread just before a host call
#: (``"kv.get"``, ``"secret.get"``, ``"http.fetch"``, ...) runs.  It may sleep (a slow
#: service), raise :class:`HostCallError` (the guest gets that error result) or raise
#: anything else (a host failure: the call ends with ``HostError`` and the actor is
#: replaced).  Tools only: the stress harness's host faults (docs/stress.md).
HostCallHook = Callable[[str, str], None]


class HostCallHooks:
    """The runtime's hook on every host call of every function (None: no hook)."""

    __slots__ = ("before",)

    def __init__(self) -> None:
        self.before: HostCallHook | None = None


@dataclass(frozen=True)
class HostServices:
    """The host's services for one deployment.

    ``secrets`` holds only the secrets granted to the deployment; ``fetch`` is
    None unless the deployment may use the network.
    """

    function: str
    kv: KeyValueStore
    logger: logging.Logger = field(default=guest_logger)
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)
    fetch: Fetcher | None = None
    #: Shared with the runtime: see :data:`HostCallHook`.
    hooks: HostCallHooks | None = None

    def log(self, level: int, message: str, actor_id: int | None = None) -> None:
        """Write a guest log line (``level`` as in ABI v1: 0 trace ... 4 error)."""
        self.logger.log(
            _PY_LEVELS.get(level, logging.INFO),
            "[%s#%s] %s",
            self.function,
            actor_id,
            message[:MAX_LOG_LINE],
            extra={"wasmhive_function": self.function, "wasmhive_actor": actor_id},
        )


class _Current(threading.local):
    instance: WasmInstance | None = None


#: The instance whose guest is running on this thread, if any.
current = _Current()


def _error(code: str, message: str) -> abi.HostResult:
    return abi.HostResult(ok=False, error=abi.HostErrorInfo(code=code, message=message))


def dispatch_host_call(
    services: HostServices, raw: bytes, actor_id: int | None = None, instance: WasmInstance | None = None
) -> abi.HostResult:
    """Decode and run one host-call request.

    Requests that decode as msgpack but are not a valid request (unknown
    operation, wrong field types, unsupported version) get an error result the
    guest can read.  Bytes that are not msgpack at all raise
    :class:`AbiViolation`: the guest's encoder is broken.
    """
    try:
        request = abi.request_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        try:
            envelope = abi.op_decoder.decode(raw)
            op, version = envelope.op, envelope.v
        except msgspec.DecodeError:
            op = version = None
        if type(version) is int and version != abi.ABI_VERSION:
            return _error("unsupported_version", f"host call version {version!r} is not supported (this host speaks 1)")
        if isinstance(op, str) and op not in abi.KNOWN_OPS:
            return _error("unknown_op", f"unknown host call operation {op!r}")
        return _error("bad_request", str(exc))
    except msgspec.DecodeError as exc:
        raise AbiViolation(f"host_call request is not valid msgpack: {exc}") from None
    if request.v != abi.ABI_VERSION:
        return _error("unsupported_version", f"host call version {request.v} is not supported (this host speaks 1)")
    try:
        hooks = services.hooks
        if hooks is not None and hooks.before is not None:
            hooks.before(type(request).__struct_config__.tag, services.function)  # (the op name)
        return abi.HostResult(ok=True, value=_run(services, request, actor_id, instance))
    except HostCallError as exc:
        return _error(exc.code, str(exc))




def _run(services: HostServices, request: abi.HostRequest, actor_id: int | None, instance: WasmInstance | None) -> Any:
    ns = services.function
    if isinstance(request, abi.KvGetRequest):
        return services.kv.get(ns, request.key)
    if isinstance(request, abi.KvSetRequest):
        _check_ttl(request.ttl)
        services.kv.set(ns, request.key, request.value, request.ttl)
        return None
    if isinstance(request, abi.KvDeleteRequest):
        return services.kv.delete(ns, request.key)
    if isinstance(request, abi.KvIncrRequest):
        _check_ttl(request.ttl)
        if not -(2**63) <= request.by < 2**63:
            raise HostCallError("bad_request", f"kv.incr by must fit in a signed 64-bit integer, got {request.by}")
        try:
            return services.kv.incr(ns, request.key, request.by, request.ttl)
        except ValueError as exc:
            raise HostCallError("type_error", str(exc)) from None
    if isinstance(request, abi.LogRequest):
        services.log(request.level, request.message, actor_id)
        return None
    if isinstance(request, abi.TimeMonotonicRequest):
        return time.monotonic_ns()
    if isinstance(request, abi.TimeWallRequest):
        return time.time_ns()
    if isinstance(request, abi.RandomBytesRequest):
        if not 0 <= request.n <= abi.MAX_RANDOM_BYTES:
            raise HostCallError("bad_request", f"random.bytes n must be 0..{abi.MAX_RANDOM_BYTES}, got {request.n}")
        return os.urandom(request.n)
    if isinstance(request, abi.SecretGetRequest):
        value = services.secrets.get(request.name)
        if value is None:
            raise HostCallError("not_granted", f"no secret named {request.name!r} is granted to this function")
        return value
    if isinstance(request, abi.HttpFetchRequest):
        if services.fetch is None or instance is None:
            raise HostCallError("not_granted", "this function may not use the network (deploy it with fetch=...)")
        return services.fetch(request, instance.emit, instance.deadline)
    raise HostCallError("unknown_op", f"unhandled operation {type(request).__name__}")  # pragma: no cover


def _check_ttl(ttl: float | None) -> None:
    if ttl is not None and not ttl > 0:
        raise HostCallError("bad_request", f"ttl must be a positive number of seconds, got {ttl}")


# --- raw wasmtime callbacks -------------------------------------------------

_HostCallback = ctypes.CFUNCTYPE(c_size_t, c_void_p, c_void_p, ctypes.POINTER(ffi.ValRaw), c_size_t)
_Finalizer = ctypes.CFUNCTYPE(None, c_void_p)


def _trap(instance: WasmInstance | None, name: str, exc: BaseException) -> int:
    function = instance.function if instance is not None else None
    fault: WasmhiveError
    if isinstance(exc, AbiViolation):
        fault = AbiError(str(exc), function=function)
    elif isinstance(exc, WasmhiveError):  # e.g. the guest's wh_alloc trapped inside host_call
        fault = exc
    else:
        guest_logger.error("host function %s failed", name, exc_info=exc)
        fault = HostError(f"host function {name} failed: {exc!r}", function=function)
    message = str(fault)
    if instance is not None:
        instance.record_fault(fault)
    data = message.encode()
    return int(ffi.trap_new(data, len(data)) or 0)


def _emit(env: int, caller: int, args: Any, nargs: int) -> int:
    instance = current.instance
    try:
        assert instance is not None, "emit called outside a call"
        instance.emit(instance.read(args[0].i32, args[1].i32, "emit"))
        return 0
    except BaseException as exc:
        return _trap(instance, "emit", exc)


def _fail(env: int, caller: int, args: Any, nargs: int) -> int:
    instance = current.instance
    try:
        assert instance is not None, "fail called outside a call"
        message = instance.read(args[0].i32, args[1].i32, "fail").decode("utf-8", "replace")
        instance.record_guest_error(message)
        return 0
    except BaseException as exc:
        return _trap(instance, "fail", exc)


def _log(env: int, caller: int, args: Any, nargs: int) -> int:
    instance = current.instance
    try:
        assert instance is not None, "log called outside a call"
        raw = instance.read(args[1].i32, min(args[2].i32 & 0xFFFFFFFF, MAX_LOG_LINE), "log")
        message = raw.decode("utf-8", "replace")
        instance.services.log(args[0].i32, message, instance.actor_id)
        return 0
    except BaseException as exc:
        return _trap(instance, "log", exc)


def _host_call(env: int, caller: int, args: Any, nargs: int) -> int:
    instance = current.instance
    try:
        assert instance is not None, "host_call called outside a call"
        raw = instance.read(args[0].i32, args[1].i32, "host_call")
        result = dispatch_host_call(instance.services, raw, instance.actor_id, instance)
        try:
            encoded = abi.result_encoder.encode(result)
        except (OverflowError, msgspec.EncodeError) as exc:
            encoded = abi.result_encoder.encode(_error("bad_request", f"the result cannot be encoded: {exc}"))
        args[0].i64 = instance.write_new(encoded)
        return 0
    except BaseException as exc:
        return _trap(instance, "host_call", exc)


_CALLBACKS: dict[str, Any] = {
    "emit": _HostCallback(_emit),
    "fail": _HostCallback(_fail),
    "log": _HostCallback(_log),
    "host_call": _HostCallback(_host_call),
}
_NO_FINALIZER = _Finalizer(lambda env: None)

_VALTYPES: dict[str, Callable[[], wasmtime.ValType]] = {
    "i32": wasmtime.ValType.i32,
    "i64": wasmtime.ValType.i64,
}


def _functype(params: tuple[str, ...], results: tuple[str, ...]) -> wasmtime.FuncType:
    return wasmtime.FuncType([_VALTYPES[p]() for p in params], [_VALTYPES[r]() for r in results])


_define: Any = None
if ffi.AVAILABLE:
    _define = ffi.bind(
        "wasmtime_linker_define_func_unchecked",
        c_void_p,
        [c_void_p, ctypes.c_char_p, c_size_t, ctypes.c_char_p, c_size_t, c_void_p, c_void_p, c_void_p, c_void_p],
    )


def define_host_imports(linker: wasmtime.Linker, names: set[str]) -> None:
    """Define the ``wasmhive`` imports in ``names`` on ``linker``."""
    if _define is None:  # pragma: no cover - depends on the wasmtime build
        raise RuntimeError("this wasmtime build lacks wasmtime_linker_define_func_unchecked")
    module = abi.IMPORT_MODULE.encode()
    linker_ptr = ctypes.cast(linker.ptr(), c_void_p).value
    for name in sorted(names):
        params, results = abi.HOST_IMPORTS[name]
        ty = _functype(params, results)
        err = _define(
            linker_ptr,
            module,
            len(module),
            name.encode(),
            len(name),
            ctypes.cast(ty.ptr(), c_void_p).value,
            ctypes.cast(_CALLBACKS[name], c_void_p).value,
            None,
            ctypes.cast(_NO_FINALIZER, c_void_p).value,
        )
        if err:
            raise wasmtime.WasmtimeError._from_ptr(
                ctypes.cast(err, ctypes.POINTER(wasmtime._ffi.wasmtime_error_t))
            )
