"""Stress scenarios: what to deploy, the load, the faults and the checks, read from TOML.

A scenario is a tree of msgspec Structs.  :func:`load_scenario` reads a TOML
file with :func:`msgspec.toml.decode` and validates it; every problem raises
:class:`ScenarioError` naming the field (``faults[1].window``).  The reference
is docs/stress.md.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import msgspec

from wasmhive.actors.abi import KNOWN_OPS
from wasmhive.runtime.daemon.config import FunctionOptions

__all__ = [
    "FAULT_KINDS",
    "REMOTE_OPS",
    "WHOLE_TARGET_KINDS",
    "ChecksSpec",
    "FaultKind",
    "FaultSpec",
    "FunctionSpec",
    "LoadSpec",
    "PayloadSpec",
    "RuntimeSpec",
    "Scenario",
    "ScenarioError",
    "load_scenario",
    "parse_scenario",
]

FaultKind = Literal[
    "timeout", "oom", "fuel", "kill", "host", "flood", "daemon_kill", "slow_connection", "reset_connection"
]
#: The host calls a ``host`` fault covers unless its ``ops`` says otherwise: those that reach
#: a service that can be slow or fail (not log, time or random).
REMOTE_OPS: frozenset[str] = frozenset({"kv.get", "kv.set", "kv.delete", "kv.incr", "secret.get", "http.fetch"})
#: Every fault kind, in the order docs/stress.md describes them (the last three: daemon target only).
FAULT_KINDS: tuple[str, ...] = (
    "timeout",
    "oom",
    "fuel",
    "kill",
    "host",
    "flood",
    "daemon_kill",
    "slow_connection",
    "reset_connection",
)
#: Faults that hit the whole daemon or its connections, not one function (``function`` is refused).
WHOLE_TARGET_KINDS = frozenset({"daemon_kill", "slow_connection"})


class ScenarioError(ValueError):
    """A scenario that cannot run; the message names the field (``faults[0].rate``)."""


class PayloadSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How request payloads are made.  Every payload embeds the request's sequence number, so all differ.

    ``random``: ``wh-stress <seq> `` then random bytes up to ``size``.  ``json``:
    ``{"seq": <seq>, "pad": "..."}`` up to ``size``.  ``template``: ``template``
    with ``{seq}`` replaced (it must contain ``{seq}``).
    """

    kind: Literal["random", "json", "template"] = "random"
    size: int = 64
    template: str | None = None


class FunctionSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A function under load: deployed by the harness (``module``) or already deployed (no ``module``)."""

    name: str
    #: A module path, relative to the scenario file.  None: the function is already deployed.
    module: str | None = None
    #: Whether running a request twice is harmless.  If not, the checker requires at most one execution.
    idempotent: bool = False
    #: Share of the load (requests pick a function with probability weight / total).
    weight: float = 1.0
    #: Payloads for this function (default: ``load.payload``).
    payload: PayloadSpec | None = None
    #: Deploy options: the same struct as a daemon function's (``Runtime.deploy``'s keywords).
    options: FunctionOptions = FunctionOptions()


class LoadSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Open loop (Poisson arrivals at ``rate`` per second) or closed loop (``concurrency`` callers)."""

    mode: Literal["open", "closed"] = "open"
    rate: float | None = None
    concurrency: int | None = None
    payload: PayloadSpec = PayloadSpec()


class FaultSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One fault: its kind, how often (``probability`` per request or ``rate`` per second), and when.

    ``window = [start, end]`` in seconds after the warm-up (default: the whole run).
    Kind-specific fields: ``during_call`` (kill), ``messages`` (flood),
    ``latency``/``jitter``/``error`` (host), ``latency``/``jitter``
    (slow_connection), ``restart_after`` (daemon_kill).

    A ``host`` fault works like a toxiproxy toxic with a toxicity: ``probability``
    (default: every call) is the share of the function's key-value host calls in
    the window that it hits.  A hit call sleeps ``latency`` +/- ``jitter``, then
    fails if ``error`` is set; the other calls are untouched.
    """

    kind: FaultKind
    #: The function it hits (default: any function of the scenario).
    function: str | None = None
    #: Per request (timeout, oom, fuel, kill, reset_connection), or, for host, the share of
    #: key-value host calls the fault hits (default: every call in the window).
    probability: float | None = None
    rate: float | None = None
    window: tuple[float, float] | None = None
    #: kill: during a call (True) or between calls (False).
    during_call: bool = False
    #: flood: extra messages sent to one actor (default: its mailbox size).
    messages: int | None = None
    #: host: seconds added to every key-value host call the fault hits, +/- ``jitter``;
    #: slow_connection: seconds added to every chunk the daemon sends back, +/- ``jitter``.
    latency: float = 0.0
    jitter: float = 0.0
    #: host: every call the fault hits then fails: it returns an error result to the guest
    #: (``error``) or raises in the host (``crash``: a HostError that ends the call and the
    #: actor).  None: no failure, only the latency.
    error: Literal["error", "crash"] | None = None
    #: host: the host-call operations it covers (default :data:`REMOTE_OPS`: key-value,
    #: ``secret.get`` and ``http.fetch``).
    ops: tuple[str, ...] | None = None
    #: daemon_kill: seconds between the SIGKILL and the restart (default 0.5).
    restart_after: float | None = None


class RuntimeSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """``RuntimeConfig`` fields for the harness's own runtime (embedded target)."""

    fuel: bool = False
    epoch_tick: float | None = None
    shutdown_grace: float | None = None
    init_timeout: float | None = None
    max_payload_bytes: int | None = None


class ChecksSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Tolerances of the checker's performance invariants (docs/stress.md, "Recovery")."""

    #: A window is back to baseline if its success rate >= baseline rate - this.
    success_tolerance: float = 0.02
    #: ... and its p99 <= max(baseline p99 * this, baseline p99 + p99_slack).
    p99_factor: float = 1.5
    p99_slack: float = 0.002
    #: Windows with fewer answers than this say nothing (too few to judge).
    min_window_answers: int = 5
    #: Recovery must take at most this many seconds (None: any time; not recovering is unknown).
    recovery_within: float | None = None
    #: If set: p99 of successful calls over the whole run <= this x the baseline p99 (an invariant).
    max_p99_ratio: float | None = None


