"""Fault injectors of the embedded target, each through the mechanism a real failure uses.

* ``timeout``: the call's epoch deadline is made to expire at its first check
  (``WasmInstance.expire_next_call``): the real timeout path ends it with
  ``CallTimeout`` and the actor is replaced.
* ``oom``: the store's memory limit is lowered to the memory's current size
  (``WasmInstance.limit_memory``): the guest's next ``memory.grow`` is refused,
  and a guest that traps on that ends with ``OutOfMemory``.  A guest that does
  not grow memory is not affected (the record says the fault was armed).
* ``fuel``: the next call starts with no fuel (``WasmInstance.drain_fuel``):
  ``FuelExhausted`` at its first instruction.  Needs ``runtime.fuel = true``.
* ``kill``: ``Actor.kill()``: between calls (an idle actor ends at once; its
  queued messages fail with ``ActorCrashed``), or during one (a busy actor,
  interrupted at its next deadline check with ``ActorKilled``; if none is
  busy, the next call of an actor is killed as it enters the guest).
* ``host``: a share (``probability``, default all) of the function's host
  calls to remote services (``ops``: by default key-value, ``secret.get`` and
  ``http.fetch``) in the window is hit, through the runtime's host-call hook:
  each sleeps ``latency`` with jitter, then, if the fault has an ``error``,
  fails: an error result the guest sees (``error``) or an exception in the
  host (``crash``: ``HostError``, the actor is replaced).
* ``flood``: one actor gets a burst of extra messages (its mailbox size by
  default), so real callers routed to it queue behind them or get
  ``MailboxFull``.

Per-request faults (``probability``) and armed rate faults act through the
actor's call hook (:class:`GuestProbe`), on the thread that runs the guest,
just before the call enters it: the Store is touched only by its own thread.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable

from wasmhive.actors.actor import Actor
from wasmhive.actors.host import HostCallError
from wasmhive.actors.instance import WasmInstance

from .history import FaultRecord, History
from .scenario import REMOTE_OPS, FaultSpec
from .schedule import FaultSchedule

__all__ = ["INSTANCE_ACTIONS", "REMOTE_OPS", "GuestProbe", "HostFaults", "InstanceAction"]

logger = logging.getLogger("wasmhive.stress")

#: Something done to an instance on its own thread, just before a call enters the guest.
InstanceAction = Callable[[WasmInstance], None]

#: The instance-level fault of each kind that has one.
INSTANCE_ACTIONS: dict[str, InstanceAction] = {
    "timeout": WasmInstance.expire_next_call,
    "oom": WasmInstance.limit_memory,
    "fuel": WasmInstance.drain_fuel,
    "kill": WasmInstance.kill_next_call,
}


def actor_name(actor: Actor) -> str:
    """``<function>-<id>``, as supervision events name children."""
    return f"{actor.ref.function}-{actor.ref.id}"


class GuestProbe:
    """The call hook the embedded target installs on every actor of the scenario's functions.

    It records every execution at the guest boundary, applies the request's
    scheduled faults on its first execution, and runs actions armed for the
    actor's next call.
    """

    def __init__(self, history: History, schedule: FaultSchedule) -> None:
        self._history = history
        self._schedule = schedule
        self._armed: dict[object, list[tuple[int, InstanceAction]]] = {}
        self._lock = threading.Lock()
        self._faulted: set[int] = set()

    def arm(self, actor: Actor, fault: int, action: InstanceAction) -> None:
        """Run ``action`` on ``actor``'s instance just before its next call (from the loop)."""
        with self._lock:
            self._armed.setdefault(actor.ref, []).append((fault, action))

    def __call__(self, actor: Actor, instance: WasmInstance, payload: bytes) -> None:
        history = self._history
        name = actor_name(actor)
        request = history.executed(payload, name)
        try:
            if self._armed:
                with self._lock:
                    armed = self._armed.pop(actor.ref, None)
                for fault, action in armed or ():
                    action(instance)
                    self._record(fault, actor, f"fired on {name} as a call entered the guest")
            if request is None:
                return
            faults = history.requests[request].faults
            if faults and request not in self._faulted:  # a retry of the request runs clean
                self._faulted.add(request)
                for fault in faults:
                    INSTANCE_ACTIONS[self._schedule.scenario.faults[fault].kind](instance)
                    self._record(fault, actor, f"request {request} on {name}")
        except Exception:  # never fail the call from here
            logger.exception("stress fault injection failed on %s", name)

    def _record(self, fault: int, actor: Actor, note: str) -> None:
        kind = self._schedule.scenario.faults[fault].kind
        self._history.faults.append(FaultRecord(self._history.now(), fault, kind, actor.ref.function, True, note))


class HostFaults:
    """The scenario's ``host`` faults, as the runtime's host-call hook (``Runtime.set_host_call_hook``).

    Called as ``(op, function)`` on the guest's thread before every host call.
    Each host fault counts the calls it covers (its function, its ``ops``, its
    window) and decides per call, from the seed, whether it hits it
    (:meth:`FaultSchedule.host_call_hit`: ``probability`` of them, or all).  A
    hit call first sleeps ``latency`` +/- ``jitter`` on the calling thread (the
    actor's, as a slow remote service would block it), then fails if the fault
    has an ``error``.  Calls not hit are untouched.  Faults apply in the
    scenario's order; a call that one fails ends there, so the later ones do
    not see (or count) it.
    """

    def __init__(self) -> None:
        self._schedule: FaultSchedule | None = None
        self._history: History | None = None
        self._faults: list[tuple[int, FaultSpec, frozenset[str]]] = []
        self._counters: dict[int, itertools.count[int]] = {}
        #: Per host fault: [calls delayed (hit calls that slept), calls failed (hit calls that failed)].
        self.counts: dict[int, list[int]] = {}
        self._lock = threading.Lock()  # actors' threads call concurrently

    def attach(self, schedule: FaultSchedule, history: History) -> None:
        """Start applying the schedule's host faults."""
        self._schedule, self._history = schedule, history
        self._faults = [
            (i, f, frozenset(f.ops) if f.ops is not None else REMOTE_OPS)
            for i, f in enumerate(schedule.scenario.faults)
            if f.kind == "host"
        ]
        self._counters = {i: itertools.count() for i, _, _ in self._faults}
        self.counts = {i: [0, 0] for i, _, _ in self._faults}

    def detach(self) -> None:
        """Stop applying faults (host calls run normally again)."""
        self._faults = []

    def __call__(self, op: str, function: str) -> None:
        schedule, history = self._schedule, self._history
        if not self._faults or schedule is None or history is None:
            return
        at = history.now()
        for i, spec, ops in self._faults:
            if op not in ops or (spec.function is not None and spec.function != function):
                continue
            if not schedule.active(spec, at):
                continue
            with self._lock:
                n = next(self._counters[i])
                hit = schedule.host_call_hit(i, n)
                if hit and spec.latency > 0:
                    self.counts[i][0] += 1
                if hit and spec.error is not None:
                    self.counts[i][1] += 1
            if not hit:
                continue
            if spec.latency > 0:
                time.sleep(schedule.latency(i, n))
            if spec.error is not None:
                if spec.error == "crash":
                    raise ConnectionError(f"stress: the service behind {op} is unreachable (injected)")
                raise HostCallError("unavailable", f"stress: {op} is unavailable (injected)")
