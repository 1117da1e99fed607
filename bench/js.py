"""JavaScript functions on QuickJS-NG: call latency and actor cold start (see docs/js.md).

The function is a trivial script, :data:`HELLO_JS`: ``handler`` returns the
string ``"hello"``.  Everything runs in its own ``Runtime``, on the compile
cache directory of the other sections (which has not seen QuickJS yet), so
its first deploy compiles QuickJS and writes the cache file.  Then:

* **call**: ``rt.invoke`` on a ``mode="thread"`` deployment with one actor,
  after an untimed warm-up round, in ``rounds`` rounds of ``calls`` calls.
  A call crosses to the actor's thread, from there to the actor's QuickJS
  engine thread (as a JSON line on its stdin) and back, then back to trio.
* **cold start**, three ways, each ending when the actor's script has been
  evaluated and the actor is ready for calls:

  * ``spawn``: one more actor on the running JS deployment, through the pool's
    supervisor (``DynamicSupervisor.start_child``), as a scale-up adds one.
    The module is compiled and linked already: this is the actor alone (its
    thread, a Store, an instance, ``_initialize``, and the bootstrap
    evaluating the script on a new engine thread), timed until
    ``Actor.wait_started()`` returns.
  * ``deploy_memory``: ``rt.deploy`` of a new JS function while the runtime
    holds the compiled QuickJS in memory.  On top of the spawn, it reads the
    1.5 MB QuickJS wasm file, takes its SHA-256 (the cache key), links it
    (``Linker``, WASI, ``instantiate_pre``), with one hop to a worker thread.
    Each deployment is undeployed afterwards (not timed).
  * ``deploy_disk``: the same in a fresh ``Runtime`` on the same cache
    directory, so the compiled module comes from the disk cache
    (``Module.deserialize`` after the checks of the QuickJS section).  The
    runtime's start and close are not timed.

  After each deploy the first call is timed as well (``first_call_ms``).
"""

from __future__ import annotations

import gc
import time
from functools import partial
from typing import Any

from timing import Samples, percentile, time_async_round

from wasmhive.runtime import Runtime, RuntimeConfig

__all__ = ["HELLO_JS", "js_section"]

HELLO_JS = 'function handler(request, ctx) { return "hello"; }\n'
REPLY = b"hello"


def _ms_summary(times_s: list[float]) -> dict[str, Any]:
    ordered = sorted(t * 1000 for t in times_s)
    return {
        "p50_ms": percentile(ordered, 50),
        "min_ms": ordered[0],
        "max_ms": ordered[-1],
        "n": len(ordered),
        "all_ms": [t * 1000 for t in times_s],
    }


async def _timed_deploy(rt: Runtime, name: str) -> tuple[float, float]:
    """Seconds to deploy the JS function ``name``, then seconds of its first call."""
    t0 = time.perf_counter()
    await rt.deploy(name, HELLO_JS, kind="js", mode="thread")
    t1 = time.perf_counter()
    reply = await rt.invoke(name, b"")
    t2 = time.perf_counter()
    if reply != REPLY:
        raise AssertionError(f"{name}: the JS function replied {reply!r}, not {REPLY!r}")
    return t1 - t0, t2 - t1


async def js_section(
    config: RuntimeConfig, payload: bytes, rounds: int, calls: int, spawns: int, deploys: int, disk_deploys: int
) -> dict[str, Any]:
    """Time calls of a trivial JS function and the cold start of JS actors (see the module's doc)."""
    results: dict[str, Any] = {"source": HELLO_JS.strip()}
    async with Runtime(config) as rt:
        first_s, first_call_s = await _timed_deploy(rt, "js-hello")
        results["first_deploy_ms"] = first_s * 1000
        results["first_deploy_compiled"] = rt.cache.stats.compiles == 1
        results["first_call_ms"] = first_call_s * 1000
        call = partial(rt.invoke, "js-hello")

        async def hello(data: bytes) -> bytes:
            reply = await call(data)
            if reply != REPLY:
                raise AssertionError(f"js-hello replied {reply!r}")
            return data  # (time_async_round checks for an echo)

        await time_async_round(Samples("js_warmup"), hello, payload, max(1, calls // 5))
        samples = Samples("js_call")
        for _ in range(rounds):
            gc.collect()
            await time_async_round(samples, hello, payload, calls)
        results["call"] = {**samples.summary(), "mode": "thread", "payload_bytes": len(payload)}

        deployment = rt._deployments["js-hello"]
        supervisor = deployment.pool._supervisor
        spawn_s = []
        for _ in range(spawns):
            t0 = time.perf_counter()
            _, actor = supervisor.start_child()
            await actor.wait_started()  # (a thread actor starts on its own thread)
            spawn_s.append(time.perf_counter() - t0)
        results["spawn"] = _ms_summary(spawn_s)
        results["spawn"]["pool_actors"] = len(deployment.actors)
        probe = deployment.actors[-1]
        if await probe.ask(b"") != REPLY:
            raise AssertionError("a spawned JS actor does not reply")

        deploy_s, deploy_call_s = [], []
        for i in range(deploys):
            t_deploy, t_call = await _timed_deploy(rt, f"js-deploy-{i}")
            deploy_s.append(t_deploy)
            deploy_call_s.append(t_call)
            await rt.undeploy(f"js-deploy-{i}")
        results["deploy_memory"] = _ms_summary(deploy_s)
        results["deploy_memory"]["first_call_ms"] = percentile(sorted(t * 1000 for t in deploy_call_s), 50)
        results["deploy_memory"]["cache_memory_hits"] = rt.cache.stats.memory_hits

    disk_s, disk_call_s, disk_hits = [], [], 0
    for i in range(disk_deploys):
        async with Runtime(config) as fresh:
            t_deploy, t_call = await _timed_deploy(fresh, f"js-disk-{i}")
            disk_s.append(t_deploy)
            disk_call_s.append(t_call)
            disk_hits += fresh.cache.stats.disk_hits
    results["deploy_disk"] = _ms_summary(disk_s)
    results["deploy_disk"]["first_call_ms"] = percentile(sorted(t * 1000 for t in disk_call_s), 50)
    results["deploy_disk"]["cache_disk_hits"] = disk_hits
    if disk_hits != disk_deploys:
        raise AssertionError(f"expected {disk_deploys} disk-cache hits, got {disk_hits}")
    return results
