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
from collections.abc import Iterator
from contextlib import aclosing, contextmanager
from functools import partial
from typing import Any

import trio
from timing import AsyncCall, Samples, time_async_round

from wasmhive.runtime import Runtime

__all__ = ["VARIANTS", "QueuedRun", "StepCounter", "dispatch", "instrumented"]

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


@contextmanager
def instrumented(counter: StepCounter) -> Iterator[None]:
    """Install ``counter`` as a trio instrument for the duration of the block."""
    trio.lowlevel.add_instrument(counter)
    try:
        yield
    finally:
        trio.lowlevel.remove_instrument(counter)


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


def _steps_of(counter: StepCounter | None, task: trio.lowlevel.Task) -> int:
    return 0 if counter is None else counter.by_task.get(task, 0)


async def _single_task_steps(call: AsyncCall, payload: bytes, n: int, counter: StepCounter) -> tuple[int, int]:
    """``n`` calls from this task: steps this task began during them, and steps of every task."""
    me = trio.lowlevel.current_task()
    mine, everyone = _steps_of(counter, me), counter.steps
    for _ in range(n):
        if await call(payload) != payload:
            raise AssertionError("wrong echo while counting task steps")
    return _steps_of(counter, me) - mine, counter.steps - everyone


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
        """``n`` calls from each task.

        Returns the steps the two calling tasks began during their calls, and
        the steps of every task during the whole round (with ``counter``).

        Both tasks wake in the same scheduler batch and start with one untimed
        call through ``rt.stream()``, which always goes through the mailbox:
        the first to run is given the turn and gives up the CPU once before
        using it, so the second finds the actor busy and queues.  From then on
        each finished call hands the turn to the other task's queued call, and
        each task's next call finds the actor busy (its turn granted to the
        other task) and queues in turn.  (Were the main task to make that
        first call instead, trio could resume it before either caller ran, and
        the callers would find the actor idle.)
        """
        go = trio.Event()
        spans: list[tuple[int, int]] = []
        caller_steps = 0

        async def caller(samples: Samples, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            nonlocal caller_steps
            me = trio.lowlevel.current_task()
            task_status.started()
            await go.wait()
            invoke, name, payload = self.rt.invoke, self.name, self.payload
            async with aclosing(self.rt.stream(name, payload)) as chunks:
                async for _ in chunks:
                    pass
            record = samples.latencies_ns.append
            first = samples.calls
            before = _steps_of(counter, me)
            reply = b""
            start = _clock()
            for _ in range(n):
                t0 = _clock()
                reply = await invoke(name, payload)
                record(_clock() - t0)
            end = _clock()
            caller_steps += _steps_of(counter, me) - before
            samples.end_round(first, end - start)
            spans.append((start, end))
            if reply != payload:
                raise AssertionError(f"{samples.name}: queued inline echo returned {len(reply)} bytes")

        everyone = counter.steps if counter is not None else 0
        async with trio.open_nursery() as nursery:
            for samples in self.tasks:
                await nursery.start(caller, samples)
            go.set()
        self.wall_ns += max(end for _, end in spans) - min(start for start, _ in spans)
        return caller_steps, (counter.steps - everyone if counter is not None else 0)

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


async def dispatch(
    rt: Runtime, inline_name: str, thread_name: str, payload: bytes, rounds: int, calls: int, count_calls: int
) -> dict[str, Any]:
    """Every dispatch figure.

    ``inline_name`` must be an inline deployment with one actor that nothing
    else calls meanwhile; ``thread_name`` a thread-mode one (only its task
    steps are counted).
    """
    callers = _callers(rt, inline_name)

    async def run(variant: str, samples: dict[str, Samples], queued: QueuedRun, n: int) -> None:
        if variant == "queued_inline":
            await queued.round(n)
        else:
            await time_async_round(samples[variant], callers[variant], payload, n)

    warm_up = {variant: Samples(variant) for variant in callers}
    for variant in VARIANTS:
        await run(variant, warm_up, QueuedRun(rt, inline_name, payload), max(1, calls // 5))

    samples = {variant: Samples(variant) for variant in callers}
    queued = QueuedRun(rt, inline_name, payload)
    for r in range(rounds):
        shift = r % len(VARIANTS)
        gc.collect()
        for variant in VARIANTS[shift:] + VARIANTS[:shift]:
            await run(variant, samples, queued, calls)

    results: dict[str, Any] = {variant: s.summary() for variant, s in samples.items()}
    results["queued_inline"] = queued.summary()

    # Task steps, counted apart from the timed rounds: an instrument slows every step.
    def record(variant: str, caller_steps: int, all_steps: int, n: int) -> None:
        results.setdefault(variant, {}).update(
            task_steps_per_call=caller_steps / n, all_task_steps_per_call=all_steps / n, step_count_calls=n
        )

    for variant in ("inline_idle", "inline_with_checkpoint"):
        counter = StepCounter()
        with instrumented(counter):
            mine, everyone = await _single_task_steps(callers[variant], payload, count_calls, counter)
        record(variant, mine, everyone, count_calls)
    counter = StepCounter()
    with instrumented(counter):
        mine, everyone = await QueuedRun(rt, inline_name, payload).round(count_calls, counter)
    record("queued_inline", mine, everyone, 2 * count_calls)
    counter = StepCounter()
    with instrumented(counter):
        mine, everyone = await _single_task_steps(partial(rt.invoke, thread_name), payload, count_calls, counter)
    record("thread", mine, everyone, count_calls)

    base = results["inline_idle"]["p50_us"]
    forced = results["inline_with_checkpoint"]["p50_us"]
    results["checkpoint_p50_us"] = results["checkpoint_only"]["p50_us"]
    results["switch_cost_us"] = forced - base
    results["switch_ratio"] = forced / base
    results["rounds"] = rounds
    results["calls_per_round"] = calls
    return results
