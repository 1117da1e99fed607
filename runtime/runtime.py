"""The embeddable runtime: deploy WASM functions and call them, under trio or asyncio."""

from __future__ import annotations

import os
import re
import threading
import weakref
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import msgspec
import wasmtime

from wasmhive.actors.actor import Actor, Envelope
from wasmhive.actors.bridge import LoopBridge
from wasmhive.actors.errors import (
    ActorCrashed,
    AlreadyDeployed,
    InvalidConfig,
    InvalidModule,
    PayloadTooLarge,
    RuntimeClosed,
    UnknownFunction,
    WasmhiveError,
)
from wasmhive.actors.host import Fetcher, HostCallHook, HostCallHooks, HostServices, KeyValueStore
from wasmhive.actors.messages import RUNTIME_CLOSING, ActorRef, ActorState, Down, ExitReason
from wasmhive.actors.monitor import Monitor
from wasmhive.actors.sinks import ChunkPipe
from wasmhive.actors.worker import ActorThread, ThreadPark
from wasmhive.supervisors.autoscaler import PoolPolicy
from wasmhive.supervisors.breaker import BreakerPolicy
from wasmhive.supervisors.bulkhead import BulkheadPolicy
from wasmhive.supervisors.events import EventBus
from wasmhive.supervisors.retry import RetryPolicy
from wasmhive.supervisors.scheduler import LoopScheduler

from .cache import CompileCache
from .config import DeployOptions, RuntimeConfig
from .deployment import Deployment, FunctionStats, Strategies
from .engine import EpochTicker, build_engine
from .fetch import FetchPolicy, HttpClients, HttpFetcher
from .kv import MemoryKeyValueStore
from .module import ModuleSource, has_start_function, read_module_source
from .registry import ActorRegistry
from .secrets import SecretStore
from .spec import build_instance_spec, build_js_spec

