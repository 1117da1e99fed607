"""The daemon target: the scenario's functions in a ``wasmhive serve`` process, called over HTTP.

``DaemonTarget()`` (``--target daemon``) starts its own daemon
(:class:`~wasmhive.runtime.stress.daemon_process.DaemonProcess`) with the
scenario's functions deployed and an execution trace, so executions are
counted at the guest boundary (:class:`~wasmhive.runtime.stress.trace_reader.TraceReader`),
and it can SIGKILL and restart it (``daemon_kill``).

``DaemonTarget("http://host:port")`` (``--target URL``) only calls a daemon
that already runs the functions: executions are not observable there
(``at_most_once`` is unknown) and it cannot be killed.

Both can put a :class:`~wasmhive.runtime.stress.proxy.FaultProxy` between the
client and the daemon for ``slow_connection`` and ``reset_connection`` faults.
Calls are ``POST /v1/invoke/{name}`` on an :class:`httpx.AsyncClient`;
answers become replies, typed errors or untyped ones (:mod:`.wire`).
Function states come from ``GET /metrics`` (:class:`~wasmhive.runtime.stress.scrape.MetricsSampler`).
"""

from __future__ import annotations

import contextlib
import math
import shutil
import tempfile
import uuid
from pathlib import Path

import anyio
import anyio.abc
import httpx

from .daemon_process import DaemonProcess, daemon_config
from .history import FaultRecord, History
from .proxy import FaultProxy
from .scenario import Scenario, ScenarioError
from .schedule import FaultEvent, FaultSchedule
from .scrape import MetricsSampler
from .target import FunctionState, Injection
from .trace_reader import TraceReader
from .wire import ClientTimeout, error_from_answer, error_from_transport

__all__ = ["CONNECTION_FAULTS", "DEFAULT_RESTART_AFTER", "SCRAPE_INTERVAL", "DaemonTarget"]

#: Fault kinds a proxy in front of the daemon injects.
CONNECTION_FAULTS = frozenset({"slow_connection", "reset_connection"})
#: Seconds between a ``daemon_kill`` and the restart, unless the fault says.
DEFAULT_RESTART_AFTER = 0.5
#: Seconds between two scrapes of ``/metrics`` (and reads of the trace).
SCRAPE_INTERVAL = 0.2
#: The ``X-Request-Id`` of request N is this prefix and N.
REQUEST_ID_PREFIX = "wh-stress-"


