"""Run ``wasmhive serve`` as a real subprocess for the daemon's tests.

::

    from daemon import Daemon

    with Daemon(tmp_path, config={"server": {"admin_token": TOKEN}}) as d:
        with d.client() as http:                       # httpx.Client with base_url=d.url
            http.post("/v1/functions/echo", content=wat, headers=d.auth)
            assert http.post("/v1/invoke/echo", content=b"hi").content == b"hi"
        d.restart()                                    # same data dir, config and port 0 again
        assert d.terminate() == 0                      # SIGTERM, wait, exit status
        d.stderr_lines()                               # the JSON access-log lines, parsed

API (kept stable: tests/test_daemon_*.py and the CLI tests use it):

``Daemon(directory, config=None, *, host="127.0.0.1", env=None, args=(), start_timeout=60.0)``
    ``directory`` is a scratch directory (``tmp_path``); the daemon gets
    ``directory/data`` as ``--data-dir`` and ``directory/wasmhive.toml`` as
    ``-c``.  ``config`` is TOML text or a dict written as TOML (see
    :func:`to_toml`).  ``env`` adds or (with a value of None) removes
    environment variables; ``WASMHIVE_ADMIN_TOKEN`` from the caller's shell is
    always removed unless ``env`` sets it.  ``args`` are extra ``serve``
    arguments.  Nothing runs until :meth:`Daemon.start` (or ``with``).
``.start()``
    Start and wait for ``wasmhive: listening on URL`` on stdout; on a timeout or
    an early exit raises :class:`DaemonError` with the process's stderr.  Returns self.
``.url`` (``http://127.0.0.1:PORT``, as printed), ``.port``, ``.proc`` (the ``subprocess.Popen``),
``.data_dir``, ``.config_path``, ``.token`` (``server.admin_token`` of a dict config, else
``WASMHIVE_ADMIN_TOKEN`` of ``env``, else None),
``.auth`` (``{"Authorization": "Bearer <token>"}``, or ``{}`` without a token)
``.client(**kwargs)``
    An ``httpx.Client`` on ``.url`` (timeout 30 s unless given); close it (``with``).
``.stderr_text()`` / ``.stdout_text()``
    Everything the process wrote so far (read by background threads, so the pipes never fill).
``.stderr_lines()``
    The JSON lines of stderr (the access log), parsed; other log lines are skipped.
``.wait_for_log(predicate, timeout=10.0)``
    The first parsed access-log line for which ``predicate(line)`` is true, waiting for it.
``.restart()``
    :meth:`terminate` (must exit 0), then :meth:`start` again with the same data dir
    and config (a new port: port 0).  Output of earlier runs stays in the ``*_text`` methods.
``.terminate(timeout=30.0)``
    SIGTERM, wait for the exit (SIGKILL after ``timeout``, then :class:`DaemonError`);
    returns the exit status.  Idempotent.
``.signal(signum)``
    Send a signal without waiting.
``.wait(timeout=30.0)``
    Wait for the process to exit; returns the exit status.
``.kill()``
    SIGKILL and reap (teardown; ``__exit__`` does this for a process still running).

``run_serve(directory, config=None, *, args=(), env=None, port=0, timeout=30.0)``
    Run ``wasmhive serve`` expected to stop on its own (an invalid config):
    a ``subprocess.CompletedProcess`` with text stdout and stderr; a process still
    running after ``timeout`` is killed and :class:`DaemonError` raised.  Unless
    ``args`` has them, it gets ``--port PORT`` (none when ``port`` is None, so that
    the config's ``server.port`` counts) and ``--data-dir directory/data``.
``serve_command()``
    The argv prefix that runs ``wasmhive serve`` with this interpreter.
``to_toml(data)``
    A small TOML writer for nested dicts of str, int, float, bool and lists.

Guests (WAT text: deploy it with any content type, or ``text/wat``):
``reply_with(text)`` replies ``text``; ``sleeper(ms)`` sleeps ``ms`` on the host
(WASI ``poll_oneoff``, no CPU) then echoes; ``STREAM_GATE`` streams with a gate
(see its docstring); ``WASI_ENVIRON`` is a WASI command that prints its environment.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import guests
import httpx

__all__ = [
    "STREAM_GATE",
    "WASI_ENVIRON",
    "Daemon",
    "DaemonError",
    "reply_with",
    "run_serve",
    "serve_command",
    "sleeper",
    "to_toml",
]

READY = "wasmhive: listening on "
ADMIN_TOKEN_ENV = "WASMHIVE_ADMIN_TOKEN"


class DaemonError(AssertionError):
    """The daemon did not start or stop as expected (the message has its stderr)."""


def serve_command() -> list[str]:
    """``python -m wasmhive.runtime.cli serve`` with the interpreter running the tests."""
    return [sys.executable, "-m", "wasmhive.runtime.cli", "serve"]


def to_toml(data: Mapping[str, Any]) -> str:
    """TOML for a dict of tables, scalars, lists of scalars and lists of tables (``[[deploy]]``)."""
    lines: list[str] = []

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, Mapping):
            return "{" + ", ".join(f"{json.dumps(str(k))} = {value(x)}" for k, x in v.items()) + "}"
        raise TypeError(f"cannot write {v!r} as TOML")

    def table(prefix: str, d: Mapping[str, Any]) -> None:
        scalars = {k: v for k, v in d.items() if not _is_table(v) and not _is_table_list(v)}
        if prefix and (scalars or not d):
            lines.append(f"[{prefix}]")
        for k, v in scalars.items():
            lines.append(f"{json.dumps(str(k))} = {value(v)}")
        for k, v in d.items():
            key = f"{prefix}.{json.dumps(str(k))}" if prefix else json.dumps(str(k))
            if _is_table(v):
                table(key, v)
            elif _is_table_list(v):
                for item in v:
                    lines.append(f"[[{key}]]")
                    for ik, iv in item.items():
                        lines.append(f"{json.dumps(str(ik))} = {value(iv)}")

    table("", data)
    return "\n".join(lines) + "\n"


def _is_table(v: Any) -> bool:
    return isinstance(v, Mapping)


def _is_table_list(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and bool(v) and all(isinstance(x, Mapping) for x in v)


def _environment(env: Mapping[str, str | None] | None) -> dict[str, str]:
    result = dict(os.environ)
    result.pop(ADMIN_TOKEN_ENV, None)
    result["PYTHONUNBUFFERED"] = "1"
    for key, val in (env or {}).items():
        if val is None:
            result.pop(key, None)
        else:
            result[key] = val
    return result


def _write_config(path: Path, config: str | Mapping[str, Any] | None) -> None:
    text = "" if config is None else config if isinstance(config, str) else to_toml(config)
    path.write_text(text)


class _Reader(threading.Thread):
    """Collects a pipe's lines; calls ``on_line`` for each one."""

    def __init__(self, pipe: Any, sink: list[str], lock: threading.Condition) -> None:
        super().__init__(daemon=True)
        self._pipe = pipe
        self._sink = sink
        self._lock = lock

    def run(self) -> None:
        for line in iter(self._pipe.readline, ""):
            with self._lock:
                self._sink.append(line)
                self._lock.notify_all()
        self._pipe.close()