__all__ = ["Runtime", "RuntimeStats"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class RuntimeStats(msgspec.Struct):
    """A snapshot of the runtime: every function, live actors, compile cache counters."""

    functions: dict[str, FunctionStats]
    actors: int
    cache: dict[str, int]


class Runtime:
    """Deploys WebAssembly functions as actors and calls them.

    Use it as an async context manager, under trio or asyncio::

        async with Runtime() as rt:
            await rt.deploy("echo", "echo.wasm")
            print(await rt.invoke("echo", b"hello"))
            async for chunk in rt.stream("echo", b"..."):
                ...

    Closing it stops every actor and joins every thread it started.
    """

    def __init__(
        self,
        config: RuntimeConfig | None = None,
        *,
        kv: KeyValueStore | None = None,
        secrets: SecretStore | None = None,
    ) -> None:
        self.config = config or RuntimeConfig()
        self.kv: KeyValueStore = kv if kv is not None else MemoryKeyValueStore()
        if secrets is None:
            secrets = SecretStore.from_env()
            if self.config.secrets_file:
                secrets = secrets.merged(SecretStore.from_file(self.config.secrets_file))
        self.secrets = secrets
        self._http: HttpClients | None = None
        self.engine, fingerprint = build_engine(self.config)
        self.cache = CompileCache(
            self.engine, fingerprint, self.config.resolved_cache_dir() if self.config.cache_enabled else None
        )
        self._ticker = EpochTicker(self.engine, self.config.epoch_tick)
        #: Starts thread actors' guests (one thread for all: idle actors own no thread).
        self._starter = ActorThread("wasmhive-starter")
        #: Threads of ended thread actors, reused by new ones (restarts create no threads).
        self.thread_park = ThreadPark()
        self._host_hooks = HostCallHooks()
        # A runtime dropped without aclose() still lets its parked threads go.
        weakref.finalize(self, self.thread_park.close)
        self._registry = ActorRegistry()
        self._deployments: dict[str, Deployment] = {}
        self._reserved: set[str] = set()
        self._bridge: LoopBridge | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self._scheduler: LoopScheduler | None = None
        #: Supervision events of every function (starts, exits, restarts, give-ups).
        self.events = EventBus()
        self._max_payload = self.config.max_payload_bytes
        self._open = False
        self._closed = False

    # --- life cycle -------------------------------------------------------------

    async def __aenter__(self) -> Runtime:
        if self._open or self._closed:
            raise RuntimeError("a Runtime can be entered only once")
        self._bridge = LoopBridge.current()
        # Restart backoff and scaling timers run as tasks of this group.
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._scheduler = LoopScheduler(self._task_group, clock=self._bridge.clock)
        # One client for every guest fetch: connection pooling, no proxies from the environment.
        self._http = HttpClients()
        self._ticker.start()
        self._open = True
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop every actor (queued messages fail with RuntimeClosed) and join their threads.

        Calls in flight get ``config.shutdown_grace`` seconds to finish; then
        they are interrupted and their callers get ``ActorKilled``.  Threads
        are joined for up to 5 s each: a guest stuck in a host call past that
        keeps its thread until the call returns, and the thread then exits.
        """
        if self._closed:
            return
        self._closed = True
        actors = self._registry.live()
        for deployment in self._deployments.values():
            deployment.stop(RUNTIME_CLOSING)
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(self.config.shutdown_grace):
                for actor in actors:
                    await actor.wait_stopped()
            for actor in actors:
                actor.kill()  # no-op for actors that have ended
            with anyio.move_on_after(5.0):
                for actor in actors:
                    await actor.wait_stopped()
            for actor in actors:
                actor.release_thread()  # (ended actors did; one still stuck in a call does it now)
            started = [actor for actor in actors if actor.thread_started]
            self._starter.stop()
            await anyio.to_thread.run_sync(_join_all, started, 5.0)
            await anyio.to_thread.run_sync(self._starter.join, 5.0)
            await anyio.to_thread.run_sync(_join_threads, self.thread_park.close(), 5.0)
        self._deployments.clear()
        self._ticker.stop()
        if self._http is not None:
            with anyio.CancelScope(shield=True):
                await self._http.aclose()
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()
            await self._task_group.__aexit__(None, None, None)

    # --- deploying ----------------------------------------------------------------

    async def deploy(
        self,
        name: str,
        module: ModuleSource,
        *,
        mode: str | None = None,
        timeout: float | None = None,
        memory_limit: int | None = None,
        fuel: int | None = None,
        mailbox_size: int | None = None,
        overflow: str | None = None,
        mailbox_wait: float | None = None,
        instances: int | None = None,
        pool: PoolPolicy | None = None,
        breaker: BreakerPolicy | None = None,
        retry: RetryPolicy | None = None,
        bulkhead: BulkheadPolicy | None = None,
        secrets: Sequence[str] = (),
        fetch: FetchPolicy | None = None,
        kind: str | None = None,
    ) -> FunctionStats:
        """Compile (or load from the cache), validate and start a function.

        ``module`` is wasm bytes, WAT text bytes, or a path to either.
        ``mode`` is ``"thread"`` (default: calls run on the actor's own OS
        thread) or ``"inline"`` (calls run on the event-loop thread; for short
        calls).  ``timeout`` is in seconds, ``memory_limit`` in bytes, ``fuel``
        an instruction budget per call.  ``overflow`` is ``"wait"`` (a sender
        waits up to ``mailbox_wait`` seconds for room) or ``"reject"``.
        ``instances`` actors share the load; or give a ``pool`` policy to let
        the pool scale between its ``min_size`` and ``max_size``.  ``breaker``,
        ``retry`` and ``bulkhead`` add those strategies around each call (see
        :mod:`wasmhive.runtime.deployment` for the order they wrap a call in).
        ``secrets`` names the secrets the guest may read; ``fetch`` grants it
        network access through ``http.fetch`` under that policy (thread mode only).
        ``kind="js"`` (or a path ending in ``.js``) deploys JavaScript source run
        on QuickJS-NG instead of a wasm module (see docs/js.md).

        Raises :class:`InvalidConfig`, :class:`InvalidModule` or
        :class:`AlreadyDeployed`; nothing else running is affected.
        """
        self._check_open()
        if not isinstance(name, str) or not _NAME.match(name):
            raise InvalidConfig(
                f"function name {name!r} must be 1-64 letters, digits, '_', '.' or '-', "
                "starting with a letter or digit",
                function=name if isinstance(name, str) else None,
            )
        if name in self._deployments or name in self._reserved:
            raise AlreadyDeployed(f"a function named {name!r} is already deployed; undeploy it first", function=name)
        try:
            options = DeployOptions.build(
                mode=mode,
                timeout=timeout,
                memory_limit=memory_limit,
                fuel=fuel,
                mailbox_size=mailbox_size,
                overflow=overflow,
                mailbox_wait=mailbox_wait,
                instances=instances,
            )
        except InvalidConfig as exc:
            raise InvalidConfig(exc.message, function=name) from None
        if pool is not None and instances is not None:
            raise InvalidConfig("give either instances or a pool policy, not both", function=name)
        strategies = Strategies(
            pool=pool or PoolPolicy.fixed(options.instances), breaker=breaker, retry=retry, bulkhead=bulkhead
        )
        if fetch is not None and options.mode == "inline":
            raise InvalidConfig(
                "a function that may fetch must run in thread mode: a fetch waits for the network, "
                "which would block the event loop; deploy it with mode='thread'",
                function=name,
            )
        services = HostServices(
            function=name,
            kv=self.kv,
            secrets=self.secrets.grant(secrets, name),
            fetch=self._fetcher(fetch),
            hooks=self._host_hooks,
        )
        if options.fuel is not None and not self.config.fuel:
            raise InvalidConfig("fuel needs RuntimeConfig(fuel=True)", function=name)
        self._reserved.add(name)
        try:
            # Reading and compiling can take a while (seconds for big modules): off the loop.
            # --- JS actors (actors/js.py): kind="js" or a path ending in .js ---
            if _is_js(module, kind):
                from wasmhive.actors.js import js_runtime_path

                source = _read_js(name, module)
                compiled, digest, _ = await anyio.to_thread.run_sync(self._compile, name, js_runtime_path())
                spec = build_js_spec(
                    name,
                    source,
                    compiled,
                    options,
                    self.config,
                    engine=self.engine,
                    services=services,
                )
            else:  # --- end JS ---
                compiled, digest, has_start = await anyio.to_thread.run_sync(self._compile, name, module)
                spec = build_instance_spec(
                    name,
                    compiled,
                    options,
                    self.config,
                    engine=self.engine,
                    services=services,
                    has_start_function=has_start,
                )
            self._check_open()
            assert self._bridge is not None and self._scheduler is not None
            deployment = Deployment(
                name,
                digest,
                options,
                strategies,
                spec,
                registry=self._registry,
                bridge=self._bridge,
                ticker=self._ticker,
                starter=self._starter,
                park=self.thread_park,
                scheduler=self._scheduler,
                events=self.events,
                shutdown_grace=self.config.shutdown_grace,
            )
            try:
                deployment.start()
            except WasmhiveError as exc:
                deployment.stop(ExitReason("shutdown"))
                if isinstance(exc, InvalidModule):  # JS: a syntax error, with line and column
                    raise InvalidModule(exc.message, function=name, **exc.details) from None
                raise InvalidModule(
                    f"the module failed to start: {type(exc).__name__}: {exc.message}", function=name
                ) from None
            await self._check_started(deployment)
            self._deployments[name] = deployment
            return deployment.stats()
        finally:
            self._reserved.discard(name)

    async def _check_started(self, deployment: Deployment) -> None:
        """Wait for the first actors (thread actors start on their own threads); a guest
        that cannot start fails its deploy.  An empty pool starts one actor to check."""
        check = None if deployment.actors else deployment.spawn_actor()
        actors = deployment.actors if check is None else [check]
        for actor in actors:
            await actor.wait_started()
        failed = next((a.start_error for a in actors if a.start_error is not None), None)
        if check is not None:
            check.stop(ExitReason("normal", "start-up check"))
        if failed is not None:
            deployment.stop(ExitReason("shutdown", "deploy failed"))
            if isinstance(failed, InvalidModule):  # JS: a syntax error, with line and column
                raise InvalidModule(failed.message, function=deployment.name, **failed.details)
            raise InvalidModule(
                f"the module failed to start: {type(failed).__name__}: {failed.message}", function=deployment.name
            )

    def _fetcher(self, policy: FetchPolicy | None) -> Fetcher | None:
        if policy is None:
            return None
        assert self._http is not None and self._bridge is not None
        return HttpFetcher(policy, self._http, self._bridge).fetch

    def _compile(self, name: str, module: ModuleSource) -> tuple[wasmtime.Module, str, bool]:
        """The compiled module, its digest, and whether it has a start function."""
        wasm = read_module_source(name, module)
        try:
            compiled, digest = self.cache.load(wasm)
        except wasmtime.WasmtimeError as exc:
            raise InvalidModule(f"the module does not validate: {_first_line(exc)}", function=name) from None
        return compiled, digest, has_start_function(wasm)

    async def undeploy(self, name: str) -> None:
        """Stop a function's actors (calls in flight finish; queued ones fail) and forget it."""
        self._check_open()
        deployment = self._deployments.pop(name, None)
        if deployment is None:
            raise UnknownFunction(f"no function named {name!r} is deployed", function=name)
        actors = deployment.actors
        deployment.stop(ExitReason("normal", "undeployed"))
        for actor in actors:
            await actor.wait_stopped()
        if all(d.digest != deployment.digest for d in self._deployments.values()):
            self.cache.forget(deployment.digest)  # the disk copy stays for the next deploy

    # --- calling --------------------------------------------------------------------

    async def invoke(self, name: str, payload: bytes, *, key: str | None = None) -> bytes:
        """Call function ``name`` once; return what it emitted followed by its reply.

        With a ``key``, calls with the same key go to the same actor while it
        lives (session affinity).  Raises the call's typed error
        (:class:`GuestError`, :class:`CallTimeout`, :class:`CircuitOpen`, ...).
        """
        try:
            if self._closed:
                raise RuntimeClosed("the runtime is closed", function=name)
            deployment = self._deployments.get(name)
            if deployment is None:
                raise self._unknown(name)
            if type(payload) is not bytes:
                payload = _as_bytes(payload)
            if len(payload) > self._max_payload:
                raise self._too_large(name, payload)
            return await deployment.call(payload, key)
        except WasmhiveError:
            await self._after_refusal()
            raise

    async def stream(self, name: str, payload: bytes, *, key: str | None = None) -> AsyncIterator[bytes]:
        """Call function ``name`` and yield each chunk it emits, then its reply (if non-empty).

        With ``mode="thread"`` chunks arrive while the guest still runs; an
        ``inline`` call holds the loop, so its chunks arrive when it returns.
        A failed call raises its typed error after the chunks emitted before
        the failure.  Use ``contextlib.aclosing`` if you may stop early.
        """
        if self._closed:
            raise RuntimeClosed("the runtime is closed", function=name)
        deployment = self._deployments.get(name)
        if deployment is None:
            raise self._unknown(name)
        payload = _as_bytes(payload)
        if len(payload) > self._max_payload:
            raise self._too_large(name, payload)
        assert self._bridge is not None
        pool = deployment.pool
        pipe = ChunkPipe(self._bridge)
        pool.in_flight += 1  # the autoscaler sees streams as load, until the stream is done
        actor: Actor | None = None
        envelope: Envelope | None = None
        try:
            actor = await deployment.route(key)
            envelope = await actor.submit(payload, pipe)
            error: WasmhiveError | None = None
            reply = b""
            if actor.policy.mode == "inline":
                try:
                    reply = await actor.outcome(envelope)
                except WasmhiveError as exc:
                    error = exc
            while (chunk := await pipe.receive()) is not None:
                yield chunk
            if actor.policy.mode != "inline":
                reply = await actor.outcome(envelope)
            if error is not None:
                raise error
            if reply:
                yield reply
        finally:
            pool.in_flight -= 1
            pipe.abandon()
            if actor is not None and envelope is not None:
                actor.forget(envelope)  # a consumer that left early: a message not started yet never runs

    async def ask(self, ref: ActorRef, payload: bytes) -> bytes:
        """Send one message to a specific actor (see :meth:`actors`)."""
        try:
            actor = self._registry.get(ref)
            if actor is None:
                reason = self._registry.reason_of(ref)
                raise ActorCrashed(
                    f"actor {ref.id} is gone ({reason.kind}: {reason.message})",
                    function=ref.function,
                    reason=reason.kind,
                )
            return await actor.ask(_as_bytes(payload))
        except WasmhiveError:
            await self._after_refusal()
            raise

    async def _after_refusal(self) -> None:
        """Yield once before raising a typed error.

        Refusals (unknown function, full mailbox, open breaker, ...) can come
        without any wait; a caller retrying in a loop must still let the event
        loop run, or the replies it waits for never arrive.
        """
        if self._bridge is not None:
            await self._bridge.checkpoint()

    # --- observing --------------------------------------------------------------------

    def deployment(self, name: str) -> Deployment:
        """The :class:`Deployment` of function ``name``: its pool, actors and strategies.

        For tools that look inside a function (the stress harness); calls go through :meth:`invoke`.
        """
        deployment = self._deployments.get(name)
        if deployment is None:
            raise self._unknown(name)
        return deployment

    def set_host_call_hook(self, hook: HostCallHook | None) -> None:
        """Call ``hook(op, function)`` before every host call of every function (None: remove it).

        On the guest's thread, just before the operation runs; see
        :data:`wasmhive.actors.host.HostCallHook` for what it may do.  Tools
        only (the stress harness's host faults); unset, a host call pays one
        ``is not None`` check.
        """
        self._host_hooks.before = hook

    def functions(self) -> list[str]:
        """Names of the deployed functions."""
        return sorted(self._deployments)

    def actors(self, name: str) -> list[ActorRef]:
        """References to the live actors of a function."""
        deployment = self._deployments.get(name)
        if deployment is None:
            raise self._unknown(name)
        return [actor.ref for actor in deployment.actors]

    def state(self, ref: ActorRef) -> ActorState:
        """The state of an actor; ``STOPPED`` or ``CRASHED`` once it has ended."""
        actor = self._registry.get(ref)
        if actor is not None:
            return actor.state
        return ActorState.CRASHED if self._registry.reason_of(ref).abnormal else ActorState.STOPPED

    def monitor(self, ref: ActorRef) -> Monitor:
        """Watch an actor: the monitor receives :class:`Down` when it ends (at once if it has)."""
        actor = self._registry.get(ref)
        if actor is not None:
            return actor.monitor()
        return Monitor(Down(ref, self._registry.reason_of(ref)))

    def stats(self) -> RuntimeStats:
        """Counters and states of every function, the number of live actors, and cache counters."""
        s = self.cache.stats
        return RuntimeStats(
            functions={name: d.stats() for name, d in sorted(self._deployments.items())},
            actors=len(self._registry),
            cache={
                "memory_hits": s.memory_hits,
                "disk_hits": s.disk_hits,
                "compiles": s.compiles,
                "rebuilt": s.rebuilt,
            },
        )

    # --- helpers ---------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeClosed("the runtime is closed")
        if not self._open:
            raise RuntimeError("use the Runtime as `async with Runtime() as rt:` before deploying")

    def _unknown(self, name: str) -> WasmhiveError:
        if self._closed:
            return RuntimeClosed("the runtime is closed", function=name)
        known = ", ".join(sorted(self._deployments)) or "none"
        return UnknownFunction(f"no function named {name!r} is deployed (deployed: {known})", function=name)

    def _too_large(self, name: str, payload: bytes) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"payload of {len(payload)} bytes is over max_payload_bytes={self._max_payload}",
            function=name,
            size=len(payload),
            limit=self._max_payload,
        )


