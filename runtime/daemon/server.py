"""``wasmhive serve``: the daemon on trio, served by Hypercorn.

Start-up: open the registry in the data dir, bind, then deploy every
recorded version again (``/readyz`` says 503 until they are back) and the
config's bundled functions.

Shutdown on SIGTERM or SIGINT: stop accepting connections (idle keep-alive
connections close, busy ones close after their answer), let calls in
flight finish for ``server.shutdown_grace`` seconds, answer those still
running with 503 ``ShuttingDown``, then stop the actors and close the registry.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from wasmhive.runtime.runtime import Runtime

from .app import DaemonApp
from .banner import banner
from .config import ConfigError, DaemonConfig
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
    service: FunctionService | None = None
    app: DaemonApp | None = None
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
            requests = _Requests(app.asgi)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_watch_signals, stop)
                binds = await nursery.start(_serve_http, requests, hyper, shutdown_trigger)
                await service.restore()
                logger.info("ready on %s with %d functions", ", ".join(binds), len(store.functions()))
                if on_ready is not None:
                    on_ready(binds)
                await stop.wait()
                # Hypercorn stops accepting now and waits for open requests; after the grace
                # period, calls still running are cancelled and answered with 503.
                with trio.move_on_after(grace):
                    await requests.wait_idle()
                app.cancel_calls()
                # Answers take a moment to send.  Then stop Hypercorn (and the signal watcher)
                # rather than wait for it: it can hang on to a keep-alive connection whose next
                # request arrived as the shutdown began, unread, until its graceful_timeout.
                with trio.move_on_after(5.0):
                    await requests.wait_idle()
                nursery.cancel_scope.cancel()
    finally:
        if service is not None:
            service.close()  # (after the runtime: no actor calls the trace hook any more)
        if app is not None:
            app.log.close()
        store.close()


class _Requests:
    """The ASGI app, counting the HTTP requests whose call has not returned (answer not all sent)."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app
        self.active = 0
        self._idle = trio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1
            if not self.active:
                self._idle.set()

    async def wait_idle(self) -> None:
        """Return when no request is being answered."""
        while self.active:
            self._idle = trio.Event()
            await self._idle.wait()


async def _serve_http(
    app: _Requests,
    hyper: HypercornConfig,
    shutdown_trigger: Callable[[], object],
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    await hypercorn_serve(app, hyper, shutdown_trigger=shutdown_trigger, task_status=task_status)  # type: ignore[arg-type]


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
    """Run :func:`serve` under trio, logging to stderr; prints ``listening on URL`` to stdout when ready.

    Raises :class:`ConfigError` when a function the config deploys at start-up does not deploy.
    """
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    def ready(binds: list[str]) -> None:
        for url in binds:
            print(f"wasmhive: listening on {url}", flush=True)
        if config.deploy and binds:
            print(banner(config, binds[0]), flush=True)

    try:
        trio.run(partial(serve, config, on_ready=ready))
    except BaseExceptionGroup as group:  # a bundled function that does not deploy: the config is wrong
        matched, _ = group.split(ConfigError)
        if matched is None:
            raise
        error: BaseException = matched
        while isinstance(error, BaseExceptionGroup):
            error = error.exceptions[0]
        raise error from None
