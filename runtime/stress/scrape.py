"""Samples of a daemon's functions from its ``/metrics`` page (Prometheus text format).

:class:`MetricsSampler` turns one scrape into a :class:`FunctionState` per
function, summing the series of the versions it is told to follow (those of
the ``latest`` alias: a restarted daemon may run older versions side by side).
Counters (crashes, restarts, retries, rejections) are carried across daemon
restarts, which start them again at zero, so they only grow over a run.
While the daemon cannot be read (:meth:`mark_down`), the last states are kept
and marked ``stale``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

import msgspec
from prometheus_client.parser import text_string_to_metric_families

from .target import FunctionState

__all__ = ["MetricsSampler"]

_GAUGES = {"wasmhive_pool_size": "pool_size", "wasmhive_instances": "instances"}
_COUNTERS = {
    "wasmhive_crashes": "crashes",
    "wasmhive_restarts": "restarts",
    "wasmhive_retries": "retries",
    "wasmhive_rejections": "rejections",
}


class MetricsSampler:
    """The latest state of each function, from the scrapes it was given."""

    def __init__(self, functions: Iterable[str]) -> None:
        self.functions = list(functions)
        #: Function -> the versions (as label values) whose series count.  Empty: every version.
        self.versions: dict[str, set[str]] = {}
        self._states: dict[str, FunctionState] = {}
        self._raw_last: dict[tuple[str, str], float] = {}
        self._carried: dict[tuple[str, str], float] = defaultdict(float)
        #: Scrapes taken, and scrapes that failed.
        self.scrapes = 0
        self.failures = 0

    def follow(self, versions: Mapping[str, Iterable[int | str]]) -> None:
        """Count only these versions of each function from now on."""
        self.versions = {name: {str(v) for v in vs} for name, vs in versions.items()}

    def update(self, text: str) -> None:
        """Read one ``/metrics`` page."""
        self.scrapes += 1
        gauges: dict[str, dict[str, float]] = {f: defaultdict(float) for f in self.functions}
        counters: dict[str, dict[str, float]] = {f: defaultdict(float) for f in self.functions}
        breaker: dict[str, str] = {}
        in_flight: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                function = sample.labels.get("function")
                if function not in gauges:
                    continue
                if sample.name == "wasmhive_in_flight_requests":
                    in_flight[function] = sample.value
                    continue
                if not self._counts(function, sample.labels.get("version", "")):
                    continue
                if sample.name in _GAUGES:
                    gauges[function][_GAUGES[sample.name]] += sample.value
                elif family.name in _COUNTERS and sample.name.endswith("_total"):
                    counters[function][_COUNTERS[family.name]] += sample.value
                elif sample.name == "wasmhive_breaker_state" and sample.value == 1.0:
                    breaker.setdefault(function, sample.labels.get("state", "?"))
        for name in self.functions:
            total = {field: int(self._carry(name, field, counters[name][field])) for field in _COUNTERS.values()}
            self._states[name] = FunctionState(
                pool_size=int(gauges[name]["pool_size"]),
                instances=int(gauges[name]["instances"]),
                in_flight=int(in_flight.get(name, 0)),
                breaker=breaker.get(name),
                crashes=total["crashes"],
                restarts=total["restarts"],
                retries=total["retries"],
                rejections=total["rejections"],
            )

    def _counts(self, function: str, version: str) -> bool:
        wanted = self.versions.get(function)
        return not wanted or version in wanted

    def _carry(self, function: str, field: str, raw: float) -> float:
        key = (function, field)
        last = self._raw_last.get(key, 0.0)
        if raw < last:  # the daemon restarted (or we now follow another version): keep what was counted
            self._carried[key] += last
        self._raw_last[key] = raw
        return self._carried[key] + raw

    def mark_down(self) -> None:
        """The daemon could not be read: keep the last states, marked stale."""
        self.failures += 1
        self._states = {name: msgspec.structs.replace(s, stale=True) for name, s in self._states.items()}

    def states(self) -> dict[str, FunctionState]:
        """Each function's last known state."""
        return dict(self._states)
