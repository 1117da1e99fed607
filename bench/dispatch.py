"""Dispatch cost under trio: does an inline call to an idle actor switch tasks?

The requirement: when the target actor is idle and its mailbox is empty,
dispatch must not pay for an extra task switch.  This module measures

* task steps per call, counted by a :class:`trio.abc.Instrument`
  (``before_task_step``).  A task step is one run of a task by trio's
  scheduler, so a call that makes its task give up the CPU and resume adds
  at least one.
* what one task switch would cost, in interleaved rounds: a bare
  ``trio.lowlevel.checkpoint()``, the idle inline call, and the same call
  with a forced checkpoint before it.
* the queued path for contrast: two tasks calling the same inline actor,
  so that each call waits in the mailbox behind the other task's call and
  is handed back to its own task when its turn comes.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from typing import Any

import trio

from timing import AsyncCall, Samples, percentile, time_async_round
from wasmhive.runtime import Runtime

__all__ = ["StepCounter", "dispatch"]

_clock = time.perf_counter_ns

#: The timed variants of a round, in their starting order.
VARIANTS = ("checkpoint_only", "inline_idle", "inline_with_checkpoint", "queued_inline")


class StepCounter(trio.abc.Instrument):
    """Counts task steps: all of them, and per task."""

    def __init__(self) -> None:
        self.steps = 0
        self.by_task: dict[trio.lowlevel.Task, int] = {}

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1
        self.by_task[task] = self.by_task.get(task, 0) + 1


async def _counting(body: Callable[[StepCounter], Awaitable[None]]) -> StepCounter:
    """Run ``body`` with a fresh :class:`StepCounter` installed; return the counter."""
    counter = StepCounter()
    trio.lowlevel.add_instrument(counter)
    try:
        await body(counter)
    finally:
        trio.lowlevel.remove_instrument(counter)
    return counter


def _callers(rt: Runtime, name: str) -> dict[str, AsyncCall]:
    """The three single-task variants, each one coroutine frame around what it times."""
    invoke = rt.invoke
    checkpoint = trio.lowlevel.checkpoint

    async def checkpoint_only(payload: bytes) -> bytes:
        await checkpoint()
        return payload

    async def inline_idle(payload: bytes) -> bytes:
        return await invoke(name, payload)

    async def inline_with_checkpoint(payload: bytes) -> bytes:
        await checkpoint()
        return await invoke(name, payload)

    return {
        "checkpoint_only": checkpoint_only,
        "inline_idle": inline_idle,
        "inline_with_checkpoint": inline_with_checkpoint,
    }


class QueuedRun:
    """Two tasks calling one inline actor, each call queued behind the other task's."""

    def __init__(self, rt: Runtime, name: str, payload: bytes) -> None:
        self.rt = rt
        self.name = name
        self.payload = payload
        self.tasks = (Samples("queued_task_a"), Samples("queued_task_b"))
        #: Sum over rounds of first-call start to last-call end, across both tasks.
        self.wall_ns = 0

    async def round(self, n: int, counter: StepCounter | None = None) -> tuple[int, int]:
        """``n`` calls from each task; returns the task steps of the two callers and of all tasks.

        The main task first makes one call with ``rt.stream()``, which always
        goes through the mailbox, and gives up the CPU while waiting for its
        turn.  The two callers then find the actor busy and queue; from then
        on each finished call hands the turn to the other task's queued call.
        """
        go = trio.Event()
        spans: list[tuple[int, int]] = []
        callers: list[trio.lowlevel.Task] = []

        async def caller(samples: Samples, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            callers.append(trio.lowlevel.current_task())
            task_status.started()
            await go.wait()
            invoke, name, payload = self.rt.invoke, self.name, self.payload
            record = samples.latencies_ns.append
            first = samples.calls
            reply = b""
            start = _clock()
            for _ in range(n):
                t0 = _clock()
                reply = await invoke(name, payload)
                record(_clock() - t0)
            end = _clock()
            samples.end_round(first, end - start)
            spans.append((start, end))
            if reply != payload:
                raise AssertionError(f"{samples.name}: queued inline echo returned {len(reply)} bytes")

        steps_before = counter.steps if counter is not None else 0
        async with trio.open_nursery() as nursery:
            for samples in self.tasks:
                await nursery.start(caller, samples)
            go.set()
            async with aclosing(self.rt.stream(self.name, self.payload)) as chunks:
                async for _ in chunks:
                    pass
        self.wall_ns += max(e for _, e in spans) - min(s for s, _ in spans)
        if counter is None:
            return 0, 0
        return sum(counter.by_task.get(task, 0) for task in callers), counter.steps - steps_before

    def summary(self) -> dict[str, Any]:
        per_task = [s.summary() for s in self.tasks]
        calls = sum(s.calls for s in self.tasks)
        return {
            "tasks": per_task,
            "p50_us": [t["p50_us"] for t in per_task],
            "p99_us": [t["p99_us"] for t in per_task],
            "calls": calls,
            "wall_per_call_us": self.wall_ns / calls / 1000,
        }


async def dispatch(rt: Runtime, name: str, payload: bytes, rounds: int, calls: int, count_calls: int) -> dict[str, Any]:
    """Every dispatch figure; ``name`` must be an inline deployment with one actor."""
    callers = _callers(rt, name)
    queued = QueuedRun(rt, name, payload)
    samples = {variant: Samples(variant) for variant in callers}

    async def run(variant: str, into: Samples | None, n: int) -> None:
        if variant == "queued_inline":
            await queued.round(n)
        else:
            await time_async_round(into or Samples(variant), callers[variant], payload, n)

    for variant in VARIANTS:  # untimed warm-up
        await run(variant, None, max(1, calls // 5))
    queued.tasks[0].latencies_ns.clear()
    queued.tasks[1].latencies_ns.clear()
    queued.tasks[0].round_p50_ns.clear()
    queued.tasks[1].round_p50_ns.clear()
    queued.tasks[0].wall_ns = queued.tasks[1].wall_ns = queued.wall_ns = 0

    for r in range(rounds):
        shift = r % len(VARIANTS)
        gc.collect()
        for variant in VARIANTS[shift:] + VARIANTS[:shift]:
            await run(variant, samples.get(variant), calls)

    steps = await _count_steps(rt, name, payload, callers, queued, count_calls)
    results: dict[str, Any] = {variant: s.summary() for variant, s in samples.items()}
    results["queued_inline"] = queued.summary()
    for variant, (caller_steps, all_steps, n) in steps.items():
        target = results.setdefault(variant, {})
        target["task_steps_per_call"] = caller_steps / n
        target["all_task_steps_per_call"] = all_steps / n
        target["step_count_calls"] = n
    base = results["inline_idle"]["p50_us"]
    forced = results["inline_with_checkpoint"]["p50_us"]
    results["switch_cost_us"] = forced - base
    results["switch_ratio"] = forced / base
    results["checkpoint_p50_us"] = results["checkpoint_only"]["p50_us"]
    results["rounds"] = rounds
    results["calls_per_round"] = calls
    return results


async def _count_steps(
    rt: Runtime,
    name: str,
    payload: bytes,
    callers: dict[str, AsyncCall],
    queued: QueuedRun,
    n: int,
) -> dict[str, tuple[int, int, int]]:
    """Task steps per call, counted apart from the timed rounds (an instrument slows every step).

    For each variant: steps of the calling task(s), steps of every task, calls.
    """
    counts: dict[str, tuple[int, int, int]] = {}
    for variant in ("inline_idle", "inline_with_checkpoint"):
        call = callers[variant]

        async def body(counter: StepCounter, call: AsyncCall = call) -> None:
            me = trio.lowlevel.current_task()
            for _ in range(n):
                if await call(payload) != payload:
                    raise AssertionError(f"{variant}: wrong echo")
            counts[variant] = (counter.by_task.get(me, 0), counter.steps, n)

        await _counting(body)

    async def queued_body(counter: StepCounter) -> None:
        caller_steps, all_steps = await QueuedRun(rt, name, payload).round(n, counter)
        counts["queued_inline"] = (caller_steps, all_steps, 2 * n)

    await _counting(queued_body)
    return counts


async def thread_steps(rt: Runtime, name: str, payload: bytes, n: int) -> dict[str, float]:
    """Task steps per call of ``n`` sequential invokes of a thread-mode deployment."""
    result: dict[str, float] = {}

    async def body(counter: StepCounter) -> None:
        me = trio.lowlevel.current_task()
        for _ in range(n):
            if await rt.invoke(name, payload) != payload:
                raise AssertionError("thread: wrong echo")
        result["task_steps_per_call"] = counter.by_task.get(me, 0) / n
        result["all_task_steps_per_call"] = counter.steps / n
        result["step_count_calls"] = n

    await _counting(body)
    return result


def p50_us(samples: Samples) -> float:
    """Median of ``samples`` in microseconds."""
    return percentile(sorted(samples.latencies_ns), 50) / 1000
