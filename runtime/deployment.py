"""A deployed function: its actor pool and the strategies that wrap each call.

A call goes through the strategies in this order, outermost first::

    bulkhead -> retry -> circuit breaker -> pool (route, stash, cold start) -> actor

* The **bulkhead** is outermost so that a call holds one slot however many
  times it is retried, and excess load is refused before any work is done.
* **Retry** wraps the breaker so that every attempt asks the breaker first:
  an open breaker fails the attempt with ``CircuitOpen``, which is never
  retried, so retries never hammer a function the breaker has given up on.
* The **breaker** wraps exactly one attempt on one actor, so it sees every
  real outcome (and its timing) and nothing else.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextvars import ContextVar

import anyio
import msgspec

from wasmhive.actors.actor import Actor, CallHook
from wasmhive.actors.bridge import LoopBridge
from wasmhive.actors.errors import CircuitOpen, MailboxFull, WasmhiveError
from wasmhive.actors.instance import InstanceSpec
from wasmhive.actors.messages import ActorRef, ExitReason
from wasmhive.actors.worker import ActorThread, ThreadPark
from wasmhive.supervisors.autoscaler import PoolPolicy
from wasmhive.supervisors.backoff import BackoffPolicy, RestartBackoff
from wasmhive.supervisors.breaker import BreakerPolicy, CircuitBreaker
from wasmhive.supervisors.bulkhead import Bulkhead, BulkheadPolicy
from wasmhive.supervisors.events import EventBus
from wasmhive.supervisors.pool import Pool
from wasmhive.supervisors.protocol import Scheduler
from wasmhive.supervisors.retry import RetryBudget, RetryPolicy, run_with_retry

from .config import DeployOptions
from .engine import EpochTicker
from .registry import ActorRegistry

__all__ = ["POOL_RESTART_BACKOFF", "Deployment", "FunctionStats", "Strategies", "last_actor"]

logger = logging.getLogger("wasmhive.runtime")

#: Backoff between restarts of a whole pool that gave up.
POOL_RESTART_BACKOFF = BackoffPolicy(min_backoff=1.0, max_backoff=30.0, random_factor=0.2)

_last_actor: ContextVar[ActorRef | None] = ContextVar("wasmhive_last_actor", default=None)


def last_actor() -> ActorRef | None:
    """The actor the latest call (or stream) made from the current task went to (for logs)."""
    return _last_actor.get()


class Strategies(msgspec.Struct, frozen=True, kw_only=True):
    """The supervision strategies of one function (None: not used)."""

    pool: PoolPolicy
    breaker: BreakerPolicy | None = None
    retry: RetryPolicy | None = None
    bulkhead: BulkheadPolicy | None = None


class FunctionStats(msgspec.Struct):
    """Counters and state of one deployed function."""

    name: str
    digest: str
    mode: str
    timeout: float
    memory_limit: int
    #: Live actors.
    instances: int
    #: Actors the pool keeps (live plus restarting).
    pool_size: int
    #: In-flight calls over capacity, averaged over the pool's stable window.
    utilization: float
    in_flight: int
    states: dict[str, int]
    queued: int
    calls: int
    failures: int
    crashes: int
    restarts: int
    #: Times the whole pool gave up (restart intensity exceeded) and was started again.
    pool_restarts: int
    scale_ups: int
    scale_downs: int
    cold_starts: int
    breaker_state: str | None
    retries: int
    #: Calls refused without running: bulkhead, open breaker, full mailbox, empty pool.
    rejections: int


class Deployment:
    """One function: a pool of actors, and the strategies around every call."""

    def __init__(
        self,
        name: str,
        digest: str,
        options: DeployOptions,
        strategies: Strategies,
        spec: InstanceSpec,
        *,
        registry: ActorRegistry,
        bridge: LoopBridge,
        ticker: EpochTicker,
        starter: ActorThread,
        park: ThreadPark | None = None,
        scheduler: Scheduler,
        events: EventBus,
        shutdown_grace: float,
    ) -> None:
        self.name = name
        self.digest = digest
        self.options = options
        self.strategies = strategies
        self.spec = spec
        self._policy = options.policy
        self._registry = registry
        self._bridge = bridge
        self._ticker = ticker
        self._starter = starter
        self._park = park
        self._clock: Callable[[], float] = scheduler.now
        self._scheduler = scheduler
        self._events = events
        self._shutdown_grace = shutdown_grace
        self._stopping = False
        # The runtime is the root supervisor: a pool that gives up is started
        # again after a backoff, and never given up on.
        self._pool_backoff = RestartBackoff(POOL_RESTART_BACKOFF, clock=scheduler.now)
        self.pool_restarts = 0
        #: Counters of pools that gave up, so stats keep counting across pool restarts.
        self._pool_totals = dict.fromkeys(
            ("crashes", "scale_ups", "scale_downs", "cold_starts", "stash_rejections", "restarts"), 0
        )
        self.pool = self._new_pool()
        self.breaker = CircuitBreaker(strategies.breaker, name, scheduler.now) if strategies.breaker else None
        self.bulkhead = Bulkhead(strategies.bulkhead, name) if strategies.bulkhead else None
        self.retry = strategies.retry
        self._budget: RetryBudget | None = strategies.retry.new_budget() if strategies.retry else None
        self._plain = self.breaker is None and self.bulkhead is None and self.retry is None
        self._calls_of_dead = 0
        self._failures_of_dead = 0
        self.retries = 0
        self.rejections = 0
        #: Set on every actor of the function, now and later (see ``set_call_hook``).
        self._call_hook: CallHook | None = None

    def start(self) -> Deployment:
        """Start the pool's first actors.  Raises the typed error if the guest cannot start."""
        self.pool.start()
        self.pool.on_exit(self._pool_ended)  # (only a pool that started can give up)
        return self

    def stop(self, reason: ExitReason) -> None:
        """Stop every actor; queued messages fail; calls in flight get the grace period."""
        self._stopping = True
        self.pool.stop(reason)

    def _new_pool(self) -> Pool:
        pool = Pool(
            self.name,
            self._spawn,
            self.strategies.pool,
            scheduler=self._scheduler,
            events=self._events,
            shutdown_grace=self._shutdown_grace,
        )
        return pool

    def _pool_ended(self, pool: Pool, reason: ExitReason) -> None:
        if self._stopping or pool is not self.pool:
            return
        delay = self._pool_backoff.next_delay()
        logger.error("%s: the actor pool gave up (%s); starting a new one in %.1fs", self.name, reason.message, delay)
        self._scheduler.call_later(delay, self._restart_pool)

    def _restart_pool(self) -> None:
        if self._stopping:
            return
        self.pool_restarts += 1
        old = self.pool
        for counter in self._pool_totals:
            self._pool_totals[counter] += getattr(old, counter)
        self.pool = self._new_pool()
        try:
            self.pool.start()
        except Exception as exc:
            delay = self._pool_backoff.next_delay()
            logger.error("%s: cannot start a new actor pool (%s); trying again in %.1fs", self.name, exc, delay)
            self._scheduler.call_later(delay, self._restart_pool)
        else:
            self.pool.on_exit(self._pool_ended)
            self._pool_backoff.record_restart()

    @property
    def actors(self) -> list[Actor]:
        return self.pool.actors

    def spawn_actor(self) -> Actor:
        """Start an actor outside the pool (the runtime's start-up check of an empty pool)."""
        return self._spawn()

    def set_call_hook(self, hook: CallHook | None) -> None:
        """Give every actor of the function, live and future, this call hook (None: remove it).

        See :data:`wasmhive.actors.actor.CallHook`: tools only (the stress harness).
        """
        self._call_hook = hook
        for actor in self.pool.actors:
            actor.call_hook = hook

    def _spawn(self) -> Actor:
        actor = Actor(
            self._registry.new_ref(self.name),
            self.spec,
            self._policy,
            self._bridge,
            self._ticker,
            self._starter,
            park=self._park,
        )
        actor.call_hook = self._call_hook
        actor.start()
        actor.on_exit(self._ended)
        self._registry.add(actor)
        return actor

    def _ended(self, actor: Actor, reason: ExitReason) -> None:
        self._registry.ended(actor, reason)
        self._calls_of_dead += actor.calls
        self._failures_of_dead += actor.failures

    # --- calling ------------------------------------------------------------------------

    async def call(self, payload: bytes, key: str | None = None) -> bytes:
        """One call through every strategy; the emitted chunks joined with the reply."""
        pool = self.pool
        if self._plain:
            actor = pool.pick(key)
            if actor is not None:  # the common case: no strategies, a live actor
                _last_actor.set(actor.ref)
                pool.in_flight += 1
                pool.arrivals += 1
                try:
                    return await actor.ask(payload)
                except MailboxFull:
                    self.rejections += 1
                    raise
                finally:
                    pool.in_flight -= 1
        bulkhead = self.bulkhead
        if bulkhead is not None and not bulkhead.try_acquire():
            await bulkhead.acquire()
        try:
            # The first attempt runs here; the retry machinery costs only after a failure.
            return await self._attempt(0, payload, key)
        except Exception as first:
            if self.retry is None or self._budget is None:
                raise
            deadline = anyio.current_effective_deadline()
            return await run_with_retry(
                lambda attempt: self._attempt(attempt, payload, key),
                self.retry,
                self._budget,
                deadline=None if math.isinf(deadline) else deadline,
                clock=self._clock,
                on_retry=self._count_retry,
                first_failure=first,
            )
        finally:
            if bulkhead is not None:
                bulkhead.release()

    def _count_retry(self, attempt: int, error: BaseException, delay: float) -> None:
        self.retries += 1

    async def _attempt(self, attempt: int, payload: bytes, key: str | None) -> bytes:
        breaker = self.breaker
        if breaker is not None:
            try:
                breaker.acquire()
            except CircuitOpen:
                self.rejections += 1
                raise
        pool = self.pool
        pool.in_flight += 1
        pool.arrivals += 1
        started = time.perf_counter()  # (a duration: any clock will do, this one is cheap)
        try:
            actor = pool.pick(key) or await pool.acquire(key)
            _last_actor.set(actor.ref)
            result = await actor.ask(payload)
        except WasmhiveError as exc:
            if isinstance(exc, MailboxFull):  # (the pool counts its own Overloaded)
                self.rejections += 1
            if breaker is not None:  # (bystanders of another call's crash are not recorded)
                breaker.record_failure(time.perf_counter() - started, exc)
            raise
        except BaseException:
            if breaker is not None:
                breaker.record_ignored()
            raise
        finally:
            pool.in_flight -= 1
        if breaker is not None:
            breaker.record_success(time.perf_counter() - started)
        if attempt == 0 and self._budget is not None:
            self._budget.record_success()  # (run_with_retry counts the later attempts)
        return result

    async def route(self, key: str | None = None) -> Actor:
        """The actor a streaming call goes to.

        Streams go through the pool only: retry, breaker and bulkhead do not
        apply (a stream cannot be replayed once chunks reached the caller).
        """
        self.pool.arrivals += 1
        actor = await self.pool.acquire(key)
        _last_actor.set(actor.ref)
        return actor

    # --- observing ------------------------------------------------------------------------

    def stats(self) -> FunctionStats:
        totals = self._pool_totals
        actors = self.pool.actors
        states: dict[str, int] = {}
        for actor in actors:
            states[actor.state.value] = states.get(actor.state.value, 0) + 1
        return FunctionStats(
            name=self.name,
            digest=self.digest,
            mode=self.options.mode,
            timeout=self.options.call_timeout,
            memory_limit=self.options.memory_limit,
            instances=sum(1 for a in actors if a.alive),
            pool_size=self.pool.size,
            utilization=round(self.pool.utilization(), 4),
            in_flight=self.pool.in_flight,
            states=states,
            queued=sum(a.queued for a in actors),
            calls=self._calls_of_dead + sum(a.calls for a in actors),
            failures=self._failures_of_dead + sum(a.failures for a in actors),
            crashes=totals["crashes"] + self.pool.crashes,
            restarts=totals["restarts"] + self.pool.restarts,
            pool_restarts=self.pool_restarts,
            scale_ups=totals["scale_ups"] + self.pool.scale_ups,
            scale_downs=totals["scale_downs"] + self.pool.scale_downs,
            cold_starts=totals["cold_starts"] + self.pool.cold_starts,
            breaker_state=self.breaker.state.name if self.breaker is not None else None,
            retries=self.retries,
            rejections=self.rejections
            + totals["stash_rejections"]
            + self.pool.stash_rejections
            + (self.bulkhead.rejected if self.bulkhead is not None else 0),
        )
