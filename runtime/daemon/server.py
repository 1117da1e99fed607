"""``wasmhive serve``: the daemon on trio, served by Hypercorn.

Start-up: open the registry in the data dir, bind, then deploy every
recorded version again (``/readyz`` says 503 until they are back) and the
config's bundled functions.

Shutdown on SIGTERM or SIGINT: stop accepting connections (idle keep-alive
connections close, busy ones get ``Connection: close``), let calls in
flight finish for ``server.shutdown_grace`` seconds, answer those still
running with 503 ``ShuttingDown``, then stop the actors and close the registry.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable
from functools import partial

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from wasmhive.runtime.runtime import Runtime

from .app import DaemonApp
from .banner import banner
from .config import DaemonConfig
from .metrics import DaemonMetrics
from .service import FunctionService
from .store import FunctionStore

__all__ = ["run_daemon", "serve"]

logger = logging.getLogger("wasmhive.daemon")


async def serve(
    config: DaemonConfig,
    *,
    on_ready: Callable[[list[str]], None] | None = None,
    shutdown: trio.Event | None = None,
) -> None:
    """Run the daemon until SIGTERM/SIGINT (or ``shutdown`` is set); see the module docstring.

    ``on_ready`` is called with the bound addresses once every function is loaded.
    """
    config.check_bind()
    data_dir = config.resolved_data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    store = FunctionStore(data_dir)
    try:
        async with Runtime(config.runtime_config()) as runtime:
            service = FunctionService(runtime, store, config)
            metrics = DaemonMetrics(service.version_stats, lambda: runtime.stats().cache)
            app = DaemonApp(service, config, metrics)
            stop = shutdown or trio.Event()

            async def shutdown_trigger() -> None:
                await stop.wait()
                app.draining = True
                logger.info("shutting down: %d calls in flight, grace %.1f s", app.in_flight, grace)

            grace = config.server.shutdown_grace
            hyper = _hypercorn_config(config)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_watch_signals, stop)
                binds = await nursery.start(_serve_http, app, hyper, shutdown_trigger)
                await service.restore()
                logger.info("ready on %s with %d functions", ", ".join(binds), len(store.functions()))
                if on_ready is not None:
                    on_ready(binds)
                await stop.wait()
                # Hypercorn stops accepting now and waits for open requests; after the grace
                # period, calls still running are cancelled and answered with 503.
                with trio.move_on_after(grace):
                    while app.in_flight:
                        await trio.sleep(0.01)
                app.cancel_calls()
                nursery.cancel_scope.deadline = trio.current_time() + 5.0  # answers take a moment to send
    finally:
        store.close()


async def _serve_http(
    app: DaemonApp,
    hyper: HypercornConfig,
    shutdown_trigger: Callable[[], object],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    await hypercorn_serve(app.asgi, hyper, shutdown_trigger=shutdown_trigger, task_status=task_status)  # type: ignore[arg-type]


async def _watch_signals(stop: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            logger.info("received %s", signal.Signals(signum).name)
            stop.set()


def _hypercorn_config(config: DaemonConfig) -> HypercornConfig:
    hyper = HypercornConfig()
    host = config.server.host
    hyper.bind = [f"[{host}]:{config.server.port}" if ":" in host else f"{host}:{config.server.port}"]
    hyper.accesslog = None  # the app writes one JSON line per invocation instead
    hyper.errorlog = logging.getLogger("wasmhive.daemon.http")
    hyper.graceful_timeout = config.server.shutdown_grace + 5.0
    hyper.keep_alive_timeout = 75.0  # longer than common load balancers' idle timeout
    hyper.h11_max_incomplete_size = 64 * 1024
    hyper.wsgi_max_body_size = config.server.max_body_bytes
    return hyper


def run_daemon(config: DaemonConfig) -> None:
    """Run :func:`serve` under trio, logging to stderr; prints ``listening on URL`` to stdout when ready."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    def ready(binds: list[str]) -> None:
        for url in binds:
            print(f"wasmhive: listening on {url}", flush=True)
        if config.deploy and binds:
            print(banner(config, binds[0]), flush=True)

    trio.run(partial(serve, config, on_ready=ready))
