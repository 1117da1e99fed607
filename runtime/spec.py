"""From a compiled module and its options to an :class:`InstanceSpec` actors spawn from."""

from __future__ import annotations

from typing import Any

import wasmtime

from wasmhive.actors.errors import InvalidModule
from wasmhive.actors.host import HostServices, define_host_imports
from wasmhive.actors.instance import InstanceSpec
from wasmhive.actors.js import js_linker

from .config import DeployOptions, RuntimeConfig
from .module import inspect_module

__all__ = ["build_instance_spec", "build_js_spec"]


def build_instance_spec(
    name: str,
    module: wasmtime.Module,
    options: DeployOptions,
    config: RuntimeConfig,
    *,
    engine: wasmtime.Engine,
    services: HostServices,
    has_start_function: bool = True,
) -> InstanceSpec:
    """Check ``module`` against ABI v1, link its imports, and fix its limits.

    Raises :class:`InvalidModule` saying what to fix.
    """
    info = inspect_module(name, module)
    if info.initial_memory > options.memory_limit:
        raise InvalidModule(
            f"the module starts with {info.initial_memory} bytes of memory, over memory_limit={options.memory_limit}",
            function=name,
        )
    linker = wasmtime.Linker(engine)
    define_host_imports(linker, set(info.host_imports))
    if info.uses_wasi:
        linker.define_wasi()
    try:
        pre = linker.instantiate_pre(module)
    except wasmtime.WasmtimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidModule(f"the module's imports cannot be satisfied: {first}", function=name) from None
    return InstanceSpec(
        function=name,
        engine=engine,
        instance_pre=pre,
        services=services,
        uses_wasi=info.uses_wasi,
        has_initialize=info.has_initialize,
        has_init=info.has_init,
        command=info.command,
        starts_guest_code=has_start_function or info.has_initialize or info.has_init,
        call_path=config.call_path,
        **_limits(options, config),
    )


def build_js_spec(
    name: str,
    source: str,
    module: wasmtime.Module,
    options: DeployOptions,
    config: RuntimeConfig,
    *,
    engine: wasmtime.Engine,
    services: HostServices,
) -> InstanceSpec:
    """An :class:`InstanceSpec` running JavaScript ``source`` on the QuickJS reactor ``module``."""
    if "\0" in source:
        raise InvalidModule("the JavaScript source contains a NUL character", function=name)
    try:
        pre = js_linker(engine).instantiate_pre(module)
    except wasmtime.WasmtimeError as exc:
        raise InvalidModule(f"cannot link QuickJS: {exc}", function=name) from None
    return InstanceSpec(
        function=name,
        engine=engine,
        instance_pre=pre,
        services=services,
        uses_wasi=True,
        has_initialize=True,
        has_init=False,
        call_path="public",
        js_source=source,
        **_limits(options, config),
    )


def _limits(options: DeployOptions, config: RuntimeConfig) -> dict[str, Any]:
    """The InstanceSpec fields that come from the deployment's options and the runtime's config."""
    return {
        "timeout": options.call_timeout,
        "init_timeout": config.init_timeout,
        "tick": config.epoch_tick,
        "memory_limit": options.memory_limit,
        "fuel": options.fuel,
        "fuel_enabled": config.fuel,
        "max_payload_bytes": config.max_payload_bytes,
        "max_stream_bytes": config.max_stream_bytes,
        "max_table_elements": config.max_table_elements,
    }
