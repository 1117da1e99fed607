"""The embedded target: the scenario's functions in a :class:`Runtime` in this process."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from wasmhive.actors.actor import Actor
from wasmhive.actors.errors import UnknownFunction, WasmhiveError
from wasmhive.actors.messages import ActorState
from wasmhive.supervisors.events import ChildExited, ChildStopped, Event, SupervisorGaveUp

from ..config import RuntimeConfig
from ..deployment import Deployment
from ..runtime import Runtime
from .faults import INSTANCE_ACTIONS, GuestProbe, HostFaults, actor_name
from .history import FaultRecord, History, SupervisionRecord
from .load import FOREIGN_BASE, PayloadFactory, payload_factories
from .scenario import FaultSpec, Scenario, ScenarioError
from .schedule import FaultEvent, FaultSchedule
from .target import FunctionState, Injection

__all__ = ["EmbeddedTarget"]

_ALL_FAULTS = frozenset({"timeout", "oom", "fuel", "kill", "host", "flood"})


class EmbeddedTarget:
    """Drives functions in a :class:`Runtime` of this process.

    Without ``runtime``, the target makes its own (``RuntimeConfig`` from the
    scenario's ``[runtime]`` table, over ``config`` if given) and deploys the
    scenario's functions into it; every fault kind is available.  With a
    ``runtime`` (the user's, already running), functions without a
    ``module`` must already be deployed there; the probe and the host-call
    hook are removed again at the end.
    """

    def __init__(self, runtime: Runtime | None = None, *, config: RuntimeConfig | None = None) -> None:
        self.name = "embedded"
        self._given = runtime
        self._config = config
        self.runtime: Runtime | None = runtime
        self._host_faults: HostFaults | None = None
        self._stack = contextlib.AsyncExitStack()
        self._probe: GuestProbe | None = None
        self._deployed: list[str] = []
        self._functions: list[str] = []
        self._history: History | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._payloads: dict[str, PayloadFactory] = {}
        self._flooded = 0
        self._unlisten: Any = None
        self._scenario: Scenario | None = None

    def supported_faults(self) -> frozenset[str]:
        """Every embedded fault kind (the runtime given or not)."""
        return _ALL_FAULTS

    async def open(self, scenario: Scenario, schedule: FaultSchedule, history: History) -> None:
        """Start the runtime (unless given), deploy the functions, install the probe."""
        self._history = history
        self._scenario = scenario
        if self._given is None:
            self.runtime = await self._stack.enter_async_context(
                Runtime(_runtime_config(scenario, self._config))
            )
        rt = self.runtime
        assert rt is not None
        self._tg = await self._stack.enter_async_context(anyio.create_task_group())
        self._stack.callback(self._tg.cancel_scope.cancel)  # (runs first: floods end before the runtime)
        base = Path(scenario.base_dir)
        for fn in scenario.functions:
            if fn.module is not None:
                try:
                    await rt.deploy(fn.name, base / fn.module, **fn.options.deploy_kwargs())
                except WasmhiveError as exc:
                    raise ScenarioError(f"function {fn.name!r}: cannot deploy: {exc}") from None
                self._deployed.append(fn.name)
            elif fn.name not in rt.functions():
                raise ScenarioError(f"function {fn.name!r}: no module given and it is not deployed")
            self._functions.append(fn.name)
        self._probe = GuestProbe(history, schedule)
        for name in self._functions:
            rt.deployment(name).set_call_hook(self._probe)
        history.executions_observed = True
        if any(f.kind == "host" for f in scenario.faults):
            self._host_faults = HostFaults()
            self._host_faults.attach(schedule, history)
            rt.set_host_call_hook(self._host_faults)
        self._unlisten = rt.events.listen(self._on_event)
        self._payloads = payload_factories(scenario, schedule.seed + 1)

    def _on_event(self, event: Event) -> None:
        history = self._history
        if history is None or event.supervisor not in self._functions:
            return
        reason = None
        if isinstance(event, (ChildExited, ChildStopped)):
            reason = f"{event.reason.kind}: {event.reason.message}"
        child = None if isinstance(event, SupervisorGaveUp) else event.child
        history.supervision.append(
            SupervisionRecord(history.now(), type(event).__name__, event.supervisor, child, reason)
        )

    async def call(self, function: str, payload: bytes) -> bytes:
        """``Runtime.invoke``."""
        assert self.runtime is not None
        return await self.runtime.invoke(function, payload)

    def _deployment(self, function: str) -> Deployment:
        assert self.runtime is not None
        return self.runtime.deployment(function)

    async def inject(self, event: FaultEvent) -> Injection:
        """Apply one timed fault to the function's pool now (or arm it for an actor's next call)."""
        assert self._probe is not None and self._history is not None
        try:
            actors = [a for a in self._deployment(event.function).actors if a.alive]
        except UnknownFunction:
            return Injection(False, "the function is not deployed")
        if not actors:
            return Injection(False, "no live actor")
        kind = event.kind
        if kind == "kill":
            spec = self._fault(event.fault)
            busy = [a for a in actors if a.state is ActorState.BUSY]
            if spec.during_call and busy:
                victim = _pick(busy, event.pick)
                victim.kill()
                return Injection(True, f"killed {actor_name(victim)} during a call")
            if spec.during_call:
                victim = _pick(actors, event.pick)
                self._probe.arm(victim, event.fault, INSTANCE_ACTIONS["kill"])
                return Injection(True, f"armed: {actor_name(victim)} is killed as its next call starts")
            idle = [a for a in actors if a.state is ActorState.IDLE]
            victim = _pick(idle or actors, event.pick)
            was = victim.state.value
            victim.kill()
            return Injection(True, f"killed {actor_name(victim)} ({was})")
        if kind == "flood":
            victim = _pick(actors, event.pick)
            count = self._fault(event.fault).messages or victim.policy.mailbox_size
            assert self._tg is not None
            for _ in range(count):
                self._flooded += 1
                payload = self._payloads[event.function].make(FOREIGN_BASE + self._flooded)
                self._tg.start_soon(self._flood_one, victim, payload)
            return Injection(True, f"sent {count} extra messages to {actor_name(victim)}")
        if kind in ("timeout", "oom", "fuel"):
            victim = _pick(actors, event.pick)
            self._probe.arm(victim, event.fault, INSTANCE_ACTIONS[kind])
            return Injection(True, f"armed on {actor_name(victim)} for its next call")
        return Injection(False, f"{kind} faults have no timed events")

    def _fault(self, index: int) -> FaultSpec:
        assert self._scenario is not None
        return self._scenario.faults[index]

    async def _flood_one(self, actor: Actor, payload: bytes) -> None:
        with anyio.move_on_after(30):
            with contextlib.suppress(WasmhiveError):
                await actor.ask(payload)

    def sample(self) -> dict[str, FunctionState]:
        """``Runtime.stats()`` of each function."""
        assert self.runtime is not None
        stats = self.runtime.stats().functions
        out = {}
        for name in self._functions:
            s = stats.get(name)
            if s is not None:
                out[name] = FunctionState(
                    pool_size=s.pool_size,
                    instances=s.instances,
                    in_flight=s.in_flight,
                    breaker=s.breaker_state,
                    crashes=s.crashes,
                    restarts=s.restarts,
                    retries=s.retries,
                    rejections=s.rejections,
                )
        return out

    async def aclose(self) -> None:
        """Remove the probe and host faults; undeploy what was deployed into a given runtime; close our own."""
        rt = self.runtime
        if self._host_faults is not None and self._history is not None:
            self._host_faults.detach()
            if rt is not None:
                rt.set_host_call_hook(None)
            for fault, (delayed, failed) in self._host_faults.counts.items():
                self._history.faults.append(
                    FaultRecord(
                        self._history.now(),
                        fault,
                        "host",
                        self._fault(fault).function or "*",
                        bool(delayed or failed),
                        f"{delayed} host calls delayed, {failed} failed",
                    )
                )
        if self._unlisten is not None:
            self._unlisten()
        if rt is not None:
            for name in self._functions:
                with contextlib.suppress(WasmhiveError):
                    rt.deployment(name).set_call_hook(None)
            if self._given is not None:
                for name in self._deployed:
                    with contextlib.suppress(WasmhiveError):
                        await rt.undeploy(name)
        await self._stack.aclose()


def _pick(actors: list[Actor], pick: float) -> Actor:
    return actors[min(len(actors) - 1, int(pick * len(actors)))]


def _runtime_config(scenario: Scenario, base: RuntimeConfig | None) -> RuntimeConfig:
    import msgspec

    spec = scenario.runtime
    changes: dict[str, Any] = {"fuel": spec.fuel or (base.fuel if base is not None else False)}
    for field in ("epoch_tick", "shutdown_grace", "init_timeout", "max_payload_bytes"):
        value = getattr(spec, field)
        if value is not None:
            changes[field] = value
    return msgspec.structs.replace(base or RuntimeConfig(), **changes)
