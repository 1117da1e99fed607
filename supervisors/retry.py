"""Retrying failed calls: the policy, the shared retry budget, and the retry loop.

Rules, in the order :func:`run_with_retry` applies them to a failed attempt:

1. Only errors named in :attr:`RetryPolicy.retry_on` are retried: by default
   the actor crashed (:class:`~wasmhive.actors.errors.ActorCrashed` and the
   :class:`~wasmhive.actors.errors.GuestFault` family, which includes
   :class:`~wasmhive.actors.errors.CallTimeout`), its mailbox was full
   (:class:`~wasmhive.actors.errors.MailboxFull`) or no actor was available
   in time (:class:`~wasmhive.actors.errors.Overloaded` from the pool; a
   bulkhead's ``Overloaded`` happens before retry and is not retried).  A
   :class:`~wasmhive.actors.errors.GuestError` (the guest's own answer), a
   :class:`~wasmhive.actors.errors.CircuitOpen` (never retry while the breaker
   is open), a :class:`~wasmhive.actors.errors.RuntimeClosed` and any other
   exception are never retried and cannot be listed.
2. At most once by default: unless the policy says the function is
   ``idempotent``, an error is retried only if the guest never started
   handling the message (see :func:`started`), so no message runs twice.
3. At most ``max_attempts`` attempts in all, the first included.
4. The :class:`RetryBudget` must allow it (gRPC A6 retry throttling), so that
   retries never turn an outage into a storm.
5. The retry must be able to start before the caller's deadline.

When a rule refuses, the caller gets the original error of the last attempt.
"""

from __future__ import annotations

import math
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import msgspec

from wasmhive.actors.errors import (
    ActorCrashed,
    CircuitOpen,
    GuestFault,
    InvalidConfig,
    MailboxFull,
    Overloaded,
)
from wasmhive.supervisors.backoff import JITTERS, Jitter, retry_delay

__all__ = [
    "RETRYABLE_ERRORS",
    "RetryBudget",
    "RetryPolicy",
    "is_retryable",
    "run_with_retry",
    "started",
]

T = TypeVar("T")


def _family(cls: type[BaseException]) -> set[str]:
    """The names of ``cls`` and all its subclasses."""
    names = {cls.__name__}
    for sub in cls.__subclasses__():
        names |= _family(sub)
    return names


#: The error type names :attr:`RetryPolicy.retry_on` may list: ``ActorCrashed``,
#: ``MailboxFull``, ``Overloaded``, and ``GuestFault`` and each of its
#: subclasses.  A name also matches the type's subclasses ("GuestFault" covers
#: "CallTimeout").
RETRYABLE_ERRORS: frozenset[str] = frozenset(
    {ActorCrashed.__name__, MailboxFull.__name__, Overloaded.__name__} | _family(GuestFault)
)

#: Errors that prove the guest never began handling the message.
_NOT_STARTED: tuple[type[BaseException], ...] = (MailboxFull, Overloaded, CircuitOpen, ActorCrashed)


def started(error: BaseException) -> bool:
    """Whether the guest may have begun handling the message when ``error`` happened.

    False only for errors that prove it did not: :class:`MailboxFull` and
    :class:`Overloaded` (the message was refused at the door),
    :class:`CircuitOpen` (the call was not attempted) and
    :class:`ActorCrashed` (the message was queued behind a crash and never
    ran).  True for everything else, in particular the :class:`GuestFault`
    family, :class:`CallTimeout` included (the guest ran and was cut off), and
    for errors the rule does not know (assumed to have run, to be safe).
    """
    return not isinstance(error, _NOT_STARTED)


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """When and how often :func:`run_with_retry` retries a failed call.

    The waits between attempts come from
    :func:`~wasmhive.supervisors.backoff.retry_delay` with ``base``, ``cap``
    and ``jitter``.  At most once by default: with ``idempotent=False`` only
    errors raised before the guest started running the message are retried
    (:func:`started` is False); with ``idempotent=True`` any error matching
    ``retry_on`` is.  ``budget_max_tokens`` and ``budget_token_ratio`` size the
    :class:`RetryBudget` that :meth:`new_budget` makes.

    Invalid values raise :class:`~wasmhive.actors.errors.InvalidConfig` naming the field.
    """

    #: Attempts in all, the first included (1 means never retry).
    max_attempts: int = 3
    #: Base of the exponential backoff (seconds), > 0.
    base: float = 0.05
    #: Largest wait between two attempts (seconds), >= ``base``.
    cap: float = 2.0
    #: How waits are randomised: "none", "full", "equal" or "decorrelated".
    jitter: Jitter = "full"
    #: Names of the error types to retry; each also matches its subclasses.
    #: Only names in :data:`RETRYABLE_ERRORS` are accepted.
    retry_on: tuple[str, ...] = ("ActorCrashed", "GuestFault", "MailboxFull", "Overloaded")
    #: The function may run twice for one call without harm: errors raised
    #: after the guest started (crashes, timeouts) are retried too.
    idempotent: bool = False
    #: Tokens of the retry budget (gRPC A6 ``maxTokens``), > 0.
    budget_max_tokens: float = 10.0
    #: Tokens a success gives back (gRPC A6 ``tokenRatio``), > 0.
    budget_token_ratio: float = 0.1

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise InvalidConfig(f"max_attempts must be >= 1, got {self.max_attempts}")
        if not (math.isfinite(self.base) and self.base > 0):
            raise InvalidConfig(f"base must be a finite number > 0, got {self.base}")
        if not (math.isfinite(self.cap) and self.cap >= self.base):
            raise InvalidConfig(f"cap must be finite and >= base ({self.base}), got {self.cap}")
        if self.jitter not in JITTERS:
            raise InvalidConfig(f"jitter must be one of {sorted(JITTERS)}, got {self.jitter!r}")
        unknown = [name for name in self.retry_on if name not in RETRYABLE_ERRORS]
        if unknown:
            raise InvalidConfig(
                f"retry_on may only name {sorted(RETRYABLE_ERRORS)}, got {unknown}"
                " (GuestError, CircuitOpen and RuntimeClosed are never retried)"
            )
        _check_budget(self.budget_max_tokens, self.budget_token_ratio, prefix="budget_")

    def matches(self, error: BaseException) -> bool:
        """Whether ``error``'s type, or one of its bases, is named in ``retry_on``."""
        if not isinstance(error, Exception):
            return False
        return any(cls.__name__ in self.retry_on for cls in type(error).__mro__)

    def new_budget(self) -> RetryBudget:
        """A fresh :class:`RetryBudget` sized by this policy, to share between calls."""
        return RetryBudget(self.budget_max_tokens, self.budget_token_ratio)