class DaemonTarget:
    """Drives a wasmhive daemon over HTTP: its own (``url=None``) or one already running at ``url``.

    ``workdir`` (own daemon only) holds the config, data dir, trace and the
    daemon's stdout/stderr; by default a temporary directory, removed at the
    end unless ``keep_workdir``.
    """

    def __init__(self, url: str | None = None, *, workdir: Path | None = None, keep_workdir: bool = False) -> None:
        self.url = url.rstrip("/") if url is not None else None
        self.name = "daemon" if url is None else self.url or "daemon"
        self._workdir_given = workdir
        self._keep = keep_workdir or workdir is not None
        self.workdir: Path | None = None
        self.process: DaemonProcess | None = None
        self._stack = contextlib.AsyncExitStack()
        self._tg: anyio.abc.TaskGroup | None = None
        self._client: httpx.AsyncClient | None = None
        self._admin: httpx.AsyncClient | None = None
        self._proxy: FaultProxy | None = None
        self._trace: TraceReader | None = None
        self._sampler: MetricsSampler | None = None
        self._history: History | None = None
        self._scenario: Scenario | None = None
        self._deadline = 2.0
        self._restarting = False
        self._reset_kinds: frozenset[int] = frozenset()

    def supported_faults(self) -> frozenset[str]:
        """Connection faults always; ``daemon_kill`` only for a daemon the target started."""
        return CONNECTION_FAULTS if self.url is not None else CONNECTION_FAULTS | {"daemon_kill"}

    # --- open ------------------------------------------------------------------------------

    async def open(self, scenario: Scenario, schedule: FaultSchedule, history: History) -> None:
        """Start the daemon (or check the given one), the proxy if needed, the client and the sampler."""
        self._history, self._scenario, self._deadline = history, scenario, scenario.deadline
        functions = [f.name for f in scenario.functions]
        try:
            if self.url is None:
                base = await self._start_own(scenario, history)
            else:
                base = self.url
            self._admin = await self._stack.enter_async_context(httpx.AsyncClient(base_url=base, timeout=2.0))
            listed = await self._functions()
            missing = [name for name in functions if name not in listed]
            if missing:
                raise ScenarioError(
                    f"functions: not deployed in the daemon at {base}: {', '.join(missing)} "
                    "(deploy them first, or use --target daemon)"
                )
            self._sampler = MetricsSampler(functions)
            self._sampler.follow({name: listed[name] for name in functions})
            self._tg = await self._stack.enter_async_context(anyio.create_task_group())
            self._stack.callback(self._tg.cancel_scope.cancel)  # (runs first: background tasks end first)
            kinds = {f.kind for f in scenario.faults}
            self._reset_kinds = frozenset(i for i, f in enumerate(scenario.faults) if f.kind == "reset_connection")
            if kinds & CONNECTION_FAULTS:
                url = httpx.URL(base)
                self._proxy = FaultProxy((url.host, url.port or 80), schedule, history, self._reset_fault)
                await self._tg.start(self._proxy.run)
                base = self._proxy.url
            self._client = await self._stack.enter_async_context(
                httpx.AsyncClient(base_url=base, limits=_limits(scenario), timeout=scenario.deadline)
            )
            await self._scrape()
            self._tg.start_soon(self._observe_forever)
        except BaseException:
            await self._close_quietly()
            raise

    async def _start_own(self, scenario: Scenario, history: History) -> str:
        if self._workdir_given is not None:
            self.workdir = self._workdir_given
            self.workdir.mkdir(parents=True, exist_ok=True)
        else:
            self.workdir = Path(tempfile.mkdtemp(prefix="wasmhive-stress-"))
        trace = self.workdir / "trace.jsonl"
        trace.unlink(missing_ok=True)
        self.process = DaemonProcess(self.workdir, daemon_config(scenario, trace=trace))
        self._trace = TraceReader(trace, history)
        history.executions_observed = True
        await self.process.start()
        return self.process.url

    async def _functions(self) -> dict[str, list[int]]:
        """Deployed function -> the versions its ``latest`` alias points at."""
        assert self._admin is not None
        response = await self._admin.get("/v1/functions")
        response.raise_for_status()
        out: dict[str, list[int]] = {}
        for fn in response.json().get("functions", []):
            latest = (fn.get("aliases") or {}).get("latest") or {}
            out[fn["name"]] = [int(v) for v in latest] or [int(v) for v in fn.get("versions", [])]
        return out

    # --- calls -----------------------------------------------------------------------------

    async def call(self, function: str, payload: bytes) -> bytes:
        """``POST /v1/invoke/{function}``: the reply, or the error the answer (or its absence) stands for."""
        assert self._client is not None and self._history is not None
        request = self._history.request_of(payload)
        request_id = f"{REQUEST_ID_PREFIX}{request}" if request is not None else uuid.uuid4().hex
        if self._trace is not None:
            self._trace.expect(payload)
        with anyio.move_on_after(self._deadline) as scope:
            try:
                response = await self._client.post(
                    f"/v1/invoke/{function}", content=payload, headers={"x-request-id": request_id}
                )
            except httpx.TransportError as exc:
                typed = error_from_transport(exc, function)
                if typed is None:
                    raise
                raise typed from None
        if scope.cancelled_caught:
            raise ClientTimeout(f"no answer within the deadline ({self._deadline:g}s)", function=function)
        if response.status_code == 200:
            return response.content
        raise error_from_answer(response.status_code, response.content)  # typed, or an UntypedAnswer

    def _reset_fault(self, request_id: str) -> int | None:
        """The ``reset_connection`` fault that hits the request with this id, if any (for the proxy)."""
        history = self._history
        if history is None or not request_id.startswith(REQUEST_ID_PREFIX):
            return None
        try:
            record = history.requests[int(request_id.removeprefix(REQUEST_ID_PREFIX))]
        except (ValueError, IndexError):
            return None
        return next((i for i in record.faults if i in self._reset_kinds), None)

    # --- faults ----------------------------------------------------------------------------

    async def inject(self, event: FaultEvent) -> Injection:
        """``daemon_kill``: SIGKILL now, restart in the background after ``restart_after``."""
        if event.kind != "daemon_kill":
            return Injection(False, f"{event.kind} faults have no timed events")
        process, scenario = self.process, self._scenario
        assert process is not None and scenario is not None and self._tg is not None
        if self._restarting or not process.running:
            return Injection(False, "the daemon is down already (restarting)")
        spec = scenario.faults[event.fault]
        wait = spec.restart_after if spec.restart_after is not None else DEFAULT_RESTART_AFTER
        pid = process.process.pid if process.process is not None else "?"
        self._restarting = True
        await process.kill()
        if self._sampler is not None:
            self._sampler.mark_down()
        self._tg.start_soon(self._restart, event.fault, wait)
        return Injection(True, f"SIGKILL daemon pid {pid}; restart in {wait:g}s")

    async def _restart(self, fault: int, wait: float) -> None:
        process, history = self.process, self._history
        assert process is not None and history is not None
        try:
            await anyio.sleep(wait)
            started = history.now()
            await process.start()
            listed = await self._functions()
            names = [f.name for f in self._scenario.functions] if self._scenario is not None else []
            missing = [n for n in names if n not in listed]
            if self._sampler is not None:
                self._sampler.follow({n: listed[n] for n in names if n in listed})
            note = f"restarted: listening again {history.now() - started:.2f}s after the start"
            note += f"; missing functions: {', '.join(missing)}" if missing else "; every function is back"
            history.faults.append(FaultRecord(history.now(), fault, "daemon_kill", "*", not missing, note))
        except Exception as exc:  # recorded; the calls will fail with ConnectionFailed and the run shows it
            history.faults.append(
                FaultRecord(history.now(), fault, "daemon_kill", "*", False, f"restart failed: {exc}"[:500])
            )
        finally:
            self._restarting = False
            if self._trace is not None:
                self._trace.poll()

    # --- observing -------------------------------------------------------------------------

    async def _observe_forever(self) -> None:
        while True:
            await anyio.sleep(SCRAPE_INTERVAL)
            if self._trace is not None:
                self._trace.poll()
            await self._scrape()

    async def _scrape(self) -> None:
        assert self._admin is not None and self._sampler is not None
        try:
            response = await self._admin.get("/metrics", timeout=1.0)
            response.raise_for_status()
        except httpx.HTTPError:
            self._sampler.mark_down()
            return
        self._sampler.update(response.text)

    def sample(self) -> dict[str, FunctionState]:
        """The last scrape of each function (marked ``stale`` while the daemon cannot be read)."""
        return self._sampler.states() if self._sampler is not None else {}

    # --- close -----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop the proxy and the observers, stop the daemon (SIGTERM), read the rest of the trace."""
        await self._close_quietly()
        history = self._history
        if history is not None and self._proxy is not None:
            history.faults.extend(self._proxy.summary())

    async def _close_quietly(self) -> None:
        try:
            await self._stack.aclose()  # (not in a new cancel scope: it holds a task group)
        finally:
            with anyio.CancelScope(shield=True):
                if self.process is not None:
                    await self.process.terminate()
            if self._trace is not None:
                self._trace.poll()
            if self.workdir is not None and not self._keep:
                shutil.rmtree(self.workdir, ignore_errors=True)


def _limits(scenario: Scenario) -> httpx.Limits:
    """A keep-alive pool as large as the load can need at once (closed: its callers; open: rate x deadline)."""
    load = scenario.load
    if load.concurrency is not None:
        size = load.concurrency + 4
    else:
        size = math.ceil((load.rate or 1.0) * scenario.deadline)
    size = max(16, min(size, 1000))
    return httpx.Limits(max_connections=size, max_keepalive_connections=size, keepalive_expiry=30.0)
