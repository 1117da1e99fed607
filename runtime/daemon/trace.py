"""An execution trace: one line per guest entry, for the stress harness's daemon target.

With ``[server] trace_executions = "PATH"`` the daemon appends, each time a
guest is entered with a message, a JSON line ``{"f": name, "v": version,
"p": digest}`` to PATH, where ``digest`` is :func:`payload_digest` of the
payload.  The harness makes every payload unique, so the lines count how many
times each request ran *at the guest boundary*.  Each line is one
``write(2)`` to a file opened with O_APPEND: lines from different actor
threads do not interleave, and they survive a SIGKILL of the daemon.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from wasmhive.actors.actor import Actor, CallHook
from wasmhive.actors.instance import WasmInstance

__all__ = ["ExecutionTrace", "payload_digest"]


def payload_digest(payload: bytes) -> str:
    """The digest a trace line names a payload by (16 hex digits of its SHA-256)."""
    return hashlib.sha256(payload).hexdigest()[:16]


class ExecutionTrace:
    """The open trace file; :meth:`hook` makes the call hook of one function version."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        #: Lines that could not be written.
        self.lost = 0

    def hook(self, name: str, version: int) -> CallHook:
        """A call hook that records every entry into a guest of ``name`` version ``version``."""
        prefix = f'{{"f":"{name}","v":{version},"p":"'.encode()
        fd = self._fd

        def record(actor: Actor, instance: WasmInstance, payload: bytes) -> None:
            try:
                os.write(fd, prefix + payload_digest(payload).encode() + b'"}\n')
            except OSError:  # a full disk must not crash every call: the trace just misses lines
                self.lost += 1

        return record

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
