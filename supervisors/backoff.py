"""Backoff delays: Akka-style restart backoff for supervisors and AWS-style jitter for retries.

Two separate tools share one exponential curve, ``min(cap, base * 2**n)``:

* :class:`RestartBackoff` (with its :class:`BackoffPolicy`) says how long a
  supervisor waits before restarting a child that keeps crashing.  It follows
  Akka's restart-with-backoff: ``min(max_backoff, min_backoff * 2**n) *
  (1 + random() * random_factor)``, where ``n`` counts consecutive restarts and
  drops back to 0 once the child has stayed up for a quiet period.
* :func:`retry_delay` is a pure function giving the wait before a call is
  retried, with the jitter variants of AWS's "Exponential Backoff and Jitter"
  (none, full, equal, decorrelated).

Randomness and time are injected (``rng``, ``clock`` / ``now``) so tests are
deterministic.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import Literal, get_args

import msgspec

from wasmhive.actors.errors import InvalidConfig

__all__ = ["JITTERS", "BackoffPolicy", "Jitter", "RestartBackoff", "retry_delay"]

#: How a retry delay is randomised; see :func:`retry_delay`.
Jitter = Literal["none", "full", "equal", "decorrelated"]

#: Every :data:`Jitter` value.
JITTERS: frozenset[str] = frozenset(get_args(Jitter))

_SHARED_RNG = random.Random()


def _exponential(base: float, cap: float, exponent: int) -> float:
    """``min(cap, base * 2**exponent)`` without overflowing for large exponents."""
    try:
        return min(cap, math.ldexp(base, exponent))
    except OverflowError:
        return cap


class BackoffPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How long to wait before restarting a crashed child (Akka restart-with-backoff).

    The delay before the restart that follows ``n`` consecutive restarts is
    ``min(max_backoff, min_backoff * 2**n) * (1 + random() * random_factor)``,
    so it lies in ``[min_backoff, max_backoff * (1 + random_factor)]``: as in
    Akka, the random part may take it past ``max_backoff``.

    ``reset_after`` is the quiet period: once the child has run that long
    since its last restart without failing, ``n`` goes back to 0.  ``None``
    means ``max_backoff``: a child counts as healthy only after it outlives the
    longest delay the policy imposes.  (Akka's default is ``min_backoff``,
    which lets a child that crashes shortly after each start restart almost
    at once forever; we chose the safer default.)

    Invalid values raise :class:`~wasmhive.actors.errors.InvalidConfig` naming the field.
    """

    #: Delay before the first restart (seconds), > 0.
    min_backoff: float = 0.1
    #: Largest delay before the random part is applied (seconds), >= ``min_backoff``.
    max_backoff: float = 30.0
    #: Up to this fraction is added at random to each delay, in ``[0, 1]`` (as in Akka).
    random_factor: float = 0.2
    #: Quiet period (seconds) after which the restart count resets; None means ``max_backoff``.
    reset_after: float | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.min_backoff) and self.min_backoff > 0):
            raise InvalidConfig(f"min_backoff must be a finite number > 0, got {self.min_backoff}")
        if not (math.isfinite(self.max_backoff) and self.max_backoff >= self.min_backoff):
            raise InvalidConfig(
                f"max_backoff must be finite and >= min_backoff ({self.min_backoff}), got {self.max_backoff}"
            )
        if not 0.0 <= self.random_factor <= 1.0:
            raise InvalidConfig(f"random_factor must be between 0 and 1, got {self.random_factor}")
        if self.reset_after is not None and not self.reset_after > 0:
            raise InvalidConfig(f"reset_after must be > 0 or None, got {self.reset_after}")

    @property
    def quiet_period(self) -> float:
        """The quiet period in force: ``reset_after``, or ``max_backoff`` when it is None."""
        return self.max_backoff if self.reset_after is None else self.reset_after


