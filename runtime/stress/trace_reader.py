"""Reading the daemon's execution trace into the history: executions counted at the guest boundary.

The daemon (``[server] trace_executions``) appends ``{"f": name, "v":
version, "p": digest}`` each time a guest is entered with a message, where
``digest`` is :func:`~wasmhive.runtime.daemon.trace.payload_digest` of the
payload.  Payloads are unique, so a digest names one request.  The lines are
written with O_APPEND, one ``write(2)`` each, so they survive a SIGKILL of
the daemon and a restarted daemon appends to the same file.

:class:`TraceReader` remembers the digest of every payload it is told about
(:meth:`expect`) and turns new lines into :meth:`History.executed` records
(:meth:`poll`).  An execution's time is when its line was read, not when it
ran.
"""

from __future__ import annotations

import json
from pathlib import Path

from wasmhive.runtime.daemon.trace import payload_digest

from .history import ExecutionRecord, History

__all__ = ["TraceReader"]


class TraceReader:
    """Follows one trace file from its start; :meth:`poll` reads what was appended since the last call."""

    def __init__(self, path: Path, history: History) -> None:
        self.path = path
        self._history = history
        self._payloads: dict[str, bytes] = {}
        self._offset = 0
        self._partial = b""
        #: Lines that were not valid trace lines (counted, skipped).
        self.bad_lines = 0

    def expect(self, payload: bytes) -> None:
        """Note a payload about to be sent, so that its trace lines name its request."""
        self._payloads[payload_digest(payload)] = payload

    def poll(self) -> int:
        """Record the executions appended since the last poll; returns how many."""
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return 0
        self._offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()  # an incomplete last line waits for the next poll
        count = 0
        for line in lines:
            if line.strip():
                count += self._record(line)
        return count

    def _record(self, line: bytes) -> int:
        try:
            entry = json.loads(line)
            name, version, digest = entry["f"], entry["v"], entry["p"]
        except (ValueError, KeyError, TypeError):
            self.bad_lines += 1
            return 0
        actor = f"{name}@{version}"
        payload = self._payloads.get(digest)
        if payload is not None:
            self._history.executed(payload, actor)
        else:  # not one of ours (another client, or a payload never sent by this run)
            self._history.executions.append(ExecutionRecord(None, actor, self._history.now()))
        return 1
