"""Supervision trees with Erlang/OTP semantics.

A :class:`Supervisor` starts its children from :class:`ChildSpec`\\ s, in
order, watches them, and when one ends decides, by the child's restart type
and the supervisor's strategy, what to restart:

* ``one_for_one``: only that child;
* ``one_for_all``: all children (the others are stopped first, in reverse order);
* ``rest_for_one``: that child and the ones started after it.

Restart types: ``permanent`` children are always restarted, ``transient``
ones only after an abnormal exit, ``temporary`` ones never (and are forgotten).
More than ``max_restarts`` restarts within ``period`` seconds make the
supervisor stop every child (in reverse order) and then end itself with
reason ``shutdown``; its own supervisor then applies its own strategy, so
restarts multiply up a tree exactly as in OTP.  A :class:`DynamicSupervisor`
has children that share one spec and are added at run time.

Beyond OTP, each child may have a restart backoff (Akka's formula, see
:mod:`.backoff`), and stopping a child gives work in flight a grace period
before a hard kill.  Everything runs on the event-loop thread and, apart from
backoff and grace timers (through a :class:`~.protocol.Scheduler`), is
synchronous: ``start`` returns a child at once (a thread-mode WASM actor then
finishes starting on its own thread, and reports a failed start as an exit).
"""

from __future__ import annotations

import itertools
import logging
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from wasmhive.actors.errors import InvalidConfig, WasmhiveError
from wasmhive.actors.messages import ExitReason

from .backoff import BackoffPolicy, RestartBackoff
from .events import ChildExited, ChildRestarted, ChildStarted, ChildStopped, EventBus, SupervisorGaveUp
from .protocol import Cancel, ExitCallback, Scheduler, Supervisable

__all__ = [
    "ChildInfo",
    "ChildSpec",
    "DynamicSupervisor",
    "RestartType",
    "Strategy",
    "Supervisor",
    "SupervisorPolicy",
]

logger = logging.getLogger("wasmhive.supervisors")

Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
RestartType = Literal["permanent", "transient", "temporary"]

SHUTDOWN = ExitReason("shutdown")


class SupervisorPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Strategy and restart intensity of a supervisor (defaults as in OTP: 1 restart in 5 s)."""

    strategy: Strategy = "one_for_one"
    max_restarts: int = 1
    period: float = 5.0

    def __post_init__(self) -> None:
        if self.max_restarts < 0:
            raise InvalidConfig(f"max_restarts must be >= 0, got {self.max_restarts}")
        if not self.period > 0:
            raise InvalidConfig(f"period must be > 0, got {self.period}")


@dataclass(frozen=True)
class ChildSpec:
    """How to start one child and what to do when it ends.

    ``start`` returns a started :class:`Supervisable` (or raises).  ``shutdown``
    is the grace (seconds) given to work in flight when the supervisor stops
    the child, before a hard kill; ``"brutal_kill"`` kills at once.
    """

    id: str
    start: Callable[[], Supervisable]
    restart: RestartType = "permanent"
    shutdown: float | Literal["brutal_kill"] = 5.0
    backoff: BackoffPolicy | None = None


@dataclass
class _Child:
    spec: ChildSpec
    process: Supervisable | None = None
    restarts: int = 0
    backoff: RestartBackoff | None = None
    pending_restart: Cancel | None = None
    started: int = 0


class ChildInfo(msgspec.Struct, frozen=True):
    """One child as :meth:`Supervisor.which_children` reports it."""

    id: str
    running: bool
    restarting: bool
    restarts: int
    restart: str


@dataclass
class _State:
    alive: bool = True
    stopping: bool = False
    exit_callbacks: list[ExitCallback] = field(default_factory=list)


class Supervisor:
    """An OTP-style supervisor; itself :class:`Supervisable`, so trees nest.

    ``scheduler`` runs backoff and grace timers and gives the clock restart
    intensity is measured on; ``events`` receives every supervision event.
    """

    def __init__(
        self,
        name: str,
        children: Sequence[ChildSpec],
        policy: SupervisorPolicy | None = None,
        *,
        scheduler: Scheduler,
        events: EventBus | None = None,
    ) -> None:
        self.name = name
        self.policy = policy or SupervisorPolicy()
        self.events = events or EventBus()
        self.exit_reason: ExitReason | None = None
        self._scheduler = scheduler
        self._children: list[_Child] = []
        #: Forget children that end for good (a dynamic supervisor's do not come back).
        self._forget_finished = False
        #: Times of the restarts within the last ``period`` (oldest first).
        self._restart_times: deque[float] = deque()
        self._rng = random.Random()  # shared by the children's backoffs
        self._state = _State()
        ids = [spec.id for spec in children]
        if len(set(ids)) != len(ids):
            raise InvalidConfig(f"supervisor {name!r}: child ids must be unique, got {ids}")
        for spec in children:
            self._children.append(self._new_child(spec))

    # --- Supervisable ------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._state.alive and not self._state.stopping

    def on_exit(self, callback: ExitCallback) -> None:
        self._state.exit_callbacks.append(callback)

    def stop(self, reason: ExitReason = SHUTDOWN) -> None:
        """Stop every child, in reverse start order, then end with ``reason``."""
        if not self._state.alive or self._state.stopping:
            return
        self._state.stopping = True
        for child in reversed(self._children):
            self._terminate(child, reason)
        self._exit(reason)

    def kill(self) -> None:
        """Kill every child at once, then end."""
        if not self._state.alive:
            return
        self._state.stopping = True
        for child in reversed(self._children):
            self._cancel_restart(child)
            process, child.process = child.process, None
            if process is not None:
                process.kill()
        self._exit(ExitReason("killed"))

    # --- starting ------------------------------------------------------------------------

    def start(self) -> Supervisor:
        """Start the children in order.  If one fails, stop the started ones and raise its error."""
        for index, child in enumerate(self._children):
            try:
                self._start(child)
            except BaseException:
                for started in reversed(self._children[:index]):
                    self._terminate(started, SHUTDOWN)
                self._state.alive = False
                raise
        return self

    def which_children(self) -> list[ChildInfo]:
        """The children, in start order."""
        return [
            ChildInfo(
                id=c.spec.id,
                running=c.process is not None,
                restarting=c.pending_restart is not None,
                restarts=c.restarts,
                restart=c.spec.restart,
            )
            for c in self._children
        ]

    def child(self, child_id: str) -> Supervisable | None:
        """The running process of a child, if any."""
        for child in self._children:
            if child.spec.id == child_id:
                return child.process
        return None

    @property
    def size(self) -> int:
        """Children kept (running or waiting to restart)."""
        return len(self._children)

    @property
    def restarts(self) -> int:
        """Restarts performed so far, over all children."""
        return sum(c.restarts for c in self._children)

    def _new_child(self, spec: ChildSpec) -> _Child:
        backoff = RestartBackoff(spec.backoff, self._rng, clock=self._scheduler.now) if spec.backoff else None
        return _Child(spec=spec, backoff=backoff)

    def _start(self, child: _Child) -> None:
        process = child.spec.start()
        child.process = process
        child.started += 1
        def exited(proc: Any, reason: ExitReason) -> None:
            self._exited(child, proc, reason)

        process.on_exit(exited)
        self.events.publish(ChildStarted(self.name, child.spec.id, self._scheduler.now()))

    # --- a child ended -----------------------------------------------------------------

    def _exited(self, child: _Child, process: Any, reason: ExitReason) -> None:
        if child.process is not process:
            return  # we stopped it ourselves (strategy, shutdown); already accounted for
        child.process = None
        if not self.alive:
            return
        self.events.publish(ChildExited(self.name, child.spec.id, reason, self._scheduler.now()))
        restart = child.spec.restart
        if restart == "temporary" or (restart == "transient" and not reason.abnormal):
            if restart == "temporary" or self._forget_finished:
                self._children.remove(child)
            return
        if not self._count_restart():
            return
        strategy = self.policy.strategy
        if strategy == "one_for_one":
            group = [child]
        else:
            index = self._children.index(child)
            group = list(self._children) if strategy == "one_for_all" else self._children[index:]
            for sibling in reversed(group):
                if sibling is not child:
                    self._terminate(sibling, SHUTDOWN)
            # As in OTP, temporary siblings are stopped and forgotten, not restarted.
            for gone in [c for c in group if c.spec.restart == "temporary"]:
                self._children.remove(gone)
            group = [c for c in group if c.spec.restart != "temporary"]
        self._schedule_restart(child, group)

    def _count_restart(self) -> bool:
        """Record one restart; False (after giving up) if that exceeds the intensity."""
        now = self._scheduler.now()
        policy = self.policy
        times = self._restart_times
        while times and now - times[0] > policy.period:  # (amortised O(1): a busy pool restarts often)
            times.popleft()
        times.append(now)
        if len(self._restart_times) <= policy.max_restarts:
            return True
        self.events.publish(SupervisorGaveUp(self.name, len(self._restart_times), policy.period, now))
        logger.warning(
            "supervisor %s: more than %d restarts within %gs; stopping", self.name, policy.max_restarts, policy.period
        )
        self.stop(ExitReason("shutdown", "reached max restart intensity"))
        return False

    def _schedule_restart(self, failed: _Child, group: list[_Child]) -> None:
        """Restart ``group`` (in start order) after the failed child's backoff delay."""
        delay = failed.backoff.next_delay() if failed.backoff is not None else 0.0
        now = self._scheduler.now()
        for member in group:
            self._cancel_restart(member)
            member.restarts += 1
            self.events.publish(ChildRestarted(self.name, member.spec.id, member.restarts, delay, now))
        if delay <= 0:
            self._restart(failed, group)
            return
        handle = self._scheduler.call_later(delay, lambda: self._restart(failed, group))
        for member in group:
            member.pending_restart = handle

    def _restart(self, failed: _Child, group: list[_Child]) -> None:
        for member in group:
            member.pending_restart = None
        if not self.alive:
            return
        started: list[_Child] = []
        for member in group:
            if member not in self._children:
                continue
            try:
                self._start(member)
            except Exception as exc:
                # A failed restart counts like another exit: the group goes down and tries again.
                logger.warning("supervisor %s: restarting %s failed: %s", self.name, member.spec.id, exc)
                self.events.publish(
                    ChildExited(self.name, member.spec.id, ExitReason("start_failed", str(exc)), self._scheduler.now())
                )
                for done in reversed(started):
                    self._terminate(done, SHUTDOWN)
                if self._count_restart():
                    self._schedule_restart(member, [m for m in group if m in self._children])
                return
            started.append(member)
        if failed.backoff is not None:
            failed.backoff.record_restart()

    # --- stopping ----------------------------------------------------------------------

    def _cancel_restart(self, child: _Child) -> None:
        if child.pending_restart is not None:
            child.pending_restart.cancel()
            child.pending_restart = None

    def _terminate(self, child: _Child, reason: ExitReason) -> None:
        """Stop a child on purpose: graceful, then a hard kill after its grace period."""
        self._cancel_restart(child)
        process, child.process = child.process, None
        if process is None:
            return
        self.events.publish(ChildStopped(self.name, child.spec.id, reason, self._scheduler.now()))
        grace = child.spec.shutdown
        if grace == "brutal_kill":
            process.kill()
            return
        process.stop(reason)
        if getattr(process, "exit_reason", None) is None:  # still finishing its work
            self._scheduler.call_later(grace, process.kill)

    def _exit(self, reason: ExitReason) -> None:
        self._state.alive = False
        self.exit_reason = reason
        callbacks, self._state.exit_callbacks = self._state.exit_callbacks, []
        for callback in callbacks:
            try:
                callback(self, reason)
            except Exception:
                logger.exception("exit callback of supervisor %s failed", self.name)


