"""Timing loops, percentiles, process-memory probes and the measured commit, for the benchmarks."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "AsyncCall",
    "Samples",
    "SyncCall",
    "map_count",
    "max_map_count",
    "percentile",
    "rss_bytes",
    "thread_count",
    "time_async_round",
    "time_sync_round",
]

SyncCall = Callable[[bytes], bytes]
AsyncCall = Callable[[bytes], Awaitable[bytes]]

_clock = time.perf_counter_ns


@dataclass
class Samples:
    """Per-call latencies of one case, and the wall time of the rounds they came from."""

    name: str
    latencies_ns: list[int] = field(default_factory=list)
    wall_ns: int = 0
    #: Median latency of each round, to show how much the machine's noise moved it.
    round_p50_ns: list[int] = field(default_factory=list)

    @property
    def calls(self) -> int:
        """Number of timed calls."""
        return len(self.latencies_ns)

    def summary(self) -> dict[str, float]:
        """p50/p99/mean in microseconds, sequential throughput (calls / wall time), round spread."""
        ordered = sorted(self.latencies_ns)
        summary = {
            "p50_us": percentile(ordered, 50) / 1000,
            "p99_us": percentile(ordered, 99) / 1000,
            "mean_us": sum(ordered) / len(ordered) / 1000,
            "ops_per_s": self.calls / (self.wall_ns / 1e9),
            "calls": self.calls,
        }
        if self.round_p50_ns:
            summary["round_p50_min_us"] = min(self.round_p50_ns) / 1000
            summary["round_p50_max_us"] = max(self.round_p50_ns) / 1000
        return summary

    def end_round(self, first: int, wall_ns: int) -> None:
        """Account for a round whose latencies start at index ``first``."""
        self.wall_ns += wall_ns
        self.round_p50_ns.append(int(percentile(sorted(self.latencies_ns[first:]), 50)))


def percentile(ordered: list[int] | list[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted, non-empty list."""
    if not ordered:
        raise ValueError("no samples")
    rank = max(1, -(-len(ordered) * pct // 100))
    return float(ordered[int(rank) - 1])


def _check(name: str, got: bytes, want: bytes) -> None:
    if got != want:
        raise AssertionError(f"{name}: echo returned {got[:16]!r}... ({len(got)} bytes), not the payload")


def time_sync_round(samples: Samples, call: SyncCall, payload: bytes, n: int) -> None:
    """Make ``n`` sequential calls, recording each one's latency; check the last reply."""
    record = samples.latencies_ns.append
    first = samples.calls
    reply = b""
    start = _clock()
    for _ in range(n):
        t0 = _clock()
        reply = call(payload)
        record(_clock() - t0)
    samples.end_round(first, _clock() - start)
    _check(samples.name, reply, payload)


async def time_async_round(samples: Samples, call: AsyncCall, payload: bytes, n: int) -> None:
    """The awaitable twin of :func:`time_sync_round`."""
    record = samples.latencies_ns.append
    first = samples.calls
    reply = b""
    start = _clock()
    for _ in range(n):
        t0 = _clock()
        reply = await call(payload)
        record(_clock() - t0)
    samples.end_round(first, _clock() - start)
    _check(samples.name, reply, payload)


def rss_bytes() -> int:
    """Resident set size of this process (``VmRSS`` in ``/proc/self/status``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def thread_count() -> int:
    """OS threads of this process (``Threads`` in ``/proc/self/status``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise RuntimeError("Threads not found in /proc/self/status")


def map_count() -> int:
    """Number of memory mappings of this process (Linux caps it at ``vm.max_map_count``)."""
    with open("/proc/self/maps", "rb") as maps:
        return sum(1 for _ in maps)


def max_map_count() -> int:
    """The kernel's cap on memory mappings per process (``vm.max_map_count``)."""
    return int(Path("/proc/sys/vm/max_map_count").read_text())


def machine_info() -> dict[str, object]:
    """When and on what a run was made: date, CPUs and their model, Python, platform."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def git_state(repo: Path) -> dict[str, object]:
    """The commit measured, and the files changed since it (outside ``bench/``)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        changed = git("diff", "--name-only", "HEAD").splitlines()
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_changed": None}
    return {"git_commit": commit, "git_changed": [path for path in changed if not path.startswith("bench/")]}
