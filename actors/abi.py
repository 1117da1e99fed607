"""Guest ABI v1: the constants and the msgpack host-call messages.

docs/abi.md is the normative description; this module is its code.  A host
call request is one of the ``*Request`` structs below, encoded as a msgpack
map whose ``op`` field names the operation; the host answers with a
:class:`HostResult`.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

ABI_VERSION: Final = 1

#: The import module name of the host functions.
IMPORT_MODULE: Final = "wasmhive"
WASI_MODULE: Final = "wasi_snapshot_preview1"

#: Required exports and their (params, results) in wasm value-type names.
REQUIRED_EXPORTS: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "wh_alloc": (("i32",), ("i32",)),
    "wh_handle": (("i32", "i32"), ("i64",)),
}
OPTIONAL_EXPORTS: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "_initialize": ((), ()),
    "wh_init": ((), ()),
}
#: Host functions a module may import from ``wasmhive``.
HOST_IMPORTS: Final[dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "emit": (("i32", "i32"), ()),
    "fail": (("i32", "i32"), ()),
    "log": (("i32", "i32", "i32"), ()),
    "host_call": (("i32", "i32"), ("i64",)),
}

#: Log levels of the ``log`` import (and the ``log`` host call).
LOG_LEVELS: Final = {0: "trace", 1: "debug", 2: "info", 3: "warn", 4: "error"}

#: Largest ``random.bytes`` request.
MAX_RANDOM_BYTES: Final = 65536


def pack_location(ptr: int, length: int) -> int:
    """Pack a (pointer, length) pair as ABI v1 returns it: ``(ptr << 32) | len``."""
    return ((ptr & 0xFFFFFFFF) << 32) | (length & 0xFFFFFFFF)


def unpack_location(packed: int) -> tuple[int, int]:
    """Split a packed i64 (signed or not) into (pointer, length)."""
    packed &= 0xFFFFFFFFFFFFFFFF
    return packed >> 32, packed & 0xFFFFFFFF


class _Request(msgspec.Struct, tag_field="op", forbid_unknown_fields=True):
    v: int = ABI_VERSION


class LogRequest(_Request, tag="log"):
    """Write one log line."""

    level: int = 2
    message: str = ""


class KvGetRequest(_Request, tag="kv.get"):
    """Read a key; the result value is the bytes, or nil if absent."""

    key: str = ""


class KvSetRequest(_Request, tag="kv.set"):
    """Store bytes under a key, optionally expiring after ``ttl`` seconds."""

    key: str = ""
    value: bytes = b""
    ttl: float | None = None


class KvDeleteRequest(_Request, tag="kv.delete"):
    """Delete a key; the result value says whether it existed."""

    key: str = ""


class KvIncrRequest(_Request, tag="kv.incr"):
    """Add ``by`` to the decimal integer stored under a key (absent counts as 0)."""

    key: str = ""
    by: int = 1
    ttl: float | None = None


class TimeMonotonicRequest(_Request, tag="time.monotonic"):
    """Monotonic clock in nanoseconds."""


class TimeWallRequest(_Request, tag="time.wall"):
    """Wall clock in nanoseconds since the Unix epoch."""


class RandomBytesRequest(_Request, tag="random.bytes"):
    """``n`` cryptographically random bytes (at most 65536)."""

    n: int = 32


class SecretGetRequest(_Request, tag="secret.get"):
    """The value of a secret granted to the deployment (a string)."""

    name: str = ""


class HttpFetchRequest(_Request, tag="http.fetch"):
    """An HTTP request made by the host (thread mode, with a fetch grant).

    The result value is ``{"status": int, "headers": {str: str}, "body": bytes}``.
    With ``relay`` the response body is not returned: it goes straight to the
    caller as stream chunks while it arrives, and ``body`` is empty.
    """

    url: str = ""
    method: str = "GET"
    headers: dict[str, str] = {}
    body: bytes = b""
    relay: bool = False


HostRequest = (
    LogRequest
    | KvGetRequest
    | KvSetRequest
    | KvDeleteRequest
    | KvIncrRequest
    | TimeMonotonicRequest
    | TimeWallRequest
    | RandomBytesRequest
    | SecretGetRequest
    | HttpFetchRequest
)

KNOWN_OPS: Final = frozenset(cls.__struct_config__.tag for cls in HostRequest.__args__)


class HostErrorInfo(msgspec.Struct):
    """Why a host call failed.  ``code`` is one of the codes in docs/abi.md."""

    code: str
    message: str


class HostResult(msgspec.Struct, omit_defaults=False):
    """The answer to every host call."""

    ok: bool
    value: Any = None
    error: HostErrorInfo | None = None
    v: int = ABI_VERSION


class _OpOnly(msgspec.Struct):
    op: Any = None
    v: Any = None


request_decoder: Final = msgspec.msgpack.Decoder(HostRequest)
op_decoder: Final = msgspec.msgpack.Decoder(_OpOnly)
result_encoder: Final = msgspec.msgpack.Encoder()
