"""Running a scenario: load, faults and sampling against a target, then the checker and the report.

::

    from wasmhive.runtime.stress import load_scenario, run_stress

    report = await run_stress(load_scenario("examples/stress/crash-loop.toml"), report_dir="out")
    print(report.verdict)           # "valid", "invalid" or "unknown"
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import anyio.abc
import msgspec

from wasmhive.actors.errors import WasmhiveError

from .checker import check
from .embedded import EmbeddedTarget
from .history import FaultRecord, History, Sample
from .load import arrivals, choose_function, closed_loop, open_loop, payload_factories
from .progress import Progress
from .report import StressReport, build_report, write_report
from .scenario import Scenario, ScenarioError
from .schedule import FaultSchedule, build_schedule
from .target import Target

__all__ = ["SAMPLE_INTERVAL", "run_stress"]

#: Seconds between two samples of every function's state.
SAMPLE_INTERVAL = 0.1


async def run_stress(
    scenario: Scenario,
    *,
    target: Target | None = None,
    seed: int | None = None,
    report_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> StressReport:
    """Run ``scenario`` against ``target`` (default: a fresh :class:`EmbeddedTarget`) and judge it.

    ``seed`` overrides the scenario's.  With ``report_dir``, ``report.json``
    and ``report.html`` are written there.  Runs under trio or asyncio.
    Raises :class:`ScenarioError` if the target cannot run the scenario.
    """
    seed = scenario.seed if seed is None else seed
    schedule = build_schedule(scenario, seed)
    target = target if target is not None else EmbeddedTarget()
    unsupported = sorted({f.kind for f in scenario.faults} - target.supported_faults())
    if unsupported:
        raise ScenarioError(f"faults: the {target.name} target cannot inject {', '.join(unsupported)} faults")
    history = History()
    started_at = time.time()
    await target.open(scenario, schedule, history)
    try:
        with _collector_skips_what_exists_now():
            await _drive(scenario, schedule, seed, target, history, progress)
    finally:
        await target.aclose()
    report = build_report(
        scenario,
        seed=seed,
        schedule=schedule,
        target=target.name,
        history=history,
        result=check(history, scenario),
        started_at=started_at,
    )
    if progress is not None:
        progress.finish(report)
    if report_dir is not None:
        write_report(report, Path(report_dir))
    return report


@contextlib.contextmanager
def _collector_skips_what_exists_now() -> Iterator[None]:
    """Keep full garbage collections off the run's own bookkeeping while it runs.

    The history's lists grow to hundreds of thousands of records.  The records
    are untracked (``gc=False``), but a full collection still walks every
    tracked list element by element: 15-30 ms with the event loop stopped, in
    the middle of the latencies being measured, and more often under faults
    (failures allocate more).  ``gc.freeze()`` after a collection moves what
    exists now (modules, the target, those lists) out of the collector's
    sight; what the run allocates is collected as usual.  The freeze is undone
    afterwards (unless someone else had frozen objects before).  Two runs at
    once in one process share it: the first to end undoes it for both.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


async def _drive(
    scenario: Scenario,
    schedule: FaultSchedule,
    seed: int,
    target: Target,
    history: History,
    progress: Progress | None,
) -> None:
    payloads = payload_factories(scenario, seed)
    patience = scenario.deadline + scenario.grace
    history.t0 = time.perf_counter() + scenario.warmup
    now = history.now

    async def send(request: int, function: str, payload: bytes) -> None:
        with anyio.move_on_after(patience) as scope:
            try:
                await target.call(function, payload)
            except WasmhiveError as exc:
                history.answer(request, "error", exc)
            except Exception as exc:  # an untyped error: the checker's typed_errors fails
                history.answer(request, "untyped", exc)
            else:
                history.answer(request, "ok")
        if scope.cancelled_caught:
            history.give_up(request)

    def record(seq: int, intended: float) -> tuple[int, str, bytes]:
        function = choose_function(scenario, seed, seq)
        payload = payloads[function].make(seq)
        faults = schedule.request_faults(seq, function, intended)
        rec = history.add_request(function, payload, intended, warmup=intended < 0, faults=faults)
        return rec.id, function, payload

    faults_done = anyio.Event()

    async def inject_faults() -> None:
        await _inject_all()
        faults_done.set()

    async def _inject_all() -> None:
        for event in schedule.events:
            delay = event.at - now()
            if delay > 0:
                await anyio.sleep(delay)
            injection = await target.inject(event)
            history.faults.append(
                FaultRecord(now(), event.fault, event.kind, event.function, injection.applied, injection.note)
            )

    async def sample_forever() -> None:
        while True:
            take_sample(target, history)
            if progress is not None:
                progress.update(history, scenario)
            await anyio.sleep(SAMPLE_INTERVAL)

    async with anyio.create_task_group() as requests:
        async with anyio.create_task_group() as background:
            background.start_soon(inject_faults)
            background.start_soon(sample_forever)
            if scenario.load.mode == "open":
                assert scenario.load.rate is not None

                def fire(seq: int, intended: float) -> None:
                    requests.start_soon(send, *record(seq, intended))

                times = arrivals(scenario.load.rate, -scenario.warmup, scenario.duration, seed)
                await open_loop(times, now, fire)
            else:
                assert scenario.load.concurrency is not None

                async def send_closed(seq: int, intended: float) -> None:
                    await send(*record(seq, intended))

                await closed_loop(scenario.load.concurrency, scenario.duration, now, send_closed)
            # The load is over: let the fault driver finish its last events, then stop sampling.
            with anyio.move_on_after(max(0.0, scenario.duration - now()) + 1.0):
                await faults_done.wait()
            background.cancel_scope.cancel()
    take_sample(target, history)


def take_sample(target: Target, history: History) -> None:
    """Record every function's state now."""
    at = history.now()
    for name, s in target.sample().items():
        history.samples.append(Sample(**msgspec.structs.asdict(s), at=at, function=name))
