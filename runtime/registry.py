"""Actor addresses: from an :class:`ActorRef` to the live actor, and why dead ones ended."""

from __future__ import annotations

import itertools
from collections import OrderedDict

from wasmhive.actors.actor import Actor
from wasmhive.actors.messages import ActorRef, ExitReason

__all__ = ["ActorRegistry"]


class ActorRegistry:
    """Live actors by id, plus the exit reasons of the most recently ended ones."""

    def __init__(self, remember_dead: int = 10_000) -> None:
        self._ids = itertools.count(1)
        self._live: dict[int, Actor] = {}
        self._dead: OrderedDict[int, ExitReason] = OrderedDict()
        self._remember_dead = remember_dead

    def new_ref(self, function: str) -> ActorRef:
        return ActorRef(next(self._ids), function)

    def add(self, actor: Actor) -> None:
        self._live[actor.ref.id] = actor

    def get(self, ref: ActorRef) -> Actor | None:
        actor = self._live.get(ref.id)
        return actor if actor is not None and actor.ref == ref else None

    def ended(self, actor: Actor, reason: ExitReason) -> None:
        self._live.pop(actor.ref.id, None)
        self._dead[actor.ref.id] = reason
        while len(self._dead) > self._remember_dead:
            self._dead.popitem(last=False)

    def reason_of(self, ref: ActorRef) -> ExitReason:
        """Why a no-longer-live actor ended (``noproc`` if unknown or forgotten)."""
        return self._dead.get(ref.id) or ExitReason("noproc", f"no actor {ref.id} of {ref.function!r}")

    def __len__(self) -> int:
        return len(self._live)

    def live(self) -> list[Actor]:
        return list(self._live.values())
