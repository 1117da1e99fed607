"""Configuration of a runtime and of one deployment, as msgspec Structs."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import msgspec

from wasmhive.actors.actor import ActorPolicy, ExecutionMode, Overflow
from wasmhive.actors.errors import InvalidConfig
from wasmhive.actors.instance import CallPath

__all__ = ["DeployOptions", "RuntimeConfig", "default_cache_dir"]

KiB = 1024
MiB = 1024 * KiB

#: Default call timeouts per execution mode (seconds).
DEFAULT_TIMEOUTS: dict[str, float] = {"inline": 0.010, "thread": 30.0}


def default_cache_dir() -> Path:
    """``$WASMHIVE_CACHE_DIR``, else ``$XDG_CACHE_HOME/wasmhive``, else ``~/.cache/wasmhive``."""
    explicit = os.environ.get("WASMHIVE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "wasmhive"


class RuntimeConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Settings of one :class:`~wasmhive.runtime.Runtime` and its wasmtime Engine."""

    #: Compile cache directory; None means :func:`default_cache_dir`.
    cache_dir: str | None = None
    #: Keep compiled modules on disk at all.
    cache_enabled: bool = True
    #: Epoch tick of the timeout ticker (seconds).  Timeouts are rounded up to ticks.
    epoch_tick: float = 0.001
    #: Largest request payload, reply, or single stream chunk (bytes).
    max_payload_bytes: int = 8 * MiB
    #: Total bytes one call may emit as stream chunks.
    max_stream_bytes: int = 64 * MiB
    #: Largest table (elements) a guest may have.
    max_table_elements: int = 100_000
    #: Virtual address space reserved per linear memory.  Small, so that tens of
    #: thousands of instances fit in one process; memories grow past it by moving.
    memory_reservation: int = 1 * MiB
    #: Guard region after each linear memory.
    memory_guard_size: int = 64 * KiB
    #: Extra room reserved when a memory grows, so it does not move on every grow.
    memory_reservation_for_growth: int = 1 * MiB
    #: Enable fuel metering in the engine, needed for per-deployment ``fuel``.
    #: Off by default: metering makes every module slower to compile and run
    #: (measured on the QuickJS module: about 1.3x the compile time, 18% larger).
    fuel: bool = False
    #: ``fast`` (prebuilt ctypes calls) or ``public`` (wasmtime-py's Func.__call__).
    call_path: CallPath = "fast"
    #: Time a guest's ``_initialize`` and ``wh_init`` together may take when an
    #: actor starts (seconds).  Thread actors start on their own thread, inline
    #: actors on the event-loop thread.
    init_timeout: float = 1.0
    #: How long ``Runtime`` waits at close for guest calls in flight (seconds)
    #: before interrupting them.
    shutdown_grace: float = 1.0
    #: A JSON or TOML file of secrets (``name = "value"``), added to those
    #: from ``WASMHIVE_SECRET_<NAME>`` environment variables.
    secrets_file: str | None = None

    def __post_init__(self) -> None:
        _positive("epoch_tick", self.epoch_tick)
        _positive("init_timeout", self.init_timeout)
        _positive("max_payload_bytes", self.max_payload_bytes)
        _positive("max_stream_bytes", self.max_stream_bytes)
        _positive("max_table_elements", self.max_table_elements)
        if self.memory_reservation < 0 or self.memory_guard_size < 0 or self.memory_reservation_for_growth < 0:
            raise InvalidConfig("memory_reservation, memory_guard_size and memory_reservation_for_growth must be >= 0")
        if self.shutdown_grace < 0:
            raise InvalidConfig(f"shutdown_grace must be >= 0, got {self.shutdown_grace}")

    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir) if self.cache_dir else default_cache_dir()


class DeployOptions(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Per-deployment options; see :meth:`Runtime.deploy`."""

    mode: ExecutionMode = "thread"
    #: Call timeout in seconds; None means 10 ms for ``inline`` and 30 s for ``thread``.
    timeout: float | None = None
    #: Linear memory cap in bytes.
    memory_limit: int = 64 * MiB
    #: Instructions ("fuel") per call; None means unmetered.
    fuel: int | None = None
    mailbox_size: int = 64
    overflow: Overflow = "wait"
    #: Longest wait for mailbox space under ``overflow="wait"`` (seconds).
    mailbox_wait: float = 1.0
    #: Number of actors (instances) serving the function.
    instances: int = 1

    def __post_init__(self) -> None:
        if self.timeout is not None:
            _positive("timeout", self.timeout)
        if self.memory_limit < 65536:
            raise InvalidConfig(f"memory_limit must be at least 65536 bytes (one wasm page), got {self.memory_limit}")
        if self.fuel is not None:
            _positive("fuel", self.fuel)
        if self.mailbox_size < 0:
            raise InvalidConfig(f"mailbox_size must be >= 0, got {self.mailbox_size}")
        if not (self.mailbox_wait >= 0 and math.isfinite(self.mailbox_wait)):
            raise InvalidConfig(f"mailbox_wait must be >= 0 and finite, got {self.mailbox_wait}")
        if self.instances < 1:
            raise InvalidConfig(f"instances must be >= 1, got {self.instances}")

    @property
    def call_timeout(self) -> float:
        """The timeout in force: the explicit one or the mode's default."""
        return self.timeout if self.timeout is not None else DEFAULT_TIMEOUTS[self.mode]

    @property
    def policy(self) -> ActorPolicy:
        return ActorPolicy(
            mode=self.mode, mailbox_size=self.mailbox_size, overflow=self.overflow, mailbox_wait=self.mailbox_wait
        )

    @classmethod
    def build(cls, **options: Any) -> DeployOptions:
        """Validate keyword options (``None`` means default) into a DeployOptions."""
        given = {k: v for k, v in options.items() if v is not None}
        try:
            return msgspec.convert(given, cls)
        except msgspec.ValidationError as exc:
            raise InvalidConfig(f"invalid deploy option: {exc}") from None


def _positive(name: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise InvalidConfig(f"{name} must be > 0 and finite, got {value}")
