"""A deployed function: its compiled module, its options, and the actors serving it."""

from __future__ import annotations

import logging

import msgspec

from wasmhive.actors.actor import Actor
from wasmhive.actors.bridge import LoopBridge
from wasmhive.actors.errors import WasmhiveError
from wasmhive.actors.instance import InstanceSpec
from wasmhive.actors.messages import ActorState, ExitReason

from .config import DeployOptions
from .engine import EpochTicker
from .registry import ActorRegistry

__all__ = ["Deployment", "FunctionStats"]

logger = logging.getLogger("wasmhive.runtime")


class FunctionStats(msgspec.Struct):
    """Counters and state of one deployed function."""

    name: str
    digest: str
    mode: str
    timeout: float
    memory_limit: int
    instances: int
    states: dict[str, int]
    queued: int
    calls: int
    failures: int
    crashes: int
    replacements: int


class Deployment:
    """Keeps ``options.instances`` actors of one function alive and routes calls to them.

    Until supervisors bring restart strategies, an actor that crashes is
    replaced at once by a fresh instance (its callers got their typed errors).
    """

    def __init__(
        self,
        name: str,
        digest: str,
        options: DeployOptions,
        spec: InstanceSpec,
        registry: ActorRegistry,
        bridge: LoopBridge,
        ticker: EpochTicker,
    ) -> None:
        self.name = name
        self.digest = digest
        self.options = options
        self.spec = spec
        self.actors: list[Actor] = []
        self.active = True
        self._policy = options.policy
        self._registry = registry
        self._bridge = bridge
        self._ticker = ticker
        self._calls_of_dead = 0
        self._failures_of_dead = 0
        self.crashes = 0
        self.replacements = 0

    def spawn(self) -> Actor:
        """Start one more actor.  Raises the typed error if the guest cannot start."""
        actor = Actor(self._registry.new_ref(self.name), self.spec, self._policy, self._bridge, self._ticker)
        actor.start()
        actor.on_exit(self._ended)
        self._registry.add(actor)
        self.actors.append(actor)
        return actor

    def pick(self) -> Actor:
        """The actor for the next call: an idle one with an empty mailbox, else the least loaded."""
        best: Actor | None = None
        for actor in self.actors:
            if actor.state is ActorState.IDLE and not actor.queued:
                return actor
            if actor.alive and (best is None or actor.queued < best.queued):
                best = actor
        if best is None:
            # Every actor is gone (a replacement failed to start): try once more now.
            best = self.spawn()
        return best

    def stop(self) -> None:
        """Stop every actor; queued messages fail with RuntimeClosed."""
        self.active = False
        for actor in list(self.actors):
            actor.stop(ExitReason("shutdown"))

    def _ended(self, actor: Actor, reason: ExitReason) -> None:
        self._registry.ended(actor, reason)
        if actor in self.actors:
            self.actors.remove(actor)
        self._calls_of_dead += actor.calls
        self._failures_of_dead += actor.failures
        if not reason.abnormal:
            return
        self.crashes += 1
        if self.active and len(self.actors) < self.options.instances:
            try:
                self.spawn()
                self.replacements += 1
            except WasmhiveError as exc:
                logger.error("%s: cannot replace crashed actor %s: %s", self.name, actor.ref.id, exc)

    def stats(self) -> FunctionStats:
        states: dict[str, int] = {}
        for actor in self.actors:
            states[actor.state.value] = states.get(actor.state.value, 0) + 1
        return FunctionStats(
            name=self.name,
            digest=self.digest,
            mode=self.options.mode,
            timeout=self.options.call_timeout,
            memory_limit=self.options.memory_limit,
            instances=sum(1 for a in self.actors if a.alive),
            states=states,
            queued=sum(a.queued for a in self.actors),
            calls=self._calls_of_dead + sum(a.calls for a in self.actors),
            failures=self._failures_of_dead + sum(a.failures for a in self.actors),
            crashes=self.crashes,
            replacements=self.replacements,
        )
