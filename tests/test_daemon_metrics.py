"""The daemon's Prometheus metrics: request series, scrape-time runtime series, failing sources."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from wasmhive.runtime import Runtime, RuntimeConfig
from wasmhive.runtime.daemon.metrics import BREAKER_STATES, LATENCY_BUCKETS, DaemonMetrics, VersionStats
from wasmhive.runtime.deployment import FunctionStats

ECHO_PATH = Path(__file__).resolve().parent.parent / "examples" / "echo.wat"

CACHE = {"memory_hits": 7, "disk_hits": 3, "compiles": 2, "rebuilt": 1}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def make_stats(name: str = "echo.1", **overrides: object) -> FunctionStats:
    fields: dict[str, object] = {
        "name": name,
        "digest": "sha256:abc",
        "mode": "thread",
        "timeout": 1.0,
        "memory_limit": 64 << 20,
        "instances": 3,
        "pool_size": 4,
        "utilization": 0.375,
        "in_flight": 2,
        "states": {"IDLE": 2, "BUSY": 1},
        "queued": 5,
        "calls": 100,
        "failures": 9,
        "crashes": 6,
        "restarts": 8,
        "pool_restarts": 1,
        "scale_ups": 11,
        "scale_downs": 12,
        "cold_starts": 13,
        "breaker_state": "CLOSED",
        "retries": 14,
        "rejections": 15,
    }
    fields.update(overrides)
    return FunctionStats(**fields)  # type: ignore[arg-type]


def scrape(metrics: DaemonMetrics) -> tuple[Samples, dict[str, str]]:
    """Parse /metrics: {(sample name, labels): value} and {family name: type}."""
    body, content_type = metrics.render()
    assert content_type == CONTENT_TYPE_LATEST
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(body.decode()):
        types[family.name] = family.type
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in samples, f"duplicate series {key}"
            samples[key] = s.value
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


def fixed(items: Iterable[VersionStats], cache: Mapping[str, int] = CACHE) -> DaemonMetrics:
    listed = list(items)
    return DaemonMetrics(lambda: listed, lambda: cache)


def test_requests_counted_by_outcome() -> None:
    m = fixed([])
    for _ in range(3):
        m.request_started("echo", 1)
        m.request_finished("echo", 1, "ok", 0.002)
    m.request_started("echo", 1)
    m.request_finished("echo", 1, "GuestTrap", 0.02)
    m.request_started("echo", 2)
    m.request_finished("echo", 2, "ok", 0.002)
    samples, types = scrape(m)
    assert types["wasmhive_requests"] == "counter"
    assert series(samples, "wasmhive_requests_total") == {
        frozenset({"function": "echo", "version": "1", "outcome": "ok"}.items()): 3.0,
        frozenset({"function": "echo", "version": "1", "outcome": "GuestTrap"}.items()): 1.0,
        frozenset({"function": "echo", "version": "2", "outcome": "ok"}.items()): 1.0,
    }


def test_a_deleted_version_leaves_no_request_series() -> None:
    m = fixed([])
    for version, outcome in ((1, "ok"), (1, "GuestTrap"), (2, "ok")):
        m.request_started("echo", version)
        m.request_finished("echo", version, outcome, 0.002)
    m.forget("echo", 1)
    m.forget("echo", 7)  # never seen: nothing to do
    samples, _ = scrape(m)
    assert series(samples, "wasmhive_requests_total") == {
        frozenset({"function": "echo", "version": "2", "outcome": "ok"}.items()): 1.0,
    }
    versions = {dict(labels)["version"] for labels in series(samples, "wasmhive_request_duration_seconds_count")}
    assert versions == {"2"}
    m.request_started("echo", 1)  # a version number used again starts from zero
    m.request_finished("echo", 1, "ok", 0.002)
    samples, _ = scrape(m)
    assert value(samples, "wasmhive_requests_total", function="echo", version="1", outcome="ok") == 1.0


def test_latency_histogram_buckets() -> None:
    m = fixed([])
    for seconds in (0.00005, 0.0003, 0.0003, 0.2, 45.0):
        m.request_started("echo", 1)
        m.request_finished("echo", 1, "ok", seconds)
    samples, types = scrape(m)
    assert types["wasmhive_request_duration_seconds"] == "histogram"
    labels = {"function": "echo", "version": "1"}
    buckets = {
        float(dict(ls)["le"]): v
        for ls, v in series(samples, "wasmhive_request_duration_seconds_bucket").items()
        if dict(ls)["function"] == "echo"
    }
    assert sorted(buckets) == [*LATENCY_BUCKETS, float("inf")]
    assert buckets[0.0001] == 1
    assert buckets[0.00025] == 1
    assert buckets[0.0005] == 3
    assert buckets[0.1] == 3
    assert buckets[0.25] == 4
    assert buckets[30.0] == 4
    assert buckets[float("inf")] == 5
    assert value(samples, "wasmhive_request_duration_seconds_count", **labels) == 5
    assert value(samples, "wasmhive_request_duration_seconds_sum", **labels) == pytest.approx(45.20065)


def test_in_flight_goes_up_and_down() -> None:
    m = fixed([])
    m.request_started("echo", 1)
    m.request_started("echo", 2)
    m.request_started("other", 1)
    samples, types = scrape(m)
    assert types["wasmhive_in_flight_requests"] == "gauge"
    assert value(samples, "wasmhive_in_flight_requests", function="echo") == 2
    assert value(samples, "wasmhive_in_flight_requests", function="other") == 1
    m.request_finished("echo", 2, "CallTimeout", 1.0)
    samples, _ = scrape(m)
    assert value(samples, "wasmhive_in_flight_requests", function="echo") == 1
    m.request_finished("echo", 1, "ok", 0.001)
    m.request_finished("other", 1, "ok", 0.001)
    samples, _ = scrape(m)
    assert value(samples, "wasmhive_in_flight_requests", function="echo") == 0
    assert value(samples, "wasmhive_in_flight_requests", function="other") == 0
    assert value(samples, "wasmhive_requests_total", function="echo", version="2", outcome="CallTimeout") == 1


def test_version_none_is_the_empty_label() -> None:
    m = fixed([])
    m.request_started("nope", None)
    samples, _ = scrape(m)
    assert value(samples, "wasmhive_in_flight_requests", function="nope") == 1
    m.request_finished("nope", None, "UnknownFunction", 0.0002)
    samples, _ = scrape(m)
    assert value(samples, "wasmhive_in_flight_requests", function="nope") == 0
    assert value(samples, "wasmhive_requests_total", function="nope", version="", outcome="UnknownFunction") == 1
    assert value(samples, "wasmhive_request_duration_seconds_count", function="nope", version="") == 1
    assert value(samples, "wasmhive_request_duration_seconds_bucket", function="nope", version="", le="0.00025") == 1
    assert value(samples, "wasmhive_request_duration_seconds_bucket", function="nope", version="", le="0.0001") == 0


def test_function_stats_series() -> None:
    m = fixed([VersionStats("echo", 1, make_stats("echo.1")), VersionStats("echo", 2, make_stats("echo.2", calls=7))])
    samples, types = scrape(m)
    one = {"function": "echo", "version": "1"}
    expected_gauges = {
        "wasmhive_pool_size": 4,
        "wasmhive_instances": 3,
        "wasmhive_pool_utilization": 0.375,
        "wasmhive_mailbox_depth": 5,
    }
    for name, want in expected_gauges.items():
        assert types[name] == "gauge", name
        assert value(samples, name, **one) == want, name
    expected_counters = {
        "wasmhive_restarts": 8,
        "wasmhive_crashes": 6,
        "wasmhive_retries": 14,
        "wasmhive_cold_starts": 13,
        "wasmhive_rejections": 15,
        "wasmhive_calls": 100,
        "wasmhive_scale_ups": 11,
        "wasmhive_scale_downs": 12,
    }
    for name, want in expected_counters.items():
        assert types[name] == "counter", name
        assert value(samples, name + "_total", **one) == want, name
    assert value(samples, "wasmhive_calls_total", function="echo", version="2") == 7
    assert len(series(samples, "wasmhive_calls_total")) == 2


def test_help_texts() -> None:
    m = fixed([VersionStats("echo", 1, make_stats())])
    m.request_started("echo", 1)
    m.request_finished("echo", 1, "ok", 0.001)
    body, _ = m.render()
    for family in text_string_to_metric_families(body.decode()):
        assert family.documentation, family.name


@pytest.mark.parametrize("state", BREAKER_STATES)
def test_breaker_state_one_hot(state: str) -> None:
    m = fixed([VersionStats("echo", 1, make_stats(breaker_state=state))])
    samples, types = scrape(m)
    assert types["wasmhive_breaker_state"] == "gauge"
    got = {dict(ls)["state"]: v for ls, v in series(samples, "wasmhive_breaker_state").items()}
    assert got == {s: (1.0 if s == state else 0.0) for s in BREAKER_STATES}


def test_breaker_state_left_out_without_breaker() -> None:
    m = fixed(
        [
            VersionStats("echo", 1, make_stats(breaker_state=None)),
            VersionStats("echo", 2, make_stats(breaker_state="OPEN")),
        ]
    )
    samples, _ = scrape(m)
    got = series(samples, "wasmhive_breaker_state")
    assert {dict(ls)["version"] for ls in got} == {"2"}
    assert value(samples, "wasmhive_breaker_state", function="echo", version="2", state="OPEN") == 1
    assert sum(got.values()) == 1
    # the version without a breaker still has its other series
    assert value(samples, "wasmhive_calls_total", function="echo", version="1") == 100


def test_compile_cache_counters() -> None:
    m = fixed([])
    samples, types = scrape(m)
    assert types["wasmhive_compile_cache_hits"] == "counter"
    assert value(samples, "wasmhive_compile_cache_hits_total", tier="memory") == 7
    assert value(samples, "wasmhive_compile_cache_hits_total", tier="disk") == 3
    assert value(samples, "wasmhive_compile_cache_misses_total") == 2
    assert value(samples, "wasmhive_compile_cache_rebuilt_total") == 1


def test_sources_read_at_scrape_time() -> None:
    state = {"calls": 1, "compiles": 0}

    def source() -> list[VersionStats]:
        return [VersionStats("echo", 1, make_stats(calls=state["calls"]))]

    def cache() -> dict[str, int]:
        return {**CACHE, "compiles": state["compiles"]}

    m = DaemonMetrics(source, cache)
    samples, _ = scrape(m)
    assert value(samples, "wasmhive_calls_total", function="echo", version="1") == 1
    assert value(samples, "wasmhive_compile_cache_misses_total") == 0
    state.update(calls=5, compiles=4)
    samples, _ = scrape(m)
    assert value(samples, "wasmhive_calls_total", function="echo", version="1") == 5
    assert value(samples, "wasmhive_compile_cache_misses_total") == 4


def test_failing_source_keeps_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    def source() -> Iterable[VersionStats]:
        yield VersionStats("echo", 1, make_stats())
        raise RuntimeError("boom")

    m = DaemonMetrics(source, lambda: CACHE)
    m.request_started("echo", 1)
    m.request_finished("echo", 1, "ok", 0.001)
    with caplog.at_level(logging.ERROR, logger="wasmhive.runtime.daemon.metrics"):
        samples, _ = scrape(m)
    assert "boom" in caplog.text
    # nothing half-built from the failing source
    assert not any(name.startswith(("wasmhive_calls", "wasmhive_pool_size", "wasmhive_breaker")) for name, _ in samples)
    assert value(samples, "wasmhive_requests_total", function="echo", version="1", outcome="ok") == 1
    assert value(samples, "wasmhive_compile_cache_misses_total") == 2


def test_failing_cache_keeps_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    def cache() -> Mapping[str, int]:
        raise OSError("cache gone")

    m = DaemonMetrics(lambda: [VersionStats("echo", 1, make_stats())], cache)
    with caplog.at_level(logging.ERROR, logger="wasmhive.runtime.daemon.metrics"):
        samples, _ = scrape(m)
    assert "cache gone" in caplog.text
    assert not any(name.startswith("wasmhive_compile_cache") for name, _ in samples)
    assert value(samples, "wasmhive_calls_total", function="echo", version="1") == 100


def test_duplicate_version_reported_once() -> None:
    m = fixed([VersionStats("echo", 1, make_stats(calls=1)), VersionStats("echo", 1, make_stats(calls=2))])
    samples, _ = scrape(m)  # scrape() asserts there are no duplicate series
    assert value(samples, "wasmhive_calls_total", function="echo", version="1") == 1


def test_registries_are_private() -> None:
    a = fixed([])
    b = fixed([])
    assert a.registry is not b.registry
    a.request_started("echo", 1)
    a.request_finished("echo", 1, "ok", 0.001)
    samples, _ = scrape(b)
    assert series(samples, "wasmhive_requests_total") == {}


@pytest.mark.trio
async def test_real_runtime_calls_move(config: RuntimeConfig) -> None:
    async with Runtime(config) as rt:
        await rt.deploy("echo.1", ECHO_PATH)

        def source() -> list[VersionStats]:
            out = []
            for name, stats in rt.stats().functions.items():
                function, _, version = name.rpartition(".")
                out.append(VersionStats(function, int(version), stats))
            return out

        m = DaemonMetrics(source, lambda: rt.stats().cache)
        samples, _ = scrape(m)
        before = value(samples, "wasmhive_calls_total", function="echo", version="1")
        misses_and_hits = (
            value(samples, "wasmhive_compile_cache_misses_total")
            + value(samples, "wasmhive_compile_cache_hits_total", tier="memory")
            + value(samples, "wasmhive_compile_cache_hits_total", tier="disk")
        )
        assert misses_and_hits >= 1  # the deploy went through the compile cache
        assert value(samples, "wasmhive_instances", function="echo", version="1") >= 1
        for i in range(4):
            m.request_started("echo", 1)
            assert await rt.invoke("echo.1", b"hi %d" % i) == b"hi %d" % i
            m.request_finished("echo", 1, "ok", 0.001)
        samples, _ = scrape(m)
        assert value(samples, "wasmhive_calls_total", function="echo", version="1") == before + 4
        assert value(samples, "wasmhive_requests_total", function="echo", version="1", outcome="ok") == 4
        assert value(samples, "wasmhive_in_flight_requests", function="echo") == 0