class Daemon:
    """A ``wasmhive serve`` subprocess on a free loopback port (see the module docstring)."""

    def __init__(
        self,
        directory: Path,
        config: str | Mapping[str, Any] | None = None,
        *,
        host: str = "127.0.0.1",
        env: Mapping[str, str | None] | None = None,
        args: Sequence[str] = (),
        start_timeout: float = 60.0,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.directory / "data"
        self.config_path = self.directory / "wasmhive.toml"
        _write_config(self.config_path, config)
        self.host = host
        self.env = _environment(env)
        self.token: str | None = self.env.get(ADMIN_TOKEN_ENV)
        if isinstance(config, Mapping):
            self.token = (config.get("server") or {}).get("admin_token") or self.token
        self.args = list(args)
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.port = 0
        self._cond = threading.Condition()
        self._stdout: list[str] = []
        self._stderr: list[str] = []
        self._readers: list[_Reader] = []

    # --- life cycle ----------------------------------------------------------------------

    def command(self) -> list[str]:
        return [
            *serve_command(),
            "-c",
            str(self.config_path),
            "--host",
            self.host,
            "--port",
            "0",
            "--data-dir",
            str(self.data_dir),
            *self.args,
        ]

    def start(self) -> Daemon:
        if self.proc is not None and self.proc.poll() is None:
            raise DaemonError("the daemon is already running")
        with self._cond:
            first_out = len(self._stdout)
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            cwd=self.directory,
        )
        self._readers = [
            _Reader(self.proc.stdout, self._stdout, self._cond),
            _Reader(self.proc.stderr, self._stderr, self._cond),
        ]
        for reader in self._readers:
            reader.start()
        deadline = time.monotonic() + self.start_timeout
        with self._cond:
            while True:
                for line in self._stdout[first_out:]:
                    if line.startswith(READY):
                        self.url = line[len(READY) :].strip()
                        self.port = int(self.url.rsplit(":", 1)[1])
                        return self
                if self.proc.poll() is not None:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.05))
        status = self.proc.poll()
        if status is None:
            self.kill()
            problem = f"did not print {READY!r} within {self.start_timeout:g} s"
        else:
            self._join_readers()
            problem = f"exited with status {status} before it was ready"
        raise DaemonError(f"wasmhive serve {problem}\n--- stderr ---\n{self.stderr_text()}")

    def signal(self, signum: int) -> None:
        assert self.proc is not None, "not started"
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None, "not started"
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise DaemonError(
                f"wasmhive serve did not exit within {timeout:g} s\n--- stderr ---\n{self.stderr_text()}"
            ) from None
        self._join_readers()
        return status

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None, "not started"
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def restart(self) -> Daemon:
        status = self.terminate()
        if status != 0:
            raise DaemonError(f"wasmhive serve exited with status {status}\n--- stderr ---\n{self.stderr_text()}")
        return self.start()

    def kill(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:  # pragma: no cover - the kernel reaps a SIGKILLed process
            pass
        self._join_readers()

    def _join_readers(self) -> None:
        for reader in self._readers:
            reader.join(5)

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.kill()

    # --- talking to it -------------------------------------------------------------------

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def client(self, **kwargs: Any) -> httpx.Client:
        kwargs.setdefault("timeout", 30.0)
        return httpx.Client(base_url=self.url, **kwargs)

    # --- output ----------------------------------------------------------------------------

    def stdout_text(self) -> str:
        with self._cond:
            return "".join(self._stdout)

    def stderr_text(self) -> str:
        with self._cond:
            return "".join(self._stderr)

    def stderr_lines(self) -> list[dict[str, Any]]:
        with self._cond:
            lines = list(self._stderr)
        parsed = []
        for line in lines:
            if line.startswith("{"):
                try:
                    item = json.loads(line)
                except ValueError:
                    continue
                if isinstance(item, dict):
                    parsed.append(item)
        return parsed

    def wait_for_log(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for line in self.stderr_lines():
                if predicate(line):
                    return line
            left = deadline - time.monotonic()
            if left <= 0:
                raise DaemonError(f"no matching log line within {timeout:g} s\n--- stderr ---\n{self.stderr_text()}")
            with self._cond:
                self._cond.wait(min(left, 0.05))


def run_serve(
    directory: Path,
    config: str | Mapping[str, Any] | None = None,
    *,
    args: Sequence[str] = (),
    env: Mapping[str, str | None] | None = None,
    port: int | None = 0,
    timeout: float = 30.0,
) -> subprocess.CompletedProcess[str]:
    """Run ``wasmhive serve`` that should stop by itself (an invalid config); see the module docstring."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "wasmhive.toml"
    _write_config(config_path, config)
    argv = [*serve_command(), "-c", str(config_path)]
    if port is not None and "--port" not in args:
        argv += ["--port", str(port)]
    if "--data-dir" not in args:
        argv += ["--data-dir", str(directory / "data")]
    argv += list(args)
    try:
        return subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=_environment(env),
            cwd=directory,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        raise DaemonError(f"wasmhive serve did not stop within {timeout:g} s: {exc.stderr!r}") from None


# --- guests for the daemon's tests ---------------------------------------------------------


def reply_with(text: str) -> str:
    """A guest that replies ``text`` (ASCII, no quotes or backslashes) whatever the payload."""
    return guests.module(f"(call $pack (i32.const 16) (i32.const {len(text)}))", data=f'(data (i32.const 16) "{text}")')


def sleeper(ms: int) -> str:
    """A guest that sleeps ``ms`` milliseconds on the host (WASI ``poll_oneoff``), then echoes the payload."""
    return guests.module(
        f"""
       ;; one subscription at 0: userdata 0, tag 0 (clock), CLOCK_MONOTONIC, relative timeout in ns
       (i64.store (i32.const 0) (i64.const 0))
       (i32.store8 (i32.const 8) (i32.const 0))
       (i32.store (i32.const 16) (i32.const 1))
       (i64.store (i32.const 24) (i64.const {ms * 1_000_000}))
       (i64.store (i32.const 32) (i64.const 0))
       (i32.store16 (i32.const 40) (i32.const 0))
       (drop (call $poll_oneoff (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
       (call $pack (local.get $ptr) (local.get $len))""",
        imports='(import "wasi_snapshot_preview1" "poll_oneoff" (func $poll_oneoff (param i32 i32 i32 i32) (result i32)))',
    )


# msgpack {"op": "kv.set", "key": "go", "value": b"1"}: 27 bytes.
_KV_SET_GO = "\\83\\a2op\\a6kv.set\\a3key\\a2go\\a5value\\c4\\01\\31"

#: A streaming guest with a gate, to see chunks arrive while the call is still running,
#: without timing.  Payload by first byte:
#:
#: - ``g``: opens the gate (kv key "go") and replies ``set``;
#: - ``!``: emits ``first`` and a newline, then fails (GuestError ``broke``) without waiting;
#: - ``l``: waits for the gate, then goes on as below;
#: - anything else: emits ``first`` and a newline, waits for the gate (and closes it),
#:   emits ``second`` and a newline, and replies ``done`` and a newline.
#:
#: Deploy it with ``instances`` >= 2, so that a ``g`` call finds an idle actor.
STREAM_GATE = guests.module(
    f"""
  (if (result i64) (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 0x67))
    (then (drop (call $host_call (i32.const 200) (i32.const 27)))
          (call $pack (i32.const 120) (i32.const 3)))
    (else (if (result i64) (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 0x21))
      (then (call $emit (i32.const 100) (i32.const 6))
            (call $fail (i32.const 140) (i32.const 5))
            (i64.const 0))
      (else
        (if (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 0x6c)) (then {guests._WAIT_FOR_GO}))
        (call $emit (i32.const 100) (i32.const 6))
        {guests._WAIT_FOR_GO}
        (call $emit (i32.const 110) (i32.const 7))
        (call $pack (i32.const 130) (i32.const 5))))))""",
    imports=guests.IMPORT_EMIT + guests.IMPORT_FAIL + guests.IMPORT_HOST_CALL,
    data=f'(data (i32.const 16) "{guests._KV_DELETE_GO}") (data (i32.const 200) "{_KV_SET_GO}") '
    '(data (i32.const 100) "first\\n") (data (i32.const 110) "second\\n") (data (i32.const 120) "set") '
    '(data (i32.const 130) "done\\n") (data (i32.const 140) "broke")',
)

#: A WASI command that writes its whole environment to stdout (``environ_get``: each
#: ``K=V`` ends with a NUL byte), then a line ``--``, then its arguments the same way.
WASI_ENVIRON = """(module
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $env_sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "environ_get" (func $env_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $args_sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_get" (func $args_get (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (data (i32.const 64) "--\\n")
  (func $write (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func (export "_start")
    ;; counts at 16/20; pointers at 1024; strings at 8192
    (drop (call $env_sizes (i32.const 16) (i32.const 20)))
    (drop (call $env_get (i32.const 1024) (i32.const 8192)))
    (call $write (i32.const 8192) (i32.load (i32.const 20)))
    (call $write (i32.const 64) (i32.const 3))
    (drop (call $args_sizes (i32.const 16) (i32.const 20)))
    (drop (call $args_get (i32.const 1024) (i32.const 8192)))
    (call $write (i32.const 8192) (i32.load (i32.const 20)))))"""
