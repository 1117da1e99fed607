"""The daemon the harness starts for ``--target daemon``: its config, its process, kill and restart.

:func:`daemon_config` turns a scenario into ``wasmhive serve`` TOML: each
function with a ``module`` becomes a ``[[deploy]]`` entry with the scenario's
deploy options, access logging is off, and ``[server] trace_executions``
makes the daemon write one line per guest entry (:mod:`wasmhive.runtime.daemon.trace`).

:class:`DaemonProcess` runs ``python -m wasmhive.runtime.cli serve`` on a
fixed loopback port and data dir, so a restart after a SIGKILL comes back at
the same address with the same registry.  Its stdout and stderr go to files
in the work directory; it is ready when stdout has a new
``wasmhive: listening on URL`` line.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from .scenario import Scenario, ScenarioError

__all__ = ["READY_LINE", "DaemonProcess", "DaemonStartError", "daemon_config", "free_port", "to_toml"]

#: What ``wasmhive serve`` prints on stdout once it accepts calls.
READY_LINE = "wasmhive: listening on "


class DaemonStartError(RuntimeError):
    """The daemon exited, or did not say it was listening in time (the message has its stderr's end)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the OS picks it; it is fixed for the daemon's restarts)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def daemon_config(scenario: Scenario, *, trace: Path) -> dict[str, Any]:
    """The ``wasmhive serve`` configuration (as data) that runs ``scenario``'s functions.

    Raises :class:`ScenarioError` for a function without a ``module``: a
    daemon the harness starts has nothing deployed but what it is given.
    """
    deploy: list[dict[str, Any]] = []
    base = Path(scenario.base_dir)
    for i, fn in enumerate(scenario.functions):
        if fn.module is None:
            raise ScenarioError(
                f"functions[{i}].module: the daemon target starts its own daemon and needs every function's "
                "module (use --target URL for a daemon where they are already deployed)"
            )
        options = fn.options.to_json()
        deploy.append({"name": fn.name, "path": str((base / fn.module).resolve()), "options": options})
    runtime: dict[str, Any] = {"fuel": scenario.runtime.fuel}
    for field in ("epoch_tick", "shutdown_grace", "init_timeout", "max_payload_bytes"):
        value = getattr(scenario.runtime, field)
        if value is not None:
            runtime[field] = value
    server = {
        "access_log": False,
        "trace_executions": str(trace),
        # The client gives up at the deadline; the daemon must not answer 504 before it.
        "request_timeout": max(30.0, scenario.deadline + scenario.grace + 1.0),
        "shutdown_grace": 2.0,
    }
    return {"server": server, "runtime": runtime, "deploy": deploy}


def to_toml(data: Mapping[str, Any]) -> str:
    """TOML for :func:`daemon_config`'s shape: top-level tables of scalars and inline tables, lists of tables."""
    lines: list[str] = []
    for key, value in data.items():
        if isinstance(value, Mapping):
            lines.append(f"[{key}]")
            lines.extend(f"{json.dumps(k)} = {_value(v)}" for k, v in value.items())
        elif isinstance(value, list) and all(isinstance(v, Mapping) for v in value):
            for item in value:
                lines.append(f"[[{key}]]")
                lines.extend(f"{json.dumps(k)} = {_value(v)}" for k, v in item.items())
        else:
            lines.insert(0, f"{json.dumps(key)} = {_value(value)}")
    return "\n".join(lines) + "\n"


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string is a TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {v!r} as TOML")


class DaemonProcess:
    """One ``wasmhive serve`` on ``127.0.0.1:port`` with ``config`` and ``data_dir``, started and restarted."""

    def __init__(self, workdir: Path, config: Mapping[str, Any], *, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port if port is not None else free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = workdir / "data"
        self.config_path = workdir / "wasmhive.toml"
        self.config_path.write_text(to_toml(config))
        self.stdout_path = workdir / "daemon.out"
        self.stderr_path = workdir / "daemon.err"
        self.process: anyio.abc.Process | None = None
        #: How many times it was started (1 after the first start).
        self.starts = 0

    def command(self) -> list[str]:
        """The argv that runs the daemon with this interpreter."""
        return [
            sys.executable,
            "-m",
            "wasmhive.runtime.cli",
            "serve",
            "-c",
            str(self.config_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
        ]

    @property
    def running(self) -> bool:
        """Whether the process is started and has not exited."""
        return self.process is not None and self.process.returncode is None

    async def start(self, timeout: float = 60.0) -> None:
        """Start it and wait for its ``listening on`` line; :class:`DaemonStartError` if it exits or times out."""
        assert not self.running, "the daemon is already running"
        offset = self.stdout_path.stat().st_size if self.stdout_path.exists() else 0
        with self.stdout_path.open("ab") as out, self.stderr_path.open("ab") as err:
            self.process = await anyio.open_process(
                self.command(), stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True
            )
        self.starts += 1
        with anyio.move_on_after(timeout):
            while True:
                if READY_LINE.encode() in self.stdout_path.read_bytes()[offset:]:
                    return
                if self.process.returncode is not None:
                    raise DaemonStartError(f"the daemon exited with status {self.process.returncode}: {self._tail()}")
                await anyio.sleep(0.02)
        await self.kill()
        raise DaemonStartError(f"the daemon did not listen within {timeout:g}s: {self._tail()}")

    async def kill(self) -> None:
        """SIGKILL and reap (nothing if it is not running)."""
        process = self.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGKILL)
        with anyio.CancelScope(shield=True):
            await process.wait()

    async def terminate(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, wait (SIGKILL after ``timeout``); the exit status (None if it never ran)."""
        process = self.process
        if process is None:
            return None
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            with anyio.move_on_after(timeout, shield=True):
                await process.wait()
            await self.kill()
        return process.returncode

    def _tail(self, size: int = 2000) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return "(no stderr)"
        return text[-size:].strip() or "(no stderr)"