def _join_all(actors: list[Actor], timeout: float) -> None:
    for actor in actors:
        actor.join_thread(timeout)


def _join_threads(threads: list[threading.Thread], timeout: float) -> None:
    for thread in threads:
        thread.join(timeout)


def _as_bytes(payload: Any) -> bytes:
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, (bytearray, memoryview)):
        return bytes(payload)
    raise TypeError(f"payload must be bytes, not {type(payload).__name__}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --- JS actors (actors/js.py) ---
def _is_js(module: ModuleSource, kind: str | None) -> bool:
    if kind is not None and kind not in ("js", "wasm"):
        raise InvalidConfig(f"kind must be 'js' or 'wasm', not {kind!r}")
    if kind == "js":
        return True
    return kind is None and isinstance(module, (str, os.PathLike)) and str(module).endswith(".js")


def _read_js(name: str, module: ModuleSource) -> str:
    """JS source: read from a path (a PathLike, or a one-line str ending in .js), else the text itself."""
    try:
        if isinstance(module, os.PathLike) or (
            isinstance(module, str) and "\n" not in module and module.endswith(".js")
        ):
            return Path(module).read_text(encoding="utf-8")
        if isinstance(module, str):
            return module
        return bytes(module).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidModule(f"cannot read JavaScript source: {exc}", function=name) from None


# --- end JS ---
