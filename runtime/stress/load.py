"""The load: unique payloads, open-loop (Poisson) and closed-loop drivers.

Open loop: arrival times are drawn in advance from a seeded Poisson process
at ``rate`` per second; each request is sent at its arrival time whatever
the others are doing, and its latency counts from that *intended* time.  A
harness that falls behind sends late but still measures from the intended
time, so slowness is never hidden (no coordinated omission).

Closed loop: ``concurrency`` callers, each sending its next request when the
previous one is answered; intended time = send time.

The drivers only decide *when*; ``fire(seq, intended)`` (open) or
``send(seq, intended)`` (closed) do the sending.  Times are seconds relative
to the end of the warm-up, so warm-up requests have negative times.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel

from .scenario import PayloadSpec, Scenario
from .schedule import unit

__all__ = ["PayloadFactory", "arrivals", "choose_function", "closed_loop", "open_loop", "payload_factories"]

#: Sequence numbers of payloads that are not requests (mailbox floods) start here.
FOREIGN_BASE = 1 << 40


class PayloadFactory:
    """Makes payloads that all differ: each embeds its sequence number."""

    def __init__(self, spec: PayloadSpec, seed: int) -> None:
        self.spec = spec
        self._rng = random.Random(seed)
        self._filler = bytes(self._rng.getrandbits(8) for _ in range(max(0, spec.size)))
        self._letters = "".join(self._rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(max(0, spec.size)))

    def make(self, seq: int) -> bytes:
        """The payload of request ``seq``."""
        spec = self.spec
        if spec.kind == "template":
            assert spec.template is not None
            return spec.template.replace("{seq}", str(seq)).encode()
        if spec.kind == "json":
            head = f'{{"seq": {seq}, "pad": "'
            pad = max(0, spec.size - len(head) - 2)
            return (head + self._letters[:pad] + '"}').encode()
        prefix = b"wh-stress %d " % seq
        return prefix + self._filler[: max(0, spec.size - len(prefix))]


def payload_factories(scenario: Scenario, seed: int) -> dict[str, PayloadFactory]:
    """One payload factory per function (its own payload spec, else ``load.payload``)."""
    return {
        fn.name: PayloadFactory(fn.payload or scenario.load.payload, seed ^ i)
        for i, fn in enumerate(scenario.functions)
    }


def choose_function(scenario: Scenario, seed: int, seq: int) -> str:
    """The function request ``seq`` goes to (weighted, seeded, independent of timing)."""
    functions = scenario.functions
    if len(functions) == 1:
        return functions[0].name
    total = sum(f.weight for f in functions)
    x = unit(seed, seq, 4) * total
    for fn in functions:
        x -= fn.weight
        if x < 0:
            return fn.name
    return functions[-1].name


def arrivals(rate: float, start: float, end: float, seed: int) -> list[float]:
    """Poisson arrival times in ``[start, end)`` at ``rate`` per second (seeded)."""
    rng = random.Random(seed * 7919 + 17)
    out: list[float] = []
    t = start
    while True:
        t += rng.expovariate(rate)
        if t >= end:
            return out
        out.append(t)


async def open_loop(
    times: list[float],
    now: Callable[[], float],
    fire: Callable[[int, float], None],
) -> None:
    """Call ``fire(seq, intended)`` at each time (``now()`` is on the same clock); never waits for answers."""
    behind = 0
    for seq, intended in enumerate(times):
        delay = intended - now()
        if delay > 0:
            await anyio.sleep(delay)
            behind = 0
        else:
            behind += 1
            if behind % 64 == 0:  # behind schedule: still let the requests in flight run
                await anyio.lowlevel.checkpoint()
        fire(seq, intended)


async def closed_loop(
    concurrency: int,
    end: float,
    now: Callable[[], float],
    send: Callable[[int, float], Awaitable[None]],
) -> None:
    """``concurrency`` callers, each sending its next request when the last one is answered, until ``end``."""
    counter = iter(range(1 << 62))

    async def caller() -> None:
        while (t := now()) < end:
            await send(next(counter), t)
            # A call may fail without ever yielding (a full mailbox under overflow="reject"):
            # yield anyway, or these callers would starve the loop and everything on it.
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(caller)


def perf_clock(t0: float) -> Callable[[], float]:
    """Seconds since ``t0`` on ``time.perf_counter()`` (the history's clock)."""
    return lambda: time.perf_counter() - t0
