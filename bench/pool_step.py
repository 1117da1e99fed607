"""Pool reaction time to a load step, in real time.

A ``mode="thread"`` deployment of :data:`cases.SPIN_WAT`, whose calls spin
for a calibrated time (about 1.5 ms), under an autoscaling pool
(:data:`POLICY`).  Closed-loop callers (each makes its next call as soon as
the last returns):

1. **low**: 1 caller, for ``low_s`` seconds;
2. **step**: 8 callers at once, for ``high_s`` seconds;
3. **drop**: every caller stops after its call in progress; then the section
   waits (at most ``down_max_s`` seconds) until the pool is back at
   ``min_size``.

The pool's changes are timed exactly through the runtime's event bus
(``ChildStarted``/``ChildStopped`` of the pool's supervisor, with the pool's
size read in the listener).  A sampler reads ``rt.stats()`` every 100 ms for
the timeline.  All times are seconds on trio's clock, which is real
(monotonic) time.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
import trio
import wasmtime
from cases import SPIN_WAT, spin_payload
from timing import percentile

from wasmhive.runtime import Runtime
from wasmhive.supervisors import PoolPolicy
from wasmhive.supervisors.events import Event

__all__ = ["HIGH_CALLERS", "POLICY", "TARGET_SIZE", "pool_reaction", "spin_wasm"]

NAME = "pool-step"
POLICY = PoolPolicy(
    min_size=1,
    max_size=8,
    interval=0.5,
    sample_interval=0.1,
    stable_window=5.0,
    panic_window=1.0,
    # The default (30 s) keeps the largest size wanted in the last 30 s: far
    # longer than this section may take to scale down.
    scale_down_delay=1.0,
)
LOW_CALLERS = 1
HIGH_CALLERS = 8
#: The "scaled up" size whose arrival is timed (besides the first scale-up).
TARGET_SIZE = 6
#: Time one guest call should spin for.
CALL_MS = 1.5
SAMPLE_S = 0.1


def spin_wasm() -> bytes:
    """:data:`cases.SPIN_WAT` as wasm bytes."""
    return bytes(wasmtime.wat2wasm(SPIN_WAT))


async def calibrate(rt: Runtime, wasm: bytes, call_ms: float) -> tuple[int, float]:
    """Loop steps for a ``call_ms`` call, and the median time of such a call (inline, so no thread hop)."""
    name = "pool-step-calibrate"
    await rt.deploy(name, wasm, mode="inline")

    async def median_ms(iterations: int, reps: int) -> float:
        payload = spin_payload(iterations)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter_ns()
            if await rt.invoke(name, payload) != payload:
                raise AssertionError("the spin guest does not echo")
            times.append((time.perf_counter_ns() - t0) / 1e6)
        return percentile(sorted(times), 50)

    probe = 400_000
    await median_ms(probe, 3)  # warm-up
    per_step_ms = await median_ms(probe, 15) / probe
    iterations = round(call_ms / per_step_ms)
    measured = await median_ms(iterations, 15)
    await rt.undeploy(name)
    return iterations, measured


def _rate(completions: list[tuple[float, float]], start: float, end: float) -> dict[str, Any]:
    """Calls that ended in ``[start, end)``: how many per second, and their latency p50/p99."""
    latencies = sorted(lat for t, lat in completions if start <= t < end)
    span = end - start
    return {
        "start_s": start,
        "end_s": end,
        "calls": len(latencies),
        "calls_per_s": len(latencies) / span if span > 0 else None,
        "latency_p50_ms": percentile(latencies, 50) * 1000 if latencies else None,
        "latency_p99_ms": percentile(latencies, 99) * 1000 if latencies else None,
    }


def _by_size(
    completions: list[tuple[float, float]], changes: list[tuple[float, str, int]], size: int, start: float, end: float
) -> dict[str, dict[str, Any]]:
    """Under the full load (``start`` to ``end``): calls per second and latency at each pool size.

    Each stretch at one size counts from its first 50 ms on, so calls that
    were already queued when the pool changed count less.
    """
    stretches: dict[int, list[tuple[float, float]]] = {}
    t = start
    for when, _, new_size in changes:
        if when <= start or when >= end:
            continue
        stretches.setdefault(size, []).append((t, when))
        t, size = when, new_size
    stretches.setdefault(size, []).append((t, end))
    result: dict[str, dict[str, Any]] = {}
    for pool_size, spans in sorted(stretches.items()):
        spans = [(a + 0.05, b) for a, b in spans if b - a > 0.05]
        if not spans:
            continue
        latencies = sorted(lat for t, lat in completions if any(a <= t < b for a, b in spans))
        seconds = sum(b - a for a, b in spans)
        result[str(pool_size)] = {
            "seconds": seconds,
            "calls": len(latencies),
            "calls_per_s": len(latencies) / seconds,
            "latency_p50_ms": percentile(latencies, 50) * 1000 if latencies else None,
        }
    return result


async def pool_reaction(rt: Runtime, low_s: float, high_s: float, down_max_s: float) -> dict[str, Any]:
    """Run the load step and return its timings, pool-size changes and 100 ms timeline."""
    wasm = spin_wasm()
    iterations, call_ms = await calibrate(rt, wasm, CALL_MS)
    payload = spin_payload(iterations)
    await rt.deploy(NAME, wasm, mode="thread", pool=POLICY)
    deployment = rt._deployments[NAME]
    clock = trio.current_time
    origin = clock()

    def rel(t: float) -> float:
        return t - origin

    changes: list[tuple[float, str, int]] = []
    marks: dict[str, float] = {}
    back_at_min = trio.Event()

    def on_event(event: Event) -> None:
        if getattr(event, "supervisor", None) == NAME:
            size = deployment.pool.size
            changes.append((rel(clock()), type(event).__name__, size))
            if "drop" in marks and size <= POLICY.min_size:
                back_at_min.set()

    unlisten = rt.events.listen(on_event)
    completions: list[tuple[float, float]] = []  # (end, latency), relative seconds
    timeline: list[dict[str, Any]] = []
    active = [0]  # callers that should keep calling: caller i runs while active[0] > i

    async def caller(index: int) -> None:
        while active[0] > index:
            t0 = clock()
            reply = await rt.invoke(NAME, payload)
            t1 = clock()
            if reply != payload:
                raise AssertionError("the spin guest does not echo")
            completions.append((rel(t1), t1 - t0))

    async def sampler() -> None:
        tick = 0
        while True:
            f = rt.stats().functions[NAME]
            timeline.append(
                {
                    "t": round(rel(clock()), 4),
                    "callers": active[0],
                    "pool_size": f.pool_size,
                    "instances": f.instances,
                    "in_flight": f.in_flight,
                    "utilization": f.utilization,
                    "scale_ups": f.scale_ups,
                    "scale_downs": f.scale_downs,
                    "calls_done": len(completions),
                }
            )
            tick += 1
            await trio.sleep_until(origin + tick * SAMPLE_S)

    try:
        async with trio.open_nursery() as outer:
            outer.start_soon(sampler)
            async with trio.open_nursery() as callers:
                marks["low"] = rel(clock())
                active[0] = LOW_CALLERS
                for i in range(LOW_CALLERS):
                    callers.start_soon(caller, i)
                await trio.sleep(low_s)
                marks["step"] = rel(clock())
                size_at_step = deployment.pool.size
                active[0] = HIGH_CALLERS
                for i in range(LOW_CALLERS, HIGH_CALLERS):
                    callers.start_soon(caller, i)
                await trio.sleep(high_s)
                marks["drop"] = rel(clock())
                size_at_drop = deployment.pool.size
                active[0] = 0
            marks["drained"] = rel(clock())
            if deployment.pool.size > POLICY.min_size:
                with trio.move_on_after(down_max_s):
                    await back_at_min.wait()
            await trio.sleep(2 * SAMPLE_S)  # two more samples at the settled size
            outer.cancel_scope.cancel()
    finally:
        unlisten()
    f = rt.stats().functions[NAME]
    await rt.undeploy(NAME)

    step, drop = marks["step"], marks["drop"]

    def first_change(after: float, until: float | None, test: Any) -> float | None:
        for t, kind, size in changes:
            if t >= after and (until is None or t < until) and test(kind, size):
                return t
        return None

    first_up = first_change(step, drop, lambda kind, size: kind == "ChildStarted")
    reach_target = first_change(step, drop, lambda kind, size: size >= TARGET_SIZE)
    high_sizes = [size for t, _, size in changes if step <= t < drop]
    max_high = max([size_at_step, *high_sizes])
    reach_max = first_change(step, drop, lambda kind, size: size == max_high) if high_sizes else None
    first_down = first_change(drop, None, lambda kind, size: kind == "ChildStopped")
    back_to_min = first_change(drop, None, lambda kind, size: size <= POLICY.min_size)
    settled = reach_max if reach_max is not None else step
    by_size = _by_size(completions, changes, size_at_step, step, drop)

    def since(t: float | None, mark: float) -> float | None:
        return None if t is None else t - mark

    return {
        "policy": msgspec.to_builtins(POLICY),
        "mode": "thread",
        "guest_iterations": iterations,
        "guest_call_ms": call_ms,
        "low_callers": LOW_CALLERS,
        "high_callers": HIGH_CALLERS,
        "target_size": TARGET_SIZE,
        "low_s": low_s,
        "high_s": high_s,
        "marks_s": marks,
        "size_at_step": size_at_step,
        "size_at_drop": size_at_drop,
        "max_size_under_load": max_high,
        "first_scale_up_s": since(first_up, step),
        "reach_target_s": since(reach_target, step),
        "reach_max_s": since(reach_max, step),
        "first_scale_down_s": since(first_down, drop),
        "back_to_min_s": since(back_to_min, drop),
        "down_max_s": down_max_s,
        "throughput": {
            # the low phase after its first 0.25 s
            "before": _rate(completions, marks["low"] + 0.25, step),
            # from the step until the pool reached its largest size
            "scaling": _rate(completions, step, settled) if settled > step else None,
            # at the largest size, until the drop
            "after": _rate(completions, settled, drop),
        },
        "throughput_by_size": by_size,
        "scale_ups": f.scale_ups,
        "scale_downs": f.scale_downs,
        "calls": len(completions),
        "changes": [[round(t, 4), kind, size] for t, kind, size in changes],
        "timeline": timeline,
    }
