"""The wasmtime Engine of a runtime and the epoch ticker that enforces timeouts."""

from __future__ import annotations

import json
import platform
import threading
import time
from importlib import metadata

import wasmtime

from .config import RuntimeConfig

__all__ = ["EpochTicker", "build_engine"]


def build_engine(config: RuntimeConfig) -> tuple[wasmtime.Engine, str]:
    """Create the Engine for ``config``.

    Returns the engine and a fingerprint of everything that makes a compiled
    module valid for it (wasmtime version, machine, settings): the compile
    cache keys on it.
    """
    settings = {
        "epoch_interruption": True,
        "multi_memory": False,
        "consume_fuel": config.fuel,
        "memory_reservation": config.memory_reservation,
        "memory_guard_size": config.memory_guard_size,
        "memory_reservation_for_growth": config.memory_reservation_for_growth,
    }
    wasm_config = wasmtime.Config()
    wasm_config.epoch_interruption = True
    # One linear memory per module: memory_limit caps it (more would multiply the cap).
    wasm_config.wasm_multi_memory = False
    wasm_config.consume_fuel = config.fuel
    wasm_config.memory_reservation = config.memory_reservation
    wasm_config.memory_guard_size = config.memory_guard_size
    wasm_config.memory_reservation_for_growth = config.memory_reservation_for_growth
    try:
        version = metadata.version("wasmtime")
    except metadata.PackageNotFoundError:  # pragma: no cover
        version = "unknown"
    fingerprint = json.dumps(
        {"wasmtime": version, "machine": platform.machine(), "system": platform.system(), **settings},
        sort_keys=True,
    )
    return wasmtime.Engine(wasm_config), fingerprint


class EpochTicker:
    """One thread that advances the engine's epoch every ``tick`` seconds.

    Each guest call sets its store's deadline a number of ticks ahead, so a
    call that runs too long traps with an interrupt within about one tick of
    its timeout.  Actors bracket guest code with :meth:`begin` and :meth:`end`
    (always on the event-loop thread).  The ticker never parks while guest code
    runs; it parks after ``linger`` seconds with none, and :meth:`begin` wakes
    it, so an idle runtime costs no wakeups.
    """

    def __init__(self, engine: wasmtime.Engine, tick: float, linger: float = 1.0) -> None:
        self.tick = tick
        self._engine = engine
        self._linger = linger
        self._cond = threading.Condition()
        self._parked = True
        self._wanted = False
        self._active = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="wasmhive-epoch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def begin(self) -> None:
        """Guest code is about to run: keep the epoch advancing until :meth:`end`."""
        self._active += 1
        self._wanted = True
        if self._parked:
            with self._cond:
                self._parked = False
                self._cond.notify()

    def end(self) -> None:
        """Guest code started by :meth:`begin` has stopped running."""
        self._active -= 1

    def stop(self) -> None:
        """Stop and join the ticker thread."""
        with self._cond:
            self._stopping = True
            self._parked = False
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        increment = self._engine.increment_epoch
        idle_since = time.monotonic()
        while True:
            with self._cond:
                while self._parked and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
            time.sleep(self.tick)
            increment()
            if self._wanted or self._active:
                self._wanted = False
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > self._linger:
                with self._cond:
                    # Park first, then look again: a begin() racing with us
                    # either sees _parked and wakes us, or is seen here.
                    self._parked = True
                    if self._wanted or self._active:
                        self._parked = False
