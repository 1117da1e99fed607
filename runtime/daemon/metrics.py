"""Prometheus metrics of the wasmhive daemon, served at ``/metrics``.

Two kinds of series live in one private :class:`~prometheus_client.CollectorRegistry`
per :class:`DaemonMetrics`:

- request series, updated by the HTTP layer on every invoke
  (:meth:`DaemonMetrics.request_started` / :meth:`DaemonMetrics.request_finished`):
  ``wasmhive_requests_total``, ``wasmhive_request_duration_seconds`` and
  ``wasmhive_in_flight_requests``;
- runtime series, read at scrape time from the deployments' :class:`FunctionStats`
  and the compile cache counters: pool sizes, live actors, mailbox depth, breaker
  state, restarts, crashes, retries, cold starts, rejections, calls, scaling, and
  compile cache hits and misses.

A failing source is logged and its families are left out of that scrape; the
rest of ``/metrics`` is still served.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..deployment import FunctionStats

__all__ = [
    "BREAKER_STATES",
    "LATENCY_BUCKETS",
    "DaemonMetrics",
    "VersionStats",
]

log = logging.getLogger(__name__)

#: Buckets of ``wasmhive_request_duration_seconds``, in seconds.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

#: The breaker states of ``wasmhive_breaker_state`` (the names of ``BreakerState``).
BREAKER_STATES: tuple[str, ...] = ("CLOSED", "OPEN", "HALF_OPEN", "DISABLED", "FORCED_OPEN", "METRICS_ONLY")


class VersionStats(NamedTuple):
    """The runtime counters of one version of a daemon function.

    ``stats`` are those of the runtime deployment behind it (``"echo.3"`` for
    ``function="echo"``, ``version=3``).
    """

    function: str
    version: int
    stats: FunctionStats


#: Gauges read from FunctionStats: (metric name, HELP, attribute).
_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("wasmhive_pool_size", "Actors the pool keeps (live plus restarting).", "pool_size"),
    ("wasmhive_instances", "Live actors.", "instances"),
    (
        "wasmhive_pool_utilization",
        "In-flight calls over pool capacity, averaged over the pool's stable window.",
        "utilization",
    ),
    ("wasmhive_mailbox_depth", "Messages waiting in the actors' mailboxes.", "queued"),
)

#: Counters read from FunctionStats: (metric name, HELP, attribute).
_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("wasmhive_restarts_total", "Actor restarts.", "restarts"),
    ("wasmhive_crashes_total", "Actor crashes (trap, timeout, out of memory or fuel, host fault).", "crashes"),
    ("wasmhive_retries_total", "Calls retried by the retry policy.", "retries"),
    ("wasmhive_cold_starts_total", "Actors started from a pool scaled to zero.", "cold_starts"),
    (
        "wasmhive_rejections_total",
        "Calls refused without running: bulkhead, open breaker, full mailbox, empty pool.",
        "rejections",
    ),
    ("wasmhive_calls_total", "Calls handled by the function's actors.", "calls"),
    ("wasmhive_scale_ups_total", "Times the pool grew.", "scale_ups"),
    ("wasmhive_scale_downs_total", "Times the pool shrank.", "scale_downs"),
)

_VERSION_LABELS = ("function", "version")


class _RuntimeCollector(Collector):
    """Reads the deployments' stats and the compile cache counters at scrape time."""

    def __init__(
        self,
        source: Callable[[], Iterable[VersionStats]],
        cache: Callable[[], Mapping[str, int]],
    ) -> None:
        self._source = source
        self._cache = cache

    def describe(self) -> Iterable[Metric]:
        """The families this collector yields, without samples (no call to the sources)."""
        for name, help_text, _ in _GAUGES:
            yield GaugeMetricFamily(name, help_text, labels=_VERSION_LABELS)
        yield GaugeMetricFamily("wasmhive_breaker_state", "", labels=(*_VERSION_LABELS, "state"))
        for name, help_text, _ in _COUNTERS:
            yield CounterMetricFamily(name, help_text, labels=_VERSION_LABELS)
        yield CounterMetricFamily("wasmhive_compile_cache_hits_total", "", labels=("tier",))
        yield CounterMetricFamily("wasmhive_compile_cache_misses_total", "")
        yield CounterMetricFamily("wasmhive_compile_cache_rebuilt_total", "")

    def collect(self) -> Iterable[Metric]:
        """The runtime families; a failing source is logged and its families are skipped."""
        families: list[Metric] = []
        try:
            families.extend(self._version_families())
        except Exception:
            log.exception("metrics: reading the functions' stats failed; their series are left out of this scrape")
        try:
            families.extend(self._cache_families())
        except Exception:
            log.exception("metrics: reading the compile cache counters failed; left out of this scrape")
        return families

    def _version_families(self) -> list[Metric]:
        # Built whole before anything is returned: a source failing half-way yields nothing.
        gauges = [(GaugeMetricFamily(name, h, labels=_VERSION_LABELS), attr) for name, h, attr in _GAUGES]
        counters = [(CounterMetricFamily(name, h, labels=_VERSION_LABELS), attr) for name, h, attr in _COUNTERS]
        breaker = GaugeMetricFamily(
            "wasmhive_breaker_state",
            "Circuit breaker state: 1 for the current state, 0 for the others.",
            labels=(*_VERSION_LABELS, "state"),
        )
        seen: set[tuple[str, int]] = set()
        for item in self._source():
            key = (item.function, item.version)
            if key in seen:
                log.warning("metrics: %s version %d reported twice; the repeat is ignored", *key)
                continue
            seen.add(key)
            labels = [item.function, str(item.version)]
            stats = item.stats
            for gauge, attr in gauges:
                gauge.add_metric(labels, float(getattr(stats, attr)))
            for counter, attr in counters:
                counter.add_metric(labels, float(getattr(stats, attr)))
            current = stats.breaker_state
            if current is not None:
                states = BREAKER_STATES if current in BREAKER_STATES else (*BREAKER_STATES, current)
                for state in states:
                    breaker.add_metric([*labels, state], 1.0 if state == current else 0.0)
        return [*(g for g, _ in gauges), breaker, *(c for c, _ in counters)]

    def _cache_families(self) -> list[Metric]:
        counts = self._cache()
        hits = CounterMetricFamily(
            "wasmhive_compile_cache_hits_total",
            "Compiled modules found in the compile cache, by tier (memory or disk).",
            labels=("tier",),
        )
        hits.add_metric(["memory"], float(counts["memory_hits"]))
        hits.add_metric(["disk"], float(counts["disk_hits"]))
        misses = CounterMetricFamily(
            "wasmhive_compile_cache_misses_total",
            "Modules compiled because the compile cache did not have them.",
            value=float(counts["compiles"]),
        )
        rebuilt = CounterMetricFamily(
            "wasmhive_compile_cache_rebuilt_total",
            "Cache entries found unusable on disk and compiled again.",
            value=float(counts["rebuilt"]),
        )
        return [hits, misses, rebuilt]


