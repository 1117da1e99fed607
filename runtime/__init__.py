"""The embeddable wasmhive runtime.

::

    from wasmhive.runtime import Runtime

    async with Runtime() as rt:
        await rt.deploy("echo", "echo.wasm")
        print(await rt.invoke("echo", b"hello"))

Every error wasmhive raises derives from :class:`WasmhiveError`, importable
from here together with all its subclasses.
"""

from wasmhive.actors.errors import (
    AbiError,
    ActorCrashed,
    ActorKilled,
    AlreadyDeployed,
    CallTimeout,
    CircuitOpen,
    FuelExhausted,
    GuestError,
    GuestFault,
    GuestTrap,
    HostError,
    InvalidConfig,
    InvalidModule,
    MailboxFull,
    OutOfMemory,
    Overloaded,
    PayloadTooLarge,
    RuntimeClosed,
    UnknownFunction,
    WasmhiveError,
)
from wasmhive.actors.messages import ActorRef, ActorState, Down, ExitReason
from wasmhive.actors.monitor import Monitor

from .cache import CompileCache
from .config import DeployOptions, RuntimeConfig, default_cache_dir
from .deployment import FunctionStats
from .fetch import FetchPolicy
from .kv import MemoryKeyValueStore
from .runtime import Runtime, RuntimeStats
from .secrets import SecretStore

__all__ = [
    "AbiError",
    "ActorCrashed",
    "ActorKilled",
    "ActorRef",
    "ActorState",
    "AlreadyDeployed",
    "CallTimeout",
    "CircuitOpen",
    "CompileCache",
    "DeployOptions",
    "Down",
    "ExitReason",
    "FetchPolicy",
    "FuelExhausted",
    "FunctionStats",
    "GuestError",
    "GuestFault",
    "GuestTrap",
    "HostError",
    "InvalidConfig",
    "InvalidModule",
    "MailboxFull",
    "MemoryKeyValueStore",
    "Monitor",
    "OutOfMemory",
    "Overloaded",
    "PayloadTooLarge",
    "Runtime",
    "RuntimeClosed",
    "RuntimeConfig",
    "RuntimeStats",
    "SecretStore",
    "UnknownFunction",
    "WasmhiveError",
    "default_cache_dir",
]
