"""The pool supervisor: many actors of one function, routed, restarted and scaled.

The pool's actors are the children of a :class:`~.tree.DynamicSupervisor`
(permanent, with restart backoff), so a crashed actor comes back like any
supervised child.  On top of that the pool

* **routes** each call to the least-loaded actor (an idle one with an empty
  mailbox first), or with a ``key`` to the actor that served that key before,
  for as long as it lives (when it dies, the key moves; the caller is not
  failed for that);
* **stashes** calls that find no live actor (all restarting, say) in a
  bounded wait, instead of failing them, up to ``stash_wait`` seconds;
* **scales** between ``min_size`` and ``max_size`` by the rules of
  :class:`~.autoscaler.Autoscaler`, starting from zero on the next call
  (cold start) when scaled to zero, and removing only idle actors, so
  scale-down never interrupts a call.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import anyio

from wasmhive.actors.actor import Actor
from wasmhive.actors.errors import ActorCrashed, Overloaded
from wasmhive.actors.messages import ActorState, ExitReason

from .autoscaler import Autoscaler, PoolPolicy
from .events import EventBus
from .protocol import Cancel, ExitCallback, Scheduler
from .tree import ChildSpec, DynamicSupervisor, SupervisorPolicy

__all__ = ["Pool"]

logger = logging.getLogger("wasmhive.supervisors")

SCALED_DOWN = ExitReason("normal", "scaled down")

#: Session-affinity keys remembered per pool; the oldest are forgotten beyond this.
MAX_AFFINITY_KEYS = 100_000


class Pool:
    """Between ``policy.min_size`` and ``policy.max_size`` actors of one function."""

    def __init__(
        self,
        name: str,
        spawn: Callable[[], Actor],
        policy: PoolPolicy,
        *,
        scheduler: Scheduler,
        events: EventBus,
        shutdown_grace: float = 5.0,
    ) -> None:
        self.name = name
        self.policy = policy
        #: Calls in progress: running, queued in a mailbox, or waiting in the stash.
        self.in_flight = 0
        #: Calls started so far (the autoscaler sees a short call between two samples by it).
        self.arrivals = 0
        self._arrivals_seen = 0
        self.scale_ups = 0
        self.scale_downs = 0
        self.cold_starts = 0
        self.crashes = 0
        self.stash_rejections = 0
        self._spawn = spawn
        self._scheduler = scheduler
        self._actors: dict[Actor, None] = {}  # live actors, oldest first
        self._affinity: dict[str, Actor] = {}
        self._keys_of: dict[int, set[str]] = {}
        self._stashed = 0
        self._start_failure: ExitReason | None = None
        self._available: anyio.Event | None = None
        self._autoscaler = Autoscaler(policy)
        self._next_decision = 0.0
        self._timer: Cancel | None = None
        self._exit_callbacks: list[ExitCallback] = []
        self._supervisor = DynamicSupervisor(
            name,
            ChildSpec(id=name, start=self._start_actor, shutdown=shutdown_grace, backoff=policy.backoff),
            SupervisorPolicy(max_restarts=policy.max_restarts, period=policy.period),
            scheduler=scheduler,
            events=events,
        )
        self._supervisor.on_exit(self._supervisor_ended)

    # --- life cycle ---------------------------------------------------------------------

    def start(self) -> Pool:
        """Start ``min_size`` actors and the autoscaler's sampling."""
        self._supervisor.start()
        try:
            for _ in range(self.policy.min_size):
                self._supervisor.start_child()
        except BaseException:
            self._supervisor.kill()
            raise
        # Fixed pools sample too (utilization in stats) but never decide.
        self._next_decision = self._scheduler.now() + self.policy.interval
        self._timer = self._scheduler.call_later(self.policy.sample_interval, self._sample)
        return self

    @property
    def alive(self) -> bool:
        return self._supervisor.alive

    def on_exit(self, callback: ExitCallback) -> None:
        self._exit_callbacks.append(callback)

    def stop(self, reason: ExitReason) -> None:
        """Stop every actor (work in flight finishes within the grace period)."""
        self._stop_timer()
        self._supervisor.stop(reason)

    def kill(self) -> None:
        self._stop_timer()
        self._supervisor.kill()

    @property
    def actors(self) -> list[Actor]:
        """The live actors, oldest first."""
        return list(self._actors)

    @property
    def size(self) -> int:
        """Actors the pool keeps: live ones plus those waiting to restart."""
        return self._supervisor.size

    @property
    def restarts(self) -> int:
        return self._supervisor.restarts

    @property
    def panicking(self) -> bool:
        return self._autoscaler.panicking

    def utilization(self) -> float:
        """In-flight calls over capacity, averaged over the stable window."""
        return self._autoscaler.utilization(self._scheduler.now(), max(self.size, 1))

    # --- routing ------------------------------------------------------------------------

    def pick(self, key: str | None = None) -> Actor | None:
        """The actor for the next call, or None if no actor is live right now."""
        if key is not None:
            actor = self._affinity.get(key)
            if actor is not None and actor.alive:
                return actor
        best: Actor | None = None
        best_load = 0
        for actor in self._actors:
            state = actor.state
            if state is ActorState.IDLE and not actor.queued:
                best = actor
                break
            if actor.alive:
                # Messages ahead of this one: the queue, plus the call in progress.
                load = actor.queued + (state is ActorState.BUSY)
                if best is None or load < best_load:
                    best, best_load = actor, load
        if key is not None and best is not None:
            if len(self._affinity) >= MAX_AFFINITY_KEYS:  # forget the oldest key
                oldest = next(iter(self._affinity))
                self._keys_of.get(self._affinity.pop(oldest).ref.id, set()).discard(oldest)
            self._affinity[key] = best
            self._keys_of.setdefault(best.ref.id, set()).add(key)
        return best

    async def acquire(self, key: str | None = None) -> Actor:
        """The actor for the next call: :meth:`pick`, a cold start, or a bounded wait."""
        actor = self.pick(key)
        if actor is not None:
            return actor
        if not self._supervisor.alive:
            raise ActorCrashed(
                f"the pool of {self.name!r} gave up after too many restarts", function=self.name, reason="shutdown"
            )
        if not self._actors and self._start_failure is not None:
            # Every actor is waiting to restart because the guest cannot start: say so now.
            raise ActorCrashed(
                f"no actor of {self.name!r} can start: {self._start_failure.message}",
                function=self.name,
                reason="start_failed",
            )
        if self.size == 0:  # scaled to zero: start one now
            self.cold_starts += 1
            self.scale_to(1)
            actor = self.pick(key)
            if actor is not None:
                return actor
        return await self._wait_for_actor(key)

    async def _wait_for_actor(self, key: str | None) -> Actor:
        policy = self.policy
        if self._stashed >= policy.stash_size:
            self.stash_rejections += 1
            raise Overloaded(
                f"no actor of {self.name!r} is available and {self._stashed} calls already wait for one",
                function=self.name,
            )
        self._stashed += 1
        try:
            with anyio.move_on_after(policy.stash_wait):
                while True:
                    if self._available is None:
                        self._available = anyio.Event()
                    await self._available.wait()
                    actor = self.pick(key)
                    if actor is not None:
                        return actor
                    if not self._supervisor.alive:
                        break
        finally:
            self._stashed -= 1
        self.stash_rejections += 1
        raise Overloaded(
            f"no actor of {self.name!r} became available within stash_wait={policy.stash_wait:g}s",
            function=self.name,
        )

    # --- children -----------------------------------------------------------------------

    def _start_actor(self) -> Actor:
        try:
            actor = self._spawn()
        except Exception as exc:  # an inline actor that cannot start (thread actors end instead)
            self._start_failure = ExitReason("start_failed", f"{type(exc).__name__}: {exc}")
            raise
        self._actors[actor] = None
        actor.on_exit(self._actor_ended)
        available, self._available = self._available, None
        if available is not None:
            available.set()
        return actor

    def _actor_ended(self, actor: Actor, reason: ExitReason) -> None:
        self._actors.pop(actor, None)
        # Remember why the guest could not start, until an actor that did start ends.
        self._start_failure = reason if reason.kind == "start_failed" else None
        if reason.abnormal:
            self.crashes += 1
        for key in self._keys_of.pop(actor.ref.id, ()):
            if self._affinity.get(key) is actor:
                del self._affinity[key]

    def _supervisor_ended(self, supervisor: object, reason: ExitReason) -> None:
        self._stop_timer()
        available, self._available = self._available, None
        if available is not None:
            available.set()  # stashed callers find out the pool is gone
        for callback in list(self._exit_callbacks):
            callback(self, reason)

    # --- scaling ------------------------------------------------------------------------

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _sample(self) -> None:
        self._timer = None
        if not self._supervisor.alive:
            return
        now = self._scheduler.now()
        autoscaler = self._autoscaler
        arrived = self.arrivals != self._arrivals_seen
        self._arrivals_seen = self.arrivals
        autoscaler.record(now, self.in_flight, busy=arrived)
        self._timer = self._scheduler.call_later(self.policy.sample_interval, self._sample)
        if self.policy.min_size == self.policy.max_size:
            return
        size = self.size
        burst = autoscaler.panic_check(now, size)
        if burst is not None:
            self.scale_to(burst)
        elif now >= self._next_decision:
            self._next_decision = now + self.policy.interval
            self.scale_to(autoscaler.decide(now, size))

    def scale_to(self, wanted: int) -> None:
        """Grow or shrink toward ``wanted`` actors now (only idle actors are removed)."""
        size = self.size
        if wanted > size:
            for _ in range(wanted - size):
                try:
                    self._supervisor.start_child()
                except Exception as exc:
                    logger.warning("pool %s: cannot start another actor: %s", self.name, exc)
                    break
                self.scale_ups += 1
        elif wanted < size:
            # Only idle actors with empty mailboxes go, newest first: never one in a call.
            removable = [a for a in reversed(self._actors) if a.state is ActorState.IDLE and not a.queued]
            for actor in removable[: size - wanted]:
                child_id = self._child_id_of(actor)
                if child_id is not None and self._supervisor.terminate_child(child_id, SCALED_DOWN):
                    self.scale_downs += 1

    def _child_id_of(self, actor: Actor) -> str | None:
        for info in self._supervisor.which_children():
            if self._supervisor.child(info.id) is actor:
                return info.id
        return None