class _Series:
    """The labelled children of one (function, version): looked up once, reused on every request."""

    __slots__ = ("duration", "function", "in_flight", "requests", "version")

    def __init__(self, function: str, version: str, in_flight: Gauge, duration: Histogram) -> None:
        self.function = function
        self.version = version
        self.in_flight = in_flight
        self.duration = duration
        #: outcome -> child of wasmhive_requests_total
        self.requests: dict[str, Counter] = {}


class DaemonMetrics:
    """The daemon's Prometheus metrics, in a registry of their own.

    ``source`` returns the stats of every deployed function version and
    ``cache`` the compile cache counters (``Runtime.stats().cache``: keys
    ``memory_hits``, ``disk_hits``, ``compiles``, ``rebuilt``); both are called
    at scrape time, by :meth:`render`.
    """

    def __init__(
        self,
        source: Callable[[], Iterable[VersionStats]],
        cache: Callable[[], Mapping[str, int]],
    ) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "wasmhive_requests",
            "Invoke requests answered, by function, version and outcome (ok or the error kind).",
            labelnames=("function", "version", "outcome"),
            registry=self.registry,
        )
        self._duration = Histogram(
            "wasmhive_request_duration_seconds",
            "Time to answer an invoke request, in seconds.",
            labelnames=_VERSION_LABELS,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._in_flight = Gauge(
            "wasmhive_in_flight_requests",
            "Invoke requests being answered now.",
            labelnames=("function",),
            registry=self.registry,
        )
        self.registry.register(_RuntimeCollector(source, cache))
        self._series: dict[tuple[str, int | None], _Series] = {}

    def _get(self, function: str, version: int | None) -> _Series:
        key = (function, version)
        series = self._series.get(key)
        if series is None:
            label = "" if version is None else str(version)
            series = _Series(function, label, self._in_flight.labels(function), self._duration.labels(function, label))
            self._series[key] = series
        return series

    def request_started(self, function: str, version: int | None) -> None:
        """Count one more request in flight for ``function``.

        ``version`` is None for a request not (yet) resolved to a version.
        """
        self._get(function, version).in_flight.inc()

    def request_finished(self, function: str, version: int | None, outcome: str, seconds: float) -> None:
        """Record a request answered after ``seconds``: one less in flight, counted and timed.

        ``outcome`` is ``"ok"`` or the error kind (``"GuestTrap"``, ``"CallTimeout"``,
        ``"UnknownFunction"``, ...); a ``version`` of None is labelled ``""``.
        """
        series = self._get(function, version)
        series.in_flight.dec()
        counter = series.requests.get(outcome)
        if counter is None:
            counter = self._requests.labels(series.function, series.version, outcome)
            series.requests[outcome] = counter
        counter.inc()
        series.duration.observe(seconds)

    def forget(self, function: str, version: int) -> None:
        """Drop the request series of a deleted version, so that /metrics does not grow with every deploy."""
        series = self._series.pop((function, version), None)
        if series is None:
            return
        for outcome in series.requests:
            with contextlib.suppress(KeyError):
                self._requests.remove(series.function, series.version, outcome)
        with contextlib.suppress(KeyError):
            self._duration.remove(series.function, series.version)

    def render(self) -> tuple[bytes, str]:
        """The body and content type of a ``/metrics`` answer (Prometheus text format)."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
