"""WASM actors: one guest instance, a bounded mailbox, one message at a time.

This package is the layer under :mod:`wasmhive.runtime`: the actor, the guest
instance and its ABI v1 host side, and the messages and errors that cross a
mailbox.  Most programs use :class:`wasmhive.runtime.Runtime` instead.
"""

from .actor import Actor, ActorPolicy, ExecutionMode, Overflow
from .errors import (
    AbiError,
    ActorCrashed,
    ActorKilled,
    AlreadyDeployed,
    CallTimeout,
    CircuitOpen,
    ErrorInfo,
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
    error_from_info,
)
from .instance import InstanceSpec, WasmInstance
from .messages import ActorRef, ActorState, Down, ExitReason, Failed, Invoke, Reply
from .monitor import Monitor

__all__ = [
    "AbiError",
    "Actor",
    "ActorCrashed",
    "ActorKilled",
    "ActorPolicy",
    "ActorRef",
    "ActorState",
    "AlreadyDeployed",
    "CallTimeout",
    "CircuitOpen",
    "Down",
    "ErrorInfo",
    "ExecutionMode",
    "ExitReason",
    "Failed",
    "FuelExhausted",
    "GuestError",
    "GuestFault",
    "GuestTrap",
    "HostError",
    "InstanceSpec",
    "InvalidConfig",
    "InvalidModule",
    "Invoke",
    "MailboxFull",
    "Monitor",
    "OutOfMemory",
    "Overflow",
    "Overloaded",
    "PayloadTooLarge",
    "Reply",
    "RuntimeClosed",
    "UnknownFunction",
    "WasmInstance",
    "WasmhiveError",
    "error_from_info",
]
