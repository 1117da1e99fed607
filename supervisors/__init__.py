"""Supervision for wasmhive actors: OTP-style trees, the autoscaling pool, and call strategies.

* :class:`Supervisor`, :class:`DynamicSupervisor`, :class:`ChildSpec`,
  :class:`SupervisorPolicy`: supervision trees with Erlang/OTP semantics.
* :class:`Pool`, :class:`PoolPolicy`: many actors of one function, routed and scaled.
* :class:`CircuitBreaker` / :class:`BreakerPolicy`, :class:`RetryPolicy`,
  :class:`Bulkhead` / :class:`BulkheadPolicy`: the strategies a deployment
  wraps around each call (``Runtime.deploy(..., breaker=, retry=, bulkhead=)``).
* :class:`EventBus` and the event structs: what supervision does, observable.
"""

from .autoscaler import Autoscaler, PoolPolicy
from .backoff import BackoffPolicy, RestartBackoff, retry_delay
from .breaker import BreakerMetrics, BreakerPolicy, BreakerState, CircuitBreaker
from .bulkhead import Bulkhead, BulkheadPolicy
from .events import ChildExited, ChildRestarted, ChildStarted, ChildStopped, Event, EventBus, SupervisorGaveUp
from .pool import Pool
from .protocol import Scheduler, Supervisable
from .retry import RetryBudget, RetryPolicy, run_with_retry
from .scheduler import LoopScheduler, ManualScheduler
from .tree import ChildInfo, ChildSpec, DynamicSupervisor, Supervisor, SupervisorPolicy

__all__ = [
    "Autoscaler",
    "BackoffPolicy",
    "BreakerMetrics",
    "BreakerPolicy",
    "BreakerState",
    "Bulkhead",
    "BulkheadPolicy",
    "ChildExited",
    "ChildInfo",
    "ChildRestarted",
    "ChildSpec",
    "ChildStarted",
    "ChildStopped",
    "CircuitBreaker",
    "DynamicSupervisor",
    "Event",
    "EventBus",
    "LoopScheduler",
    "ManualScheduler",
    "Pool",
    "PoolPolicy",
    "RestartBackoff",
    "RetryBudget",
    "RetryPolicy",
    "Scheduler",
    "Supervisable",
    "Supervisor",
    "SupervisorGaveUp",
    "SupervisorPolicy",
    "retry_delay",
    "run_with_retry",
]
