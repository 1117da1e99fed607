"""What the harness drives: a :class:`Target` protocol.

The embedded target (:class:`~wasmhive.runtime.stress.embedded.EmbeddedTarget`)
runs the functions in a :class:`~wasmhive.runtime.Runtime` in this process.
Another target (an HTTP daemon) implements the same protocol in its own
module: calls over the network, its own fault kinds, its own state samples.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from .history import FunctionState, History
from .scenario import Scenario
from .schedule import FaultEvent, FaultSchedule

__all__ = ["FunctionState", "Injection", "Target"]


class Injection(msgspec.Struct, frozen=True):
    """What a timed fault did: ``applied`` False when it found nothing to hit."""

    applied: bool
    note: str


class Target(Protocol):
    """A system under test.

    The runner calls :meth:`open` once, then :meth:`call` for every request,
    :meth:`inject` for every timed fault event and :meth:`sample` periodically,
    all from the event loop, and :meth:`aclose` at the end.
    """

    #: A short name for reports (``embedded``, ``http://host:port``).
    name: str

    def supported_faults(self) -> frozenset[str]:
        """The fault kinds this target can inject (the runner refuses scenarios with others)."""
        ...

    async def open(self, scenario: Scenario, schedule: FaultSchedule, history: History) -> None:
        """Make the scenario's functions callable and start observing.

        A target that can see guest executions records them with
        :meth:`History.executed` and sets ``history.executions_observed``.
        Raises :class:`~wasmhive.runtime.stress.scenario.ScenarioError` for a
        scenario it cannot run.
        """
        ...

    async def call(self, function: str, payload: bytes) -> bytes:
        """One request: the reply, or the error the system answered with."""
        ...

    async def inject(self, event: FaultEvent) -> Injection:
        """Inject one timed fault now."""
        ...

    def sample(self) -> dict[str, FunctionState]:
        """Each function's state now."""
        ...

    async def aclose(self) -> None:
        """Stop injecting and release what :meth:`open` made."""
        ...