class RestartBackoff:
    """The restart delays of one child under a :class:`BackoffPolicy`.

    Call :meth:`next_delay` each time the child fails: it returns how long to
    wait before restarting it and counts one more consecutive restart.  Call
    :meth:`record_restart` when the child is running again; if you never do,
    the child is assumed to restart exactly when its delay ends.  When the
    child fails after running ``policy.quiet_period`` seconds or more since its
    last restart, the count starts again from 0 (the delay is ``min_backoff``
    again).

    ``rng`` supplies the random part (a private ``random.Random`` if None);
    ``clock`` gives the time when ``now`` is not passed.  Under anyio, pass
    ``clock=anyio.current_time`` (the event loop's clock) or explicit ``now``
    values: other clocks do not share its origin.  Not thread-safe.
    """

    def __init__(
        self,
        policy: BackoffPolicy,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self._rng = rng if rng is not None else random.Random()
        self._clock = clock
        self._restarts = 0
        self._running_since: float | None = None

    @property
    def restarts(self) -> int:
        """Consecutive restarts counted so far (the ``n`` of the next delay's formula)."""
        return self._restarts

    def next_delay(self, now: float | None = None) -> float:
        """The child failed at ``now``: the delay (seconds) before restarting it.

        Resets the count first if the child had run for the quiet period, then
        counts this restart.  ``now`` defaults to ``clock()``.
        """
        now = self._clock() if now is None else now
        if self._running_since is not None and now - self._running_since >= self.policy.quiet_period:
            self._restarts = 0
        policy = self.policy
        delay = _exponential(policy.min_backoff, policy.max_backoff, self._restarts)
        delay *= 1.0 + self._rng.random() * policy.random_factor
        self._restarts += 1
        self._running_since = now + delay
        return delay

    def record_restart(self, now: float | None = None) -> None:
        """The child is running again since ``now`` (default ``clock()``); the quiet period counts from here."""
        self._running_since = self._clock() if now is None else now

    def reset(self) -> None:
        """Forget past restarts: the next delay is ``min_backoff`` (times the random part)."""
        self._restarts = 0
        self._running_since = None


def retry_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    jitter: Jitter,
    previous: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """The wait (seconds) before retry number ``attempt + 1`` (AWS "Exponential Backoff and Jitter").

    ``attempt`` counts from 0 for the wait before the first retry.  With
    ``ceiling = min(cap, base * 2**attempt)``:

    * ``"none"``: ``ceiling``;
    * ``"full"``: uniform in ``[0, ceiling]``;
    * ``"equal"``: ``ceiling / 2`` plus uniform in ``[0, ceiling / 2]``;
    * ``"decorrelated"``: ``min(cap, uniform(base, previous * 3))``, where
      ``previous`` is the delay returned for the previous retry; None (the
      first retry) and values below ``base`` count as ``base``, as in AWS's
      reference code, so the delay lies in ``[base, cap]``.  ``attempt`` is
      not used.

    Every result lies in ``[0, cap]``.  ``rng`` supplies the randomness (a
    shared ``random.Random`` if None).  Raises ``ValueError`` when
    ``attempt < 0``, ``base <= 0``, ``cap < base`` or ``jitter`` is unknown.
    """
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    if not (base > 0 and cap >= base):
        raise ValueError(f"need 0 < base <= cap, got base={base}, cap={cap}")
    rng = _SHARED_RNG if rng is None else rng
    if jitter == "decorrelated":
        previous = base if previous is None else max(previous, base)
        return min(cap, rng.uniform(base, previous * 3))
    ceiling = _exponential(base, cap, attempt)
    if jitter == "none":
        return ceiling
    if jitter == "full":
        return rng.uniform(0.0, ceiling)
    if jitter == "equal":
        half = ceiling / 2
        return half + rng.uniform(0.0, half)
    raise ValueError(f"jitter must be one of {sorted(JITTERS)}, got {jitter!r}")
