"""The pool's scaling decisions, as pure arithmetic over concurrency samples.

Utilization is **in-flight calls over capacity**: the number of calls a
function has in progress (running, queued in mailboxes, or waiting for an
actor), averaged over a window, divided by the number of actors (each actor
handles one call at a time, so its capacity is 1).  We chose it over busy
time because it keeps counting past 100%: a backlog of 30 calls on 4 actors
reads 750%, which says how many actors are needed, while busy time would
stop at 100% and say only "more".  It is also what Knative scales on.

The rules, after Knative's autoscaler:

* a **stable window** (``stable_window``) average drives normal decisions,
  evaluated every ``interval``; above ``scale_up_threshold`` the pool grows
  to bring utilization back under it, below ``scale_down_threshold`` it
  shrinks the same way;
* a short **panic window** (``panic_window``) catches bursts: when its
  average reaches ``panic_threshold`` (2.0 = 200%) of capacity the pool
  grows at once, and it does not shrink again until a whole stable window
  has passed without panic;
* **rate caps**: one decision grows the pool by at most
  ``max_scale_up_rate``\\ x and shrinks it by at most ``max_scale_down_rate``\\ x;
* **no flapping**: a scale-down uses the largest size wanted during the last
  ``scale_down_delay`` seconds;
* **scale to zero** (``min_size=0``): after ``scale_to_zero_grace`` seconds
  without a single call in flight.
"""

from __future__ import annotations

import math
from collections import deque

import msgspec

from wasmhive.actors.errors import InvalidConfig

from .backoff import BackoffPolicy

__all__ = ["Autoscaler", "PoolPolicy"]


class PoolPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Size, scaling and restart settings of a function's actor pool."""

    min_size: int = 2
    max_size: int = 16
    scale_up_threshold: float = 0.8
    scale_down_threshold: float = 0.3
    #: Seconds between scaling decisions.
    interval: float = 10.0
    #: Seconds between concurrency samples (the panic check runs on every sample).
    sample_interval: float = 1.0
    stable_window: float = 60.0
    panic_window: float = 6.0
    panic_threshold: float = 2.0
    max_scale_up_rate: float = 10.0
    max_scale_down_rate: float = 2.0
    scale_down_delay: float = 30.0
    scale_to_zero_grace: float = 30.0
    #: Calls that may wait for an actor when none is available (restarting, or cold start at max).
    stash_size: int = 1000
    #: Longest such wait (seconds), then ``Overloaded``.
    stash_wait: float = 5.0
    #: Restart intensity of the pool's actors: more restarts than this within ``period`` make it give up.
    max_restarts: int = 100
    period: float = 10.0
    #: Backoff between restarts of one actor.
    backoff: BackoffPolicy = BackoffPolicy(min_backoff=0.01, max_backoff=1.0, random_factor=0.2)

    def __post_init__(self) -> None:
        if self.min_size < 0 or self.max_size < 1 or self.min_size > self.max_size:
            raise InvalidConfig(
                f"need 0 <= min_size <= max_size and max_size >= 1, got {self.min_size}..{self.max_size}"
            )
        if not 0 <= self.scale_down_threshold < self.scale_up_threshold:
            raise InvalidConfig("need 0 <= scale_down_threshold < scale_up_threshold")
        for name in ("interval", "sample_interval", "stable_window", "panic_window", "period"):
            if not getattr(self, name) > 0:
                raise InvalidConfig(f"{name} must be > 0, got {getattr(self, name)}")
        if self.panic_window > self.stable_window:
            raise InvalidConfig("panic_window must not be longer than stable_window")
        if self.max_scale_up_rate < 1 or self.max_scale_down_rate < 1:
            raise InvalidConfig("max_scale_up_rate and max_scale_down_rate must be >= 1")
        for name in ("scale_down_delay", "scale_to_zero_grace", "stash_wait"):
            if getattr(self, name) < 0:
                raise InvalidConfig(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.stash_size < 0 or self.max_restarts < 0:
            raise InvalidConfig("stash_size and max_restarts must be >= 0")

    @classmethod
    def fixed(cls, size: int) -> PoolPolicy:
        """A pool that never scales: exactly ``size`` actors."""
        return cls(min_size=size, max_size=size)


class Autoscaler:
    """Turns concurrency samples into a wanted pool size.  Time is passed in."""

    def __init__(self, policy: PoolPolicy) -> None:
        self.policy = policy
        self._samples: deque[tuple[float, float]] = deque()
        self._wanted: deque[tuple[float, int]] = deque()
        self._panic_until: float | None = None
        self._last_busy: float | None = None

    @property
    def panicking(self) -> bool:
        return self._panic_until is not None

    def record(self, now: float, concurrency: float, busy: bool = False) -> None:
        """One sample of calls in flight (``busy``: calls started since the last sample)."""
        self._samples.append((now, concurrency))
        if concurrency > 0 or busy or self._last_busy is None:
            self._last_busy = now
        horizon = now - self.policy.stable_window
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()

    def average(self, now: float, window: float) -> float:
        """Mean concurrency over the last ``window`` seconds (0 with no samples)."""
        values = [c for t, c in self._samples if t > now - window]
        return sum(values) / len(values) if values else 0.0

    def utilization(self, now: float, size: int) -> float:
        """Stable-window utilization for a pool of ``size`` (in-flight over capacity)."""
        average = self.average(now, self.policy.stable_window)
        return average / size if size else (math.inf if average else 0.0)

    def panic_check(self, now: float, size: int) -> int | None:
        """On every sample: a bigger size at once if a burst needs it, else None."""
        policy = self.policy
        burst = self.average(now, policy.panic_window)
        capacity = max(size, 1)
        if burst / capacity >= policy.panic_threshold:
            self._panic_until = now + policy.stable_window
            wanted = self._bounded(size, math.ceil(burst / policy.scale_up_threshold))
            return wanted if wanted > size else None
        if self._panic_until is not None and now >= self._panic_until:
            self._panic_until = None
        return None

    def decide(self, now: float, size: int) -> int:
        """The pool size wanted now, at an ``interval`` evaluation."""
        policy = self.policy
        if self._panic_until is not None and now >= self._panic_until:
            self._panic_until = None
        average = self.average(now, policy.stable_window)
        utilization = average / size if size else (math.inf if average else 0.0)
        wanted = size
        if utilization > policy.scale_up_threshold:
            wanted = max(size + 1, math.ceil(average / policy.scale_up_threshold))
        elif utilization < policy.scale_down_threshold:
            wanted = math.ceil(average / policy.scale_up_threshold)
        wanted = self._bounded(size, wanted)
        self._wanted.append((now, wanted))
        while self._wanted and self._wanted[0][0] < now - policy.scale_down_delay:
            self._wanted.popleft()
        if wanted < size:
            if self._panic_until is not None:
                return size  # never shrink while panicking
            wanted = min(size, max(w for _, w in self._wanted))  # the largest recent wish: no flapping
            if wanted == 0 and self._last_busy is not None and now - self._last_busy < policy.scale_to_zero_grace:
                wanted = 1
        return wanted

    def _bounded(self, size: int, wanted: int) -> int:
        policy = self.policy
        if wanted > size:
            wanted = min(wanted, max(size + 1, math.floor(size * policy.max_scale_up_rate)))
        elif wanted < size:
            # The last actor may go (scale to zero) whatever the rate cap says.
            lowest = 0 if wanted == 0 and size == 1 else math.ceil(size / policy.max_scale_down_rate)
            wanted = max(wanted, lowest)
        return max(policy.min_size, min(policy.max_size, wanted))
