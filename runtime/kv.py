"""The in-memory key-value store behind the ``kv.*`` host calls."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

__all__ = ["MemoryKeyValueStore"]

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_DECIMAL = re.compile(rb"-?[0-9]+")


class MemoryKeyValueStore:
    """A thread-safe, namespaced key-value store with per-key TTLs.

    Implements :class:`wasmhive.actors.host.KeyValueStore`.  Expired keys are
    dropped when read and in an occasional sweep.  ``clock`` is injectable
    for tests.
    """

    def __init__(self, clock: Callable[[], float] | None = None, sweep_every: int = 1024) -> None:
        self._clock = clock or time.monotonic
        self._data: dict[tuple[str, str], tuple[bytes, float | None]] = {}
        self._lock = threading.Lock()
        self._writes = 0
        self._sweep_every = sweep_every

    def get(self, namespace: str, key: str) -> bytes | None:
        with self._lock:
            return self._live(namespace, key)

    def set(self, namespace: str, key: str, value: bytes, ttl: float | None = None) -> None:
        with self._lock:
            self._data[(namespace, key)] = (bytes(value), self._expiry(ttl))
            self._wrote()

    def delete(self, namespace: str, key: str) -> bool:
        with self._lock:
            present = self._live(namespace, key) is not None
            self._data.pop((namespace, key), None)
            return present

    def incr(self, namespace: str, key: str, by: int = 1, ttl: float | None = None) -> int:
        """Add ``by`` to the decimal integer under ``key``.

        Raises ValueError (storing nothing) if the value is not a decimal
        integer or the result leaves the signed 64-bit range.

        A ``ttl`` applies when the key is created; an existing key keeps its expiry.
        """
        with self._lock:
            current = self._live(namespace, key)
            expiry = self._expiry(ttl)
            if current is None:
                value = by
            else:
                if _DECIMAL.fullmatch(current) is None:
                    raise ValueError(f"kv.incr: the value under {key!r} is not a decimal integer")
                value = int(current) + by
                expiry = self._data[(namespace, key)][1]
            if not _INT64_MIN <= value <= _INT64_MAX:
                raise ValueError(f"kv.incr: the result {value} would leave the signed 64-bit range")
            self._data[(namespace, key)] = (str(value).encode(), expiry)
            self._wrote()
            return value

    def keys(self, namespace: str) -> list[str]:
        """Live keys of a namespace (for inspection and tests)."""
        with self._lock:
            return [k for (ns, k) in list(self._data) if ns == namespace and self._live(ns, k) is not None]

    def _expiry(self, ttl: float | None) -> float | None:
        return None if ttl is None else self._clock() + ttl

    def _live(self, namespace: str, key: str) -> bytes | None:
        entry = self._data.get((namespace, key))
        if entry is None:
            return None
        value, expiry = entry
        if expiry is not None and expiry <= self._clock():
            del self._data[(namespace, key)]
            return None
        return value

    def _wrote(self) -> None:
        self._writes += 1
        if self._writes % self._sweep_every == 0:
            now = self._clock()
            for k in [k for k, (_, exp) in self._data.items() if exp is not None and exp <= now]:
                del self._data[k]
