"""Strategy overhead: the inline echo with no strategies against the same with all of them on.

Each variant is its own ``mode="inline"`` deployment of the echo module:

* ``off``: no strategies (the default pool of one actor), so a call takes the
  deployment's fast path: pick the idle actor and ask it.
* ``all``: ``breaker=BreakerPolicy()``, ``retry=RetryPolicy()``,
  ``bulkhead=BulkheadPolicy(max_concurrent=64)`` and
  ``pool=PoolPolicy(min_size=1, max_size=4)``, so a call goes
  bulkhead -> retry -> breaker -> pool -> actor.
* ``pool``, ``breaker``, ``retry``, ``bulkhead``: one strategy each, to show
  what each layer costs on its own.  A pool policy alone keeps the fast path
  (it is not a call wrapper); any of the other three leaves it.

The variants run in interleaved rounds, the starting variant rotating each
round, as the echo cases do.  Task steps per call are counted apart from the
timed rounds, with the dispatch section's instrument.
"""

from __future__ import annotations

import gc
from functools import partial
from typing import Any

import trio
from cases import check_echo_async
from dispatch import StepCounter, instrumented
from timing import Samples, time_async_round

from wasmhive.runtime import Runtime
from wasmhive.supervisors import BreakerPolicy, BulkheadPolicy, PoolPolicy, RetryPolicy

__all__ = ["VARIANTS", "strategy_overhead"]

ALL_ON: dict[str, Any] = {
    "breaker": BreakerPolicy(),
    "retry": RetryPolicy(),
    "bulkhead": BulkheadPolicy(max_concurrent=64),
    "pool": PoolPolicy(min_size=1, max_size=4),
}

#: Variant name -> the strategy keywords of its deployment.
VARIANTS: dict[str, dict[str, Any]] = {
    "off": {},
    "pool": {"pool": ALL_ON["pool"]},
    "breaker": {"breaker": ALL_ON["breaker"]},
    "retry": {"retry": ALL_ON["retry"]},
    "bulkhead": {"bulkhead": ALL_ON["bulkhead"]},
    "all": ALL_ON,
}


def _describe(strategies: dict[str, Any]) -> str:
    if not strategies:
        return "none"
    return ", ".join(f"{key}={type(value).__name__}(...)" for key, value in strategies.items())


async def strategy_overhead(
    rt: Runtime, wasm: bytes, payload: bytes, rounds: int, calls: int, count_calls: int
) -> dict[str, Any]:
    """Deploy every variant, check it echoes, warm it up, then time it in interleaved rounds."""
    calls_of: dict[str, Any] = {}
    for variant, strategies in VARIANTS.items():
        name = f"strategies-{variant}"
        await rt.deploy(name, wasm, mode="inline", **strategies)
        calls_of[variant] = partial(rt.invoke, name)
        await check_echo_async(name, calls_of[variant])
    names = list(VARIANTS)
    for variant in names:
        await time_async_round(Samples(variant), calls_of[variant], payload, max(1, calls // 5))
    samples = {variant: Samples(variant) for variant in names}
    for r in range(rounds):
        shift = r % len(names)
        gc.collect()
        for variant in names[shift:] + names[:shift]:
            await time_async_round(samples[variant], calls_of[variant], payload, calls)
    results: dict[str, Any] = {}
    task = trio.lowlevel.current_task()
    stats = rt.stats().functions
    for variant in names:
        summary: dict[str, Any] = samples[variant].summary()
        counter = StepCounter()
        call = calls_of[variant]
        with instrumented(counter):
            for _ in range(count_calls):
                await call(payload)
        summary["task_steps_per_call"] = counter.by_task.get(task, 0) / count_calls
        summary["all_task_steps_per_call"] = counter.steps / count_calls
        summary["step_count_calls"] = count_calls
        function = stats[f"strategies-{variant}"]
        summary["strategies"] = _describe(VARIANTS[variant])
        summary["pool_size_after"] = function.pool_size
        summary["retries"] = function.retries
        summary["rejections"] = function.rejections
        results[variant] = summary
    off = results["off"]
    for summary in results.values():
        summary["p50_vs_off"] = summary["p50_us"] / off["p50_us"]
        summary["p50_extra_us"] = summary["p50_us"] - off["p50_us"]
    return {
        "variants": results,
        "overhead_ratio": results["all"]["p50_us"] / off["p50_us"],
        "overhead_us": results["all"]["p50_us"] - off["p50_us"],
        "rounds": rounds,
        "calls_per_round": calls,
    }
