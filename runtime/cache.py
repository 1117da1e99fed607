"""The compile cache: compiled modules on disk, keyed and verified.

A file is named after the module's SHA-256 and the engine settings (wasmtime
version, machine, settings; see :func:`~wasmhive.runtime.engine.build_engine`).
Its header repeats both and carries the SHA-256 of the payload.  Loading checks
all three before handing the payload to wasmtime, because deserializing
untrusted bytes is unsafe: a corrupted, truncated or foreign file (including a
valid file of another module or engine copied into place) is detected, removed
and rebuilt, never run.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import wasmtime

__all__ = ["CacheStats", "CompileCache"]

logger = logging.getLogger("wasmhive.cache")

_MAGIC = b"WASMHIVE-CWASM-2"
# magic | module sha256 (32) | settings hash (32) | payload sha256 (32) | payload
_HEADER = len(_MAGIC) + 96


@dataclass
class CacheStats:
    """Counters of one cache."""

    memory_hits: int = 0
    disk_hits: int = 0
    compiles: int = 0
    rebuilt: int = 0


class CompileCache:
    """Compiles modules once per process and once per machine."""

    def __init__(self, engine: wasmtime.Engine, fingerprint: str, directory: Path | None) -> None:
        self._engine = engine
        self._settings_digest = hashlib.sha256(fingerprint.encode()).digest()
        self._settings = self._settings_digest.hex()[:16]
        self._directory = directory
        self._modules: dict[str, wasmtime.Module] = {}
        self.stats = CacheStats()

    @property
    def directory(self) -> Path | None:
        return self._directory

    def path_for(self, digest: str) -> Path | None:
        """Where the compiled form of the module with SHA-256 ``digest`` lives."""
        if self._directory is None:
            return None
        return self._directory / f"{digest}-{self._settings}.cwasm"

    def load(self, wasm: bytes) -> tuple[wasmtime.Module, str]:
        """The compiled module for ``wasm`` bytes, and their SHA-256.

        Raises ``wasmtime.WasmtimeError`` if the bytes do not compile.
        """
        digest = hashlib.sha256(wasm).hexdigest()
        module = self._modules.get(digest)
        if module is not None:
            self.stats.memory_hits += 1
            return module, digest
        path = self.path_for(digest)
        module = self._read(path, digest) if path is not None else None
        if module is None:
            module = wasmtime.Module(self._engine, wasm)
            self.stats.compiles += 1
            if path is not None:
                self._write(path, digest, module)
        else:
            self.stats.disk_hits += 1
        self._modules[digest] = module
        return module, digest

    def forget(self, digest: str) -> None:
        """Drop the in-memory module (the disk copy stays)."""
        self._modules.pop(digest, None)

    def _header(self, digest: str, payload_digest: bytes) -> bytes:
        return _MAGIC + bytes.fromhex(digest) + self._settings_digest + payload_digest

    def _read(self, path: Path, digest: str) -> wasmtime.Module | None:
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            logger.warning("compile cache: cannot read %s (%s); recompiling", path, exc)
            return None
        problem = None
        if len(blob) < _HEADER or not blob.startswith(_MAGIC):
            problem = "not a wasmhive cache file"
        elif blob[len(_MAGIC) : len(_MAGIC) + 64] != bytes.fromhex(digest) + self._settings_digest:
            problem = "compiled from another module or for another engine"
        elif hashlib.sha256(memoryview(blob)[_HEADER:]).digest() != blob[len(_MAGIC) + 64 : _HEADER]:
            problem = "checksum mismatch (corrupted or truncated)"
        if problem is None:
            try:
                return wasmtime.Module.deserialize(self._engine, blob[_HEADER:])
            except wasmtime.WasmtimeError as exc:
                problem = f"wasmtime refused it ({exc})"
        logger.warning("compile cache: %s: %s; rebuilding", path, problem)
        self.stats.rebuilt += 1
        try:
            path.unlink()
        except OSError:
            pass
        return None

    def _write(self, path: Path, digest: str, module: wasmtime.Module) -> None:
        payload = module.serialize()
        blob = self._header(digest, hashlib.sha256(payload).digest()) + payload
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".cwasm")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(blob)
                os.replace(tmp, path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:
            logger.warning("compile cache: cannot write %s (%s); continuing without it", path, exc)