def is_retryable(error: BaseException, policy: RetryPolicy) -> bool:
    """Whether ``policy`` lets ``error`` be retried, attempts, budget and deadline aside.

    It must match ``retry_on``, and unless the policy is ``idempotent`` the
    guest must not have started handling the message (:func:`started`).
    """
    return policy.matches(error) and (policy.idempotent or not started(error))


def _check_budget(max_tokens: float, token_ratio: float, *, prefix: str = "") -> None:
    if not (math.isfinite(max_tokens) and max_tokens > 0):
        raise InvalidConfig(f"{prefix}max_tokens must be a finite number > 0, got {max_tokens}")
    if not (math.isfinite(token_ratio) and token_ratio > 0):
        raise InvalidConfig(f"{prefix}token_ratio must be a finite number > 0, got {token_ratio}")


class RetryBudget:
    """gRPC A6 retry throttling, shared by every call a supervisor retries.

    ``tokens`` starts at ``max_tokens``.  Each failed attempt whose error
    matches the policy's ``retry_on`` takes one token (not below 0), whether
    or not it is then retried; each successful call gives back
    ``token_ratio`` (not above ``max_tokens``).  Retries are allowed only
    while ``tokens > max_tokens / 2``.  Errors that say nothing about the
    function's health (a ``GuestError``, an open breaker) leave it unchanged.

    Meant for one event loop; not thread-safe.
    """

    def __init__(self, max_tokens: float = 10.0, token_ratio: float = 0.1) -> None:
        _check_budget(max_tokens, token_ratio)
        self.max_tokens = max_tokens
        self.token_ratio = token_ratio
        self._tokens = max_tokens

    @property
    def tokens(self) -> float:
        """Tokens left."""
        return self._tokens

    @property
    def retry_allowed(self) -> bool:
        """Whether a retry may be made now (more than half the tokens left)."""
        return self._tokens > self.max_tokens / 2

    def record_failure(self) -> None:
        """An attempt failed with a retryable error: take one token."""
        self._tokens = max(0.0, self._tokens - 1.0)

    def record_success(self) -> None:
        """A call succeeded: give back ``token_ratio`` tokens."""
        self._tokens = min(self.max_tokens, self._tokens + self.token_ratio)


async def run_with_retry(
    attempt: Callable[[int], Awaitable[T]],
    policy: RetryPolicy,
    budget: RetryBudget,
    *,
    deadline: float | None,
    clock: Callable[[], float] = anyio.current_time,
    sleep: Callable[[float], Awaitable[object]] = anyio.sleep,
    rng: random.Random | None = None,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
    first_failure: Exception | None = None,
) -> T:
    """Await ``attempt(n)`` for ``n = 0, 1, ...`` until it succeeds or a rule says stop.

    After a failed attempt ``n`` the call is retried if all hold (see the
    module docstring): the error matches ``policy.retry_on``; it is safe under
    the at-most-once rule (``policy.idempotent``, or :func:`started` is
    False); ``n + 1 < policy.max_attempts``; ``budget.retry_allowed`` after the
    failure was recorded; and ``clock() + delay < deadline`` (no deadline
    when ``deadline`` is None), so a retry that could not start before the
    caller's deadline is not waited for.  ``delay`` is
    ``retry_delay(n, ...)`` of the policy.  Otherwise the original error of
    the last attempt propagates, traceback intact.

    ``deadline`` is a time on ``clock`` (by default the event loop's clock,
    ``anyio.current_time``); it bounds when retries start, not how long an
    attempt runs.  ``on_retry(next_attempt, error, delay)`` is called before
    each wait.  A success gives the budget back ``token_ratio``; a matching
    failure takes a token.  Exceptions that are not ``Exception`` subclasses
    (cancellation) propagate untouched.

    ``first_failure`` says attempt 0 has already run and failed with that
    error (callers run the first attempt themselves on their fast path, and
    come here only after a failure).
    """
    previous_delay: float | None = None
    number = 0
    while True:
        if first_failure is not None:
            error, first_failure = first_failure, None
        else:
            try:
                result = await attempt(number)
            except Exception as exc:
                error = exc
            else:
                budget.record_success()
                return result
        if not policy.matches(error):
            raise error
        budget.record_failure()
        if not is_retryable(error, policy) or number + 1 >= policy.max_attempts or not budget.retry_allowed:
            raise error
        delay = retry_delay(
            number, base=policy.base, cap=policy.cap, jitter=policy.jitter, previous=previous_delay, rng=rng
        )
        if deadline is not None and not clock() + delay < deadline:
            raise error
        if on_retry is not None:
            on_retry(number + 1, error, delay)
        await sleep(delay)
        previous_delay = delay
        number += 1
