"""The in-memory key-value store behind the ``kv.*`` host calls."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable

from wasmhive.actors.host import HostCallError

__all__ = ["MemoryKeyValueStore"]

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_DECIMAL = re.compile(rb"-?[0-9]+")


class MemoryKeyValueStore:
    """A thread-safe, namespaced key-value store with per-key TTLs and quotas.

    Each function's namespace holds at most ``max_namespace_keys`` keys and
    ``max_namespace_bytes`` bytes (keys plus values), and a value is at most
    ``max_value_bytes``: a guest cannot fill the host's memory through it.
    Past a limit the host call fails with ``quota_exceeded`` and nothing is
    stored.

    Implements :class:`wasmhive.actors.host.KeyValueStore`.  Expired keys are
    dropped when read and in an occasional sweep.  ``clock`` is injectable
    for tests.
    """

    def __init__(
        self,
        clock: Callable[[], float] | None = None,
        sweep_every: int = 1024,
        *,
        max_value_bytes: int = 8 * 1024 * 1024,
        max_key_bytes: int = 1024,
        max_namespace_bytes: int = 64 * 1024 * 1024,
        max_namespace_keys: int = 100_000,
    ) -> None:
        self._clock = clock or time.monotonic
        self._data: dict[tuple[str, str], tuple[bytes, float | None]] = {}
        self._usage: dict[str, list[int]] = {}  # namespace -> [bytes, keys]
        self._last_sweep = float("-inf")
        self.max_value_bytes = max_value_bytes
        self.max_key_bytes = max_key_bytes
        self.max_namespace_bytes = max_namespace_bytes
        self.max_namespace_keys = max_namespace_keys
        self._lock = threading.Lock()
        self._writes = 0
        self._sweep_every = sweep_every

    def get(self, namespace: str, key: str) -> bytes | None:
        with self._lock:
            return self._live(namespace, key)

    def set(self, namespace: str, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store ``value``; raises HostCallError("quota_exceeded") past a limit (nothing stored)."""
        with self._lock:
            self._put(namespace, key, bytes(value), self._expiry(ttl))

    def delete(self, namespace: str, key: str) -> bool:
        with self._lock:
            present = self._live(namespace, key) is not None
            self._remove(namespace, key)
            return present

    def usage(self, namespace: str) -> tuple[int, int]:
        """(bytes, keys) stored in a namespace, counting keys and values."""
        with self._lock:
            used = self._usage.get(namespace, [0, 0])
            return used[0], used[1]

    def _put(self, namespace: str, key: str, value: bytes, expiry: float | None) -> None:
        if len(key.encode()) > self.max_key_bytes:
            raise HostCallError("quota_exceeded", f"kv keys are at most {self.max_key_bytes} bytes")
        if len(value) > self.max_value_bytes:
            raise HostCallError("quota_exceeded", f"kv values are at most {self.max_value_bytes} bytes")
        used = self._usage.setdefault(namespace, [0, 0])
        full = used[1] >= self.max_namespace_keys or used[0] + len(key.encode()) + len(value) > self.max_namespace_bytes
        if full and self._clock() - self._last_sweep >= 1.0:
            self._sweep()  # expired keys must not count against the quota (at most once a second)
        old = self._data.get((namespace, key))
        size = len(key.encode()) + len(value)
        grow = size - (len(key.encode()) + len(old[0]) if old is not None else 0)
        if old is None and used[1] >= self.max_namespace_keys:
            raise HostCallError("quota_exceeded", f"this function may keep at most {self.max_namespace_keys} keys")
        if used[0] + grow > self.max_namespace_bytes:
            raise HostCallError("quota_exceeded", f"this function may keep at most {self.max_namespace_bytes} bytes")
        self._data[(namespace, key)] = (value, expiry)
        used[0] += grow
        used[1] += old is None
        self._wrote()

    def _remove(self, namespace: str, key: str) -> None:
        old = self._data.pop((namespace, key), None)
        if old is not None:
            used = self._usage[namespace]
            used[0] -= len(key.encode()) + len(old[0])
            used[1] -= 1

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
            self._put(namespace, key, str(value).encode(), expiry)
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
            self._remove(namespace, key)
            return None
        return value

    def _wrote(self) -> None:
        self._writes += 1
        if self._writes % self._sweep_every == 0:
            self._sweep()

    def _sweep(self) -> None:
        now = self._last_sweep = self._clock()
        for namespace, key in [k for k, (_, exp) in self._data.items() if exp is not None and exp <= now]:
            self._remove(namespace, key)
