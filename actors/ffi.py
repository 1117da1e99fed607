"""Direct ctypes handles on wasmtime's C API for the call fast path.

wasmtime-py's ``Func.__call__`` re-reads the function type and converts every
value on each call (tens of microseconds).  ABI v1 has fixed signatures, so the
actor calls ``wasmtime_func_call_unchecked`` with argument arrays built once,
through handles whose argument and result types are plain pointers.

The handles come from a private ``CDLL`` object on the same shared library that
wasmtime-py loaded, so setting their types here does not touch wasmtime-py's
own handles.  ``AVAILABLE`` is False when the library does not have what we
need; callers then use the public path.
"""

from __future__ import annotations

import ctypes
from ctypes import POINTER, c_size_t, c_uint64, c_void_p
from typing import Any, Final

from wasmtime import _ffi as wasmtime_ffi

__all__ = ["AVAILABLE", "DeadlineCallback", "ValRaw", "address_of"]

ValRaw = wasmtime_ffi.wasmtime_val_raw_t

#: (context, data, *deadline_delta, *update_kind) -> error* (NULL: continue)
DeadlineCallback = ctypes.CFUNCTYPE(
    c_void_p, c_void_p, c_void_p, POINTER(c_uint64), POINTER(ctypes.c_uint8)
)
#: ``update_kind`` value: keep running with the new deadline.
UPDATE_DEADLINE_CONTINUE: Final = 0


def address_of(obj: Any) -> int:
    """The address of a ctypes object, as an int (what the handles below take)."""
    return ctypes.addressof(obj)


def _load() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(wasmtime_ffi.dll._name)
    except (AttributeError, OSError):  # pragma: no cover - depends on the wasmtime build
        return None


_lib = _load()


def bind(name: str, restype: Any, argtypes: list[Any]) -> Any:
    assert _lib is not None
    fn = getattr(_lib, name)
    fn.restype = restype
    fn.argtypes = argtypes
    return fn


try:
    if _lib is None:
        raise AttributeError("wasmtime library not found")
    #: (context, func, args_and_results, len, trap_out) -> error*
    func_call_unchecked: Final = bind(
        "wasmtime_func_call_unchecked", c_void_p, [c_void_p, c_void_p, c_void_p, c_size_t, c_void_p]
    )
    #: (context, memory) -> uint8_t*
    memory_data: Final = bind("wasmtime_memory_data", c_void_p, [c_void_p, c_void_p])
    #: (context, memory) -> size_t
    memory_data_size: Final = bind("wasmtime_memory_data_size", c_size_t, [c_void_p, c_void_p])
    #: (context, ticks)
    set_epoch_deadline: Final = bind("wasmtime_context_set_epoch_deadline", None, [c_void_p, c_uint64])
    #: (context, fuel) -> error*
    set_fuel: Final = bind("wasmtime_context_set_fuel", c_void_p, [c_void_p, c_uint64])
    #: (context, fuel*) -> error*
    get_fuel: Final = bind("wasmtime_context_get_fuel", c_void_p, [c_void_p, POINTER(c_uint64)])
    #: (engine)
    increment_epoch: Final = bind("wasmtime_engine_increment_epoch", None, [c_void_p])
    #: (message, len) -> trap*
    trap_new: Final = bind("wasmtime_trap_new", c_void_p, [ctypes.c_char_p, c_size_t])
    #: (caller) -> context*
    caller_context: Final = bind("wasmtime_caller_context", c_void_p, [c_void_p])
    #: (message) -> error*
    error_new: Final = bind("wasmtime_error_new", c_void_p, [ctypes.c_char_p])
    #: (store, callback, data, finalizer)
    set_epoch_deadline_callback: Final = bind(
        "wasmtime_store_epoch_deadline_callback", None, [c_void_p, c_void_p, c_void_p, c_void_p]
    )
    AVAILABLE: Final = True
except AttributeError:  # pragma: no cover - depends on the wasmtime build
    AVAILABLE = False  # type: ignore[misc]
