"""The seeded fault schedule: a pure function of a scenario and a seed.

Two kinds of decisions are made, both reproducible from the seed alone:

* **timed events** for faults given a ``rate``: Poisson arrivals within each
  fault's window (seconds after the warm-up), each with the function it hits
  and a number in [0, 1) that picks the actor;
* **per-request decisions** for faults given a ``probability``: whether
  request number ``seq`` is hit is a hash of (seed, fault, seq), so it does
  not depend on timing or on the order requests run in;
* **per-host-call decisions** for ``host`` faults: whether key-value host
  call number ``n`` (counted per fault, in the order calls reach it) is hit,
  and how long it sleeps, are hashes of (seed, fault, n).

The same seed gives the same schedule (:meth:`FaultSchedule.fingerprint`
compares two); a different seed gives a different one.
"""

from __future__ import annotations

import hashlib
import random
import zlib

import msgspec

from .scenario import WHOLE_TARGET_KINDS, FaultSpec, Scenario

__all__ = ["FaultEvent", "FaultSchedule", "build_schedule", "hash_prefix", "unit", "unit_after"]

_MASK = (1 << 64) - 1


def _splitmix(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def unit(*keys: int) -> float:
    """A number in [0, 1) that depends only on ``keys`` (a stateless seeded hash)."""
    return unit_after(0, *keys)


def hash_prefix(*keys: int) -> int:
    """The hash state after ``keys``: ``unit_after(hash_prefix(*a), *b) == unit(*a, *b)``."""
    h = 0
    for key in keys:
        h = _splitmix(h ^ (key & _MASK))
    return h


def unit_after(prefix: int, *keys: int) -> float:
    """:func:`unit` of the keys behind ``prefix`` followed by ``keys`` (a prefix is hashed once)."""
    h = prefix
    for key in keys:
        h = _splitmix(h ^ (key & _MASK))
    return h / 2.0**64


def _text_key(text: str) -> int:
    return zlib.crc32(text.encode())


class FaultEvent(msgspec.Struct, frozen=True):
    """A timed fault: at ``at`` seconds after the warm-up, fault ``fault`` (its index) hits ``function``."""

    at: float
    fault: int
    kind: str
    function: str
    #: Picks the actor (or host call) the fault hits: index = floor(pick * count).
    pick: float


class FaultSchedule:
    """Every fault decision of one run.  Build it with :func:`build_schedule`."""

    def __init__(self, scenario: Scenario, seed: int, events: list[FaultEvent]) -> None:
        self.scenario = scenario
        self.seed = seed
        #: Timed events (rate faults), in time order.
        self.events = events
        # (index, fault, hash of (seed, index)): each request then hashes only its own number.
        self._per_request = [
            (i, f, hash_prefix(seed, i))
            for i, f in enumerate(scenario.faults)
            if f.probability is not None and f.kind != "host"
        ]

    def active(self, fault: FaultSpec, at: float) -> bool:
        """Whether ``fault`` is on at ``at`` seconds after the warm-up (never during the warm-up)."""
        if at < 0:
            return False
        if fault.window is None:
            return at <= self.scenario.duration
        return fault.window[0] <= at < fault.window[1]

    def request_faults(self, seq: int, function: str, at: float) -> tuple[int, ...]:
        """The probability faults (their indexes) that hit request ``seq`` to ``function`` sent at ``at``."""
        hits: list[int] = []
        for i, fault, prefix in self._per_request:
            if fault.function is not None and fault.function != function:
                continue
            assert fault.probability is not None
            if self.active(fault, at) and unit_after(prefix, seq, 1) < fault.probability:  # = unit(seed, i, seq, 1)
                hits.append(i)
        return tuple(hits)

    def host_call_hit(self, fault: int, n: int) -> bool:
        """Whether host fault ``fault`` hits host call number ``n`` (counted per fault).

        ``probability`` is the share of calls hit (toxiproxy's toxicity); without
        one, every call is hit.  A hit call sleeps :meth:`latency`, then fails
        if the fault has an ``error``.
        """
        probability = self.scenario.faults[fault].probability
        return probability is None or unit(self.seed, fault, n, 2) < probability

    def latency(self, fault: int, n: int) -> float:
        """The delay number ``n`` (a host call, a chunk of a connection) gets from fault ``fault``."""
        spec = self.scenario.faults[fault]
        return max(0.0, spec.latency + spec.jitter * (2.0 * unit(self.seed, fault, n, 3) - 1.0))

    def fingerprint(self, requests: int = 1000) -> str:
        """A digest of the timed events and the decisions for the first ``requests`` requests."""
        digest = hashlib.sha256(msgspec.msgpack.encode(self.events))
        names = [f.name for f in self.scenario.functions]
        for seq in range(requests):
            function = names[seq % len(names)]
            at = self.scenario.duration * seq / max(1, requests)
            digest.update(repr(self.request_faults(seq, function, at)).encode())
        return digest.hexdigest()


def build_schedule(scenario: Scenario, seed: int | None = None) -> FaultSchedule:
    """The fault schedule of ``scenario`` under ``seed`` (default: the scenario's own seed)."""
    seed = scenario.seed if seed is None else seed
    names = [f.name for f in scenario.functions]
    events: list[FaultEvent] = []
    for index, fault in enumerate(scenario.faults):
        if fault.rate is None:
            continue
        start, end = fault.window if fault.window is not None else (0.0, scenario.duration)
        rng = random.Random(_splitmix(_splitmix(seed & _MASK) ^ index) ^ _text_key(fault.kind))
        at = start
        while True:
            at += rng.expovariate(fault.rate)
            if at >= end:
                break
            function = fault.function if fault.function is not None else names[int(rng.random() * len(names))]
            if fault.kind in WHOLE_TARGET_KINDS:
                function = "*"  # (drawn anyway: the same draws for every kind)
            events.append(FaultEvent(round(at, 6), index, fault.kind, function, rng.random()))
    events.sort(key=lambda e: (e.at, e.fault))
    return FaultSchedule(scenario, seed, events)
