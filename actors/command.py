"""WASI commands: any wasm32-wasi program with ``_start``, run once per call.

The payload is the program's stdin, everything it writes to stdout reaches
the caller as stream chunks while it runs, and stderr goes to the log.  Exit
status 0 (or returning from ``_start``) is success; another status gives
:class:`GuestError` with the status and the tail of stderr, and the actor
lives on.  Every call gets a fresh instance from the compile cache, so no
state leaks from one call to the next; limits and timeouts apply as for any
guest.  No preopened directories and no environment variables.
"""

from __future__ import annotations

import ctypes
import time

import wasmtime
from wasmtime import _ffi as wasmtime_ffi

from .errors import GuestError, WasmhiveError
from .host import current
from .instance import ChunkSink, InstanceSpec, WasmInstance

__all__ = ["WasiCommand"]

#: How much of stderr a failed run's error message keeps.
STDERR_TAIL = 2048


class _CleanExit(WasmhiveError):
    """``proc_exit(0)``: not an error; caught inside :meth:`WasiCommand.handle`."""


class WasiCommand(WasmInstance):
    """Runs a WASI command module once per :meth:`handle`."""

    @classmethod
    def spawn(cls, spec: InstanceSpec, actor_id: int | None = None) -> WasiCommand:
        """Nothing runs until a call: a command starts fresh each time."""
        return cls(spec, actor_id)

    def handle(self, payload: bytes, sink: ChunkSink | None = None) -> bytes:
        """Run the program with ``payload`` as stdin; stdout goes to ``sink``.  Returns b""."""
        spec = self.spec
        self._check_size(len(payload), "payload")
        stderr = bytearray()
        self._sink = sink
        self._pending = None
        self._emitted = 0
        self._where = "_start"
        self._deadline = time.monotonic() + spec.timeout
        self._open_store(self._command_config(payload, stderr))
        previous = current.instance
        current.instance = self
        try:
            try:
                instance = spec.instance_pre.instantiate(self._store)
            except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
                raise self._classify(exc, "instantiation") from None
            start = instance.exports(self._store)["_start"]
            assert isinstance(start, wasmtime.Func)
            try:
                self._call_void(start, "_start")
            except _CleanExit:
                pass
            except GuestError as exc:
                tail = bytes(stderr[-STDERR_TAIL:]).decode("utf-8", "replace").strip()
                raise GuestError(
                    f"{exc.message}; stderr: {tail}" if tail else exc.message, function=self.function, **exc.details
                ) from None
        finally:
            current.instance = previous
            self._sink = None
            self._drop_store()
        if self._pending is not None:
            pending, self._pending = self._pending, None
            raise pending
        return b""

    def _exited(self, code: int, where: str) -> WasmhiveError:
        if code == 0:
            return _CleanExit("exit 0", function=self.function)
        return GuestError(f"the program exited with status {code}", function=self.function, exit_code=code)

    def _command_config(self, stdin: bytes, stderr: bytearray) -> wasmtime.WasiConfig:
        config = wasmtime.WasiConfig()
        config.argv = [self.function]
        vec = wasmtime_ffi.bytes_to_capi(stdin)
        wasmtime_ffi.wasi_config_set_stdin_bytes(config.ptr(), ctypes.byref(vec))
        services, actor_id = self.services, self.actor_id

        def to_stderr(data: bytes) -> None:
            stderr.extend(data)
            del stderr[:-STDERR_TAIL]
            for line in data.decode("utf-8", "replace").splitlines():
                services.log(3, line, actor_id)

        config.stdout_custom = self.emit
        config.stderr_custom = to_stderr
        return config

    def _drop_store(self) -> None:
        store = self.__dict__.pop("_store", None)
        self._ctx = 0
        if store is not None:
            store.close()