class Scenario(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A whole stress scenario.  Times are seconds; fault windows count from the end of the warm-up."""

    functions: list[FunctionSpec]
    load: LoadSpec
    faults: list[FaultSpec] = []
    seed: int = 0
    #: Measured seconds (after the warm-up).
    duration: float = 10.0
    #: Seconds of load before measuring; not counted, no faults.
    warmup: float = 1.0
    #: Answers later than this (seconds after sending) are counted as late.
    deadline: float = 2.0
    #: A request with no answer ``deadline + grace`` seconds after it was sent is lost.
    grace: float = 1.0
    #: Width of the statistics windows (seconds).
    window: float = 1.0
    runtime: RuntimeSpec = RuntimeSpec()
    checks: ChecksSpec = ChecksSpec()
    #: Where module paths are relative to (the scenario file's folder; not read from TOML).
    base_dir: str = "."

    def function(self, name: str) -> FunctionSpec:
        """The function called ``name``."""
        for spec in self.functions:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def fault_windows(self) -> list[tuple[float, float]]:
        """The windows of faults that have one (seconds after the warm-up), sorted."""
        return sorted(f.window for f in self.faults if f.window is not None)

    def with_overrides(
        self,
        *,
        duration: float | None = None,
        rate: float | None = None,
        concurrency: int | None = None,
        seed: int | None = None,
    ) -> Scenario:
        """A copy with command-line overrides applied (``rate`` makes it open loop, ``concurrency`` closed)."""
        load = self.load
        if rate is not None:
            load = msgspec.structs.replace(load, mode="open", rate=rate, concurrency=None)
        if concurrency is not None:
            load = msgspec.structs.replace(load, mode="closed", concurrency=concurrency, rate=None)
        changed = msgspec.structs.replace(
            self,
            load=load,
            duration=self.duration if duration is None else duration,
            seed=self.seed if seed is None else seed,
        )
        validate(changed)
        return changed


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario TOML file; module paths become relative to its folder."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ScenarioError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_scenario(data, base_dir=path.resolve().parent)


def parse_scenario(data: bytes | str, *, base_dir: str | Path = ".") -> Scenario:
    """Decode and validate scenario TOML."""
    if isinstance(data, str):
        data = data.encode()
    try:
        raw = msgspec.toml.decode(data)
    except msgspec.DecodeError as exc:
        raise ScenarioError(f"not valid TOML: {exc}") from None
    if not isinstance(raw, dict):
        raise ScenarioError("a scenario is a TOML table")
    raw["base_dir"] = str(base_dir)
    try:
        scenario = msgspec.convert(raw, Scenario)
    except msgspec.ValidationError as exc:  # (a policy's own InvalidConfig too: it is a ValueError)
        raise ScenarioError(_field_message(str(exc))) from None
    validate(scenario)
    return scenario


def _field_message(message: str) -> str:
    # msgspec says "Expected `float`, got `str` - at `$.faults[0].rate`": name the field first.
    if " - at `$." in message:
        text, _, where = message.partition(" - at `$.")
        return f"{where.rstrip('`')}: {text}"
    return message


def validate(scenario: Scenario) -> None:
    """Check what the types alone do not; raise :class:`ScenarioError` naming the field."""
    _positive("duration", scenario.duration)
    _at_least("warmup", scenario.warmup, 0.0)
    _positive("deadline", scenario.deadline)
    _at_least("grace", scenario.grace, 0.0)
    _positive("window", scenario.window)
    if not scenario.functions:
        raise ScenarioError("functions: at least one function is needed")
    names: set[str] = set()
    for i, fn in enumerate(scenario.functions):
        where = f"functions[{i}]"
        if fn.name in names:
            raise ScenarioError(f"{where}.name: {fn.name!r} appears twice")
        names.add(fn.name)
        _positive(f"{where}.weight", fn.weight)
        if fn.module is not None and not (Path(scenario.base_dir) / fn.module).is_file():
            raise ScenarioError(f"{where}.module: no file {fn.module!r} next to the scenario")
        if fn.payload is not None:
            _payload(f"{where}.payload", fn.payload)
        if fn.options.fuel is not None and not scenario.runtime.fuel:
            raise ScenarioError(f"{where}.options.fuel: needs runtime.fuel = true")
    _load(scenario.load)
    for i, fault in enumerate(scenario.faults):
        _fault(f"faults[{i}]", fault, scenario, names)
    checks = scenario.checks
    _at_least("checks.success_tolerance", checks.success_tolerance, 0.0)
    _at_least("checks.p99_factor", checks.p99_factor, 1.0)
    _at_least("checks.p99_slack", checks.p99_slack, 0.0)
    if checks.min_window_answers < 1:
        raise ScenarioError("checks.min_window_answers: must be >= 1")
    if checks.recovery_within is not None:
        _positive("checks.recovery_within", checks.recovery_within)
    if checks.max_p99_ratio is not None:
        _at_least("checks.max_p99_ratio", checks.max_p99_ratio, 1.0)


def _load(load: LoadSpec) -> None:
    if load.mode == "open":
        if load.rate is None:
            raise ScenarioError("load.rate: an open-loop load needs a rate (requests per second)")
        _positive("load.rate", load.rate)
        if load.concurrency is not None:
            raise ScenarioError("load.concurrency: only for mode = 'closed'")
    else:
        if load.concurrency is None or load.concurrency < 1:
            raise ScenarioError("load.concurrency: a closed-loop load needs concurrency >= 1")
        if load.rate is not None:
            raise ScenarioError("load.rate: only for mode = 'open'")
    _payload("load.payload", load.payload)


def _payload(where: str, payload: PayloadSpec) -> None:
    if payload.kind == "template":
        if payload.template is None or "{seq}" not in payload.template:
            raise ScenarioError(f"{where}.template: a template payload needs a template containing {{seq}}")
    elif payload.size < 32:
        raise ScenarioError(f"{where}.size: must be >= 32 (room for the sequence number)")


_RATE_KINDS = {"timeout", "oom", "fuel", "kill", "flood", "daemon_kill"}
_PROBABILITY_KINDS = {"timeout", "oom", "fuel", "kill", "host", "reset_connection"}


def _fault(where: str, fault: FaultSpec, scenario: Scenario, names: set[str]) -> None:
    kind = fault.kind
    if fault.function is not None and kind in WHOLE_TARGET_KINDS:
        raise ScenarioError(f"{where}.function: a {kind} fault hits the whole daemon, not one function")
    if fault.function is not None and fault.function not in names:
        raise ScenarioError(f"{where}.function: {fault.function!r} is not one of the scenario's functions")
    if fault.probability is not None:
        if kind not in _PROBABILITY_KINDS:
            raise ScenarioError(f"{where}.probability: a {kind} fault takes {_takes(kind)}, not a probability")
        if not 0.0 < fault.probability <= 1.0:
            raise ScenarioError(f"{where}.probability: must be in (0, 1], got {fault.probability}")
    if fault.rate is not None:
        if kind not in _RATE_KINDS:
            raise ScenarioError(f"{where}.rate: a {kind} fault takes {_takes(kind)}, not a rate")
        _positive(f"{where}.rate", fault.rate)
    if kind == "host":
        _latency(where, fault)
        if fault.latency == 0.0 and fault.error is None:
            raise ScenarioError(f"{where}: a host fault needs a latency or an error")
    elif kind == "slow_connection":
        if fault.latency <= 0.0:
            raise ScenarioError(f"{where}.latency: a slow_connection fault needs a latency > 0 (seconds)")
        _latency(where, fault)
    elif (fault.probability is None) == (fault.rate is None):
        raise ScenarioError(f"{where}: give exactly one of probability (per request) and rate (per second)")
    if fault.window is not None:
        start, end = fault.window
        if not (0.0 <= start < end <= scenario.duration):
            raise ScenarioError(
                f"{where}.window: must be [start, end] with 0 <= start < end <= duration ({scenario.duration:g})"
            )
    if fault.messages is not None and (kind != "flood" or fault.messages < 1):
        raise ScenarioError(f"{where}.messages: only for flood faults, and >= 1")
    if fault.restart_after is not None:
        if kind != "daemon_kill":
            raise ScenarioError(f"{where}.restart_after: only for daemon_kill faults")
        _at_least(f"{where}.restart_after", fault.restart_after, 0.0)
    if (fault.latency or fault.jitter) and kind not in ("host", "slow_connection"):
        raise ScenarioError(f"{where}.latency: only for host and slow_connection faults")
    if fault.error is not None and kind != "host":
        raise ScenarioError(f"{where}.error: only for host faults")
    if fault.ops is not None:
        if kind != "host":
            raise ScenarioError(f"{where}.ops: only for host faults")
        unknown = sorted(set(fault.ops) - KNOWN_OPS)
        if unknown or not fault.ops:
            raise ScenarioError(
                f"{where}.ops: must name host-call operations ({', '.join(sorted(KNOWN_OPS))}), got {list(fault.ops)}"
            )
    if fault.during_call and kind != "kill":
        raise ScenarioError(f"{where}.during_call: only for kill faults")
    if kind == "fuel" and not scenario.runtime.fuel:
        raise ScenarioError(f"{where}.kind: fuel faults need runtime.fuel = true (fuel metering)")


def _takes(kind: str) -> str:
    if kind == "slow_connection":
        return "a latency (and a window)"
    return "a rate" if kind in _RATE_KINDS else "a probability"


def _latency(where: str, fault: FaultSpec) -> None:
    _at_least(f"{where}.latency", fault.latency, 0.0)
    if not 0.0 <= fault.jitter <= fault.latency:
        raise ScenarioError(f"{where}.jitter: must be in [0, latency]")


def _positive(name: str, value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ScenarioError(f"{name}: must be a finite number > 0, got {value}")


def _at_least(name: str, value: float, low: float) -> None:
    if not (value >= low and math.isfinite(value)):
        raise ScenarioError(f"{name}: must be a finite number >= {low:g}, got {value}")