class DynamicSupervisor(Supervisor):
    """A one-for-one supervisor whose children share one spec and are added at run time."""

    def __init__(
        self,
        name: str,
        spec: ChildSpec,
        policy: SupervisorPolicy | None = None,
        *,
        scheduler: Scheduler,
        events: EventBus | None = None,
    ) -> None:
        if policy is not None and policy.strategy != "one_for_one":
            raise InvalidConfig("a dynamic supervisor's strategy is one_for_one")
        super().__init__(name, [], policy, scheduler=scheduler, events=events)
        self._template = spec
        self._ids = itertools.count(1)
        self._forget_finished = True

    def start_child(self) -> tuple[str, Supervisable]:
        """Start one more child from the shared spec; returns its id and process."""
        if not self.alive:
            raise WasmhiveError(f"supervisor {self.name!r} is not running")
        spec = ChildSpec(
            id=f"{self._template.id}-{next(self._ids)}",
            start=self._template.start,
            restart=self._template.restart,
            shutdown=self._template.shutdown,
            backoff=self._template.backoff,
        )
        child = self._new_child(spec)
        self._children.append(child)
        try:
            self._start(child)
        except BaseException:
            self._children.remove(child)
            raise
        assert child.process is not None
        return spec.id, child.process

    def terminate_child(self, child_id: str, reason: ExitReason = SHUTDOWN) -> bool:
        """Stop one child and forget it (no restart); False if there is no such child."""
        for child in self._children:
            if child.spec.id == child_id:
                self._children.remove(child)
                self._terminate(child, reason)
                return True
        return False
