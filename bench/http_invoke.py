"""HTTP invoke benchmark (issue 5): the daemon's invoke of the echo example against a bare endpoint.

Run from the repository root (with the dev install, and ``wrk`` on PATH)::

    python bench/http_invoke.py                 # 5 rounds of 4 s per case and concurrency, about 3 minutes
    python bench/http_invoke.py --quick         # 2 rounds of 2 s, for checking the benchmark itself
    python bench/http_invoke.py --no-pin        # let the scheduler place them (default: daemons on CPU 0,
                                                # the load generator on CPU 1)
    python bench/http_invoke.py --loadgen python   # the Python load generator even if wrk is installed

What it does:

1. Starts two daemons as subprocesses (``wasmhive serve -c CONFIG --port 0
   --data-dir DIR``, each with a fresh data dir), both with
   ``server.bench_endpoint = true`` and the echo example deployed twice
   (``echo``: ``mode = "inline"``, as in ``examples/wasmhive.toml``;
   ``echo-thread``: ``mode = "thread"``).  The first has
   ``server.access_log = false``; the second keeps the default
   (``access_log = true``, its stderr going to a file), to measure what the
   access log costs.
2. Checks every case with payloads of 0, 1, 7, 64 and 1000 bytes (status 200,
   the reply equals the payload), then warms each case up (untimed).
3. Runs the load generator in a separate process: ``wrk -t1 -cC -dDs
   --latency -s post.lua URL`` (the Lua script POSTs a fixed 64-byte body and,
   in ``done()``, dumps wrk's whole latency histogram, so that the rounds of a
   case are pooled exactly), or, without wrk, a Python asyncio load generator
   with C keep-alive connections (``--loadgen python``).
4. Cases, at each concurrency (default 1 and 50), interleaved: in every round
   each case runs once, and the starting case moves by one from round to
   round, so that noise on the shared machine falls on all of them alike.

   * ``bare``: ``POST /v1/bare`` (the request body back: same server, same
     framework, no function)
   * ``invoke_inline``: ``POST /v1/invoke/echo``
   * ``invoke_thread``: ``POST /v1/invoke/echo-thread``
   * ``invoke_inline_log``: ``POST /v1/invoke/echo`` on the daemon with the
     access log on

For each case: p50, p90, p99, p99.9 and max of the pooled latencies,
throughput (requests / seconds over all rounds), the daemon's CPU time per
request (from ``/proc/PID/stat``: far less noisy than throughput on a
shared machine), the load generator's CPU per request, and how many cores
other processes kept busy meanwhile.  Ratios against ``bare`` (throughput,
p50, p99) are given pooled and per round (a round's invoke run against the
same round's bare run).  Results go to ``bench/results/http.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from timing import git_state, machine_info

REPO = Path(__file__).resolve().parent.parent
ECHO_WAT = REPO / "examples" / "echo.wat"
DEFAULT_OUT = REPO / "bench" / "results" / "http.json"
PAYLOAD = bytes(range(64))
CHECK_SIZES = (0, 1, 7, 64, 1000)
#: case -> (daemon, path)
CASES: dict[str, tuple[str, str]] = {
    "bare": ("plain", "/v1/bare"),
    "invoke_inline": ("plain", "/v1/invoke/echo"),
    "invoke_thread": ("plain", "/v1/invoke/echo-thread"),
    "invoke_inline_log": ("logged", "/v1/invoke/echo"),
}
INVOKE_CASES = ("invoke_inline", "invoke_thread", "invoke_inline_log")
#: The issue's targets, at concurrency 50.
TARGET_THROUGHPUT_RATIO = 0.8
TARGET_P99_MS = 10.0
TARGET_CONCURRENCY = 50
CLK_TCK = os.sysconf("SC_CLK_TCK")

_STARTED = time.perf_counter()

# wrk's Lua: a POST of the 64-byte payload; done() dumps the summary and the whole latency
# histogram (distinct values in microseconds with their counts) as JSON to $WASMHIVE_WRK_OUT.
WRK_LUA = """\
wrk.method = "POST"
wrk.body = string.char({body})
wrk.headers["Content-Type"] = "application/octet-stream"

done = function(summary, latency, requests)
  local path = os.getenv("WASMHIVE_WRK_OUT")
  if path == nil then return end
  local e = summary.errors
  local parts = {{}}
  for i = 1, #latency do
    local value, count = latency(i)
    parts[#parts + 1] = string.format("[%d,%d]", value, count)
  end
  local f = assert(io.open(path, "w"))
  f:write(string.format(
    '{{"requests": %d, "duration_us": %d, "bytes": %d, "errors": {{"connect": %d, "read": %d, "write": %d,'
    .. ' "status": %d, "timeout": %d}}, "latency_us": [',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout))
  f:write(table.concat(parts, ","))
  f:write("]}}\\n")
  f:close()
end
"""


def log(message: str) -> None:
    """Progress on stderr, with the seconds since the start (the results table goes to stdout)."""
    print(f"[{time.perf_counter() - _STARTED:5.1f} s] {message}", file=sys.stderr, flush=True)


@dataclass
class Settings:
    rounds: int
    duration_s: float
    warmup_s: float
    concurrency: tuple[int, ...]
    loadgen: str
    pin: bool


# --- the daemons ---------------------------------------------------------------------------


def daemon_config(access_log: bool) -> str:
    """The TOML config of a benchmark daemon."""
    path = json.dumps(str(ECHO_WAT))
    return f"""\
[server]
bench_endpoint = true
access_log = {"true" if access_log else "false"}

[[deploy]]
name = "echo"
path = {path}
options = {{ mode = "inline" }}

[[deploy]]
name = "echo-thread"
path = {path}
options = {{ mode = "thread" }}
"""


class Daemon:
    """``wasmhive serve`` in a subprocess, on a free loopback port, with a fresh data dir."""

    def __init__(
        self, name: str, scratch: Path, config_text: str, cpus: set[int] | None, command: list[str] | None = None
    ) -> None:
        self.name = name
        root = scratch / name
        root.mkdir()
        config = root / "wasmhive.toml"
        config.write_text(config_text)
        self.stderr_path = root / "stderr.log"
        self._stderr = self.stderr_path.open("wb")
        cmd = [*(command or [sys.executable, "-m", "wasmhive.runtime.cli"]), "serve", "-c", str(config)]
        cmd += ["--port", "0", "--data-dir", str(root / "data")]
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
            cwd=root,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
        self.url = self._wait_ready()
        parts = urlsplit(self.url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80

    def _wait_ready(self, timeout: float = 60.0) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        prefix = "wasmhive: listening on "
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode()
            if not line:
                break
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
        self.close()
        raise RuntimeError(f"daemon {self.name} did not start; stderr:\n{self.stderr_path.read_text()[-3000:]}")

    def cpu_s(self) -> float:
        """CPU time (user + system, all threads) the daemon has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def threads(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
        return 0

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


def check_case(daemon: Daemon, path: str) -> None:
    """Every payload size comes back unchanged with status 200."""
    conn = http.client.HTTPConnection(daemon.host, daemon.port, timeout=10)
    try:
        for size in CHECK_SIZES:
            payload = bytes(i % 251 for i in range(size))
            conn.request("POST", path, body=payload, headers={"Content-Type": "application/octet-stream"})
            response = conn.getresponse()
            body = response.read()
            if response.status != 200 or body != payload:
                raise RuntimeError(f"{daemon.url}{path} with {size} bytes: {response.status} {body[:200]!r}")
    finally:
        conn.close()


# --- machine accounting ----------------------------------------------------------------------


def machine_busy_s() -> tuple[float, float]:
    """CPU seconds the whole machine has been busy (all CPUs; /proc/stat minus idle, iowait and steal),
    and the seconds stolen by the hypervisor."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4] - fields[7]  # user nice system idle iowait irq softirq steal
    return busy / CLK_TCK, fields[7] / CLK_TCK


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- load generators -------------------------------------------------------------------------


def wrk_lua(scratch: Path) -> Path:
    script = scratch / "post.lua"
    script.write_text(WRK_LUA.format(body=",".join(str(b) for b in PAYLOAD)))
    return script


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def parse_wrk_text(text: str) -> dict[str, Any]:
    """Requests/sec and the latency distribution lines (in ms) of wrk's ``--latency`` output."""
    parsed: dict[str, Any] = {"percentiles_ms": {}}
    for match in re.finditer(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M):
        parsed["percentiles_ms"][match.group(1)] = float(match.group(2)) * _UNITS[match.group(3)]
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    parsed["requests_per_s"] = float(rps.group(1)) if rps else None
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    parsed["non_2xx"] = int(non2xx.group(1)) if non2xx else 0
    return parsed


def run_loadgen(
    settings: Settings, url: str, connections: int, duration_s: float, scratch: Path, lua: Path | None
) -> dict[str, Any]:
    """One run of the load generator, in its own process; returns its JSON dump (plus wrk's text)."""
    out = scratch / "loadgen.json"
    out.unlink(missing_ok=True)
    seconds = max(1, round(duration_s))
    if settings.loadgen == "wrk":
        assert lua is not None
        cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(lua), url]
    else:
        cmd = [sys.executable, __file__, "--loadgen-child", url, "--connections", str(connections)]
        cmd += ["--duration", str(seconds), "--out", str(out)]
    cpus = {1} if settings.pin else None
    env = {**os.environ, "WASMHIVE_WRK_OUT": str(out)}
    done = subprocess.run(
        cmd,
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"load generator failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    result: dict[str, Any] = json.loads(out.read_text())
    if settings.loadgen == "wrk":
        result["wrk_text"] = parse_wrk_text(done.stdout)
    return result


def python_loadgen(url: str, connections: int, duration_s: float, out: Path) -> None:
    """The fallback load generator: asyncio, one coroutine per keep-alive connection.

    Writes the same JSON as wrk's ``done()`` in ``post.lua``.  Slower than wrk
    (each request costs it some tens of microseconds of Python), so at high
    concurrency its latencies include its own queueing; prefer wrk.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path or "/"
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {len(PAYLOAD)}\r\n\r\n"
    ).encode() + PAYLOAD
    hist: Counter[int] = Counter()
    errors = {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}
    received = [0]
    length_re = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.I)

    async def connection(deadline: float) -> None:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            errors["connect"] += 1
            return
        clock = time.perf_counter_ns
        try:
            while time.perf_counter() < deadline:
                started = clock()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                found = length_re.search(head)
                body = await reader.readexactly(int(found.group(1))) if found else b""
                hist[(clock() - started) // 1000] += 1
                received[0] += len(head) + len(body)
                if head[9:12] != b"200" or body != PAYLOAD:
                    errors["status"] += 1
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            errors["read"] += 1
        finally:
            writer.close()

    async def main() -> int:
        started = time.perf_counter()
        await asyncio.gather(*(connection(started + duration_s) for _ in range(connections)))
        return int((time.perf_counter() - started) * 1e6)

    duration_us = asyncio.run(main())
    out.write_text(
        json.dumps(
            {
                "requests": sum(hist.values()),
                "duration_us": duration_us,
                "bytes": received[0],
                "errors": errors,
                "latency_us": sorted(hist.items()),
            }
        )
    )


# --- statistics ------------------------------------------------------------------------------


def hist_percentile(hist: list[tuple[int, int]], pct: float) -> float:
    """The value (us) below which ``pct`` percent of the samples of a sorted (value, count) histogram lie."""
    total = sum(count for _, count in hist)
    rank = max(1, round(pct / 100 * total + 0.5 - 1e-9)) if pct < 100 else total
    seen = 0
    for value, count in hist:
        seen += count
        if seen >= rank:
            return float(value)
    return float(hist[-1][0]) if hist else float("nan")


def summarize(hist: list[tuple[int, int]]) -> dict[str, float]:
    total = sum(count for _, count in hist)
    return {
        "p50_ms": hist_percentile(hist, 50) / 1000,
        "p90_ms": hist_percentile(hist, 90) / 1000,
        "p99_ms": hist_percentile(hist, 99) / 1000,
        "p999_ms": hist_percentile(hist, 99.9) / 1000,
        "max_ms": hist[-1][0] / 1000 if hist else float("nan"),
        "mean_ms": sum(v * c for v, c in hist) / total / 1000 if total else float("nan"),
    }


def merge(hists: list[list[tuple[int, int]]]) -> list[tuple[int, int]]:
    merged: Counter[int] = Counter()
    for hist in hists:
        for value, count in hist:
            merged[value] += count
    return sorted(merged.items())


# --- the run ---------------------------------------------------------------------------------


def measure(settings: Settings, scratch: Path) -> dict[str, Any]:
    """Start the daemons, check and warm up every case, then run the interleaved rounds."""
    daemon_cpus = {0} if settings.pin else None
    daemons: dict[str, Daemon] = {}
    try:
        daemons["plain"] = Daemon("plain", scratch, daemon_config(access_log=False), daemon_cpus)
        daemons["logged"] = Daemon("logged", scratch, daemon_config(access_log=True), daemon_cpus)
        log(f"daemons up: plain {daemons['plain'].url}, logged {daemons['logged'].url}")
        idle_cpu = prepare(settings, daemons, CASES, scratch)
        runs = run_rounds(settings, daemons, CASES, scratch)
        log_lines = count_log_lines(daemons["logged"].stderr_path)
        outcomes = {name: request_outcomes(d) for name, d in daemons.items()}
        log("invoke outcomes (from /metrics): " + json.dumps(outcomes))
    finally:
        for daemon in daemons.values():
            daemon.close()
    return {"runs": runs, "idle_daemon_cores": idle_cpu, "access_log_lines": log_lines, "outcomes": outcomes}


def request_outcomes(daemon: Daemon) -> dict[str, float]:
    """``wasmhive_requests_total`` by function and outcome, read from the daemon's ``/metrics``."""
    conn = http.client.HTTPConnection(daemon.host, daemon.port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    counts: dict[str, float] = {}
    for match in re.finditer(r"^wasmhive_requests_total\{([^}]*)\} (\S+)$", text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1)))
        key = f"{labels.get('function')}:{labels.get('outcome')}"
        counts[key] = counts.get(key, 0.0) + float(match.group(2))
    return counts


def prepare(
    settings: Settings, daemons: dict[str, Daemon], cases: dict[str, tuple[str, str]], scratch: Path
) -> dict[str, float]:
    """Check every case, warm each up, and measure what the daemons use while idle (cores)."""
    lua = wrk_lua(scratch) if settings.loadgen == "wrk" else None
    for which, path in cases.values():
        check_case(daemons[which], path)
    log(f"checked every case with payloads of {', '.join(map(str, CHECK_SIZES))} bytes")
    for which, path in cases.values():
        run_loadgen(settings, daemons[which].url + path, max(settings.concurrency), settings.warmup_s, scratch, lua)
    log(f"warmed up ({settings.warmup_s:g} s per case at c={max(settings.concurrency)})")
    before = {name: d.cpu_s() for name, d in daemons.items()}
    time.sleep(2.0)
    idle = {name: (d.cpu_s() - before[name]) / 2.0 for name, d in daemons.items()}
    log("idle daemons use " + ", ".join(f"{name} {share * 100:.1f}%" for name, share in idle.items()))
    return idle


def run_rounds(
    settings: Settings, daemons: dict[str, Daemon], cases: dict[str, tuple[str, str]], scratch: Path
) -> dict[int, dict[str, list[dict[str, Any]]]]:
    """``settings.rounds`` interleaved rounds of every case at every concurrency (starting case rotating)."""
    lua = wrk_lua(scratch) if settings.loadgen == "wrk" else None
    runs: dict[int, dict[str, list[dict[str, Any]]]] = {c: {case: [] for case in cases} for c in settings.concurrency}
    names = list(cases)
    for rnd in range(settings.rounds):
        order = names[rnd % len(names) :] + names[: rnd % len(names)]
        for conc in settings.concurrency:
            for case in order:
                which, path = cases[case]
                record = one_run(settings, daemons, daemons[which], path, conc, scratch, lua)
                record["round"] = rnd
                runs[conc][case].append(record)
                errors = sum(record["errors"].values())
                log(
                    f"round {rnd + 1}/{settings.rounds} c={conc:<3} {case:<18} {record['throughput']:8.0f} req/s"
                    f"  p50 {record['p50_ms']:7.2f} ms  p99 {record['p99_ms']:7.2f} ms"
                    f"  server {record['server_cpu_us_per_req']:6.0f} us CPU/req"
                    f"  others {record['other_cores']:.2f} cores" + (f"  ERRORS {errors}" if errors else "")
                )
    return runs


def one_run(
    settings: Settings,
    daemons: dict[str, Daemon],
    daemon: Daemon,
    path: str,
    conc: int,
    scratch: Path,
    lua: Path | None,
) -> dict[str, Any]:
    """One load-generator run against ``daemon``, with the CPU used meanwhile by it, the load
    generator, the other (idle) daemons and everything else on the machine."""
    cpu0, busy0, kids0, t0 = daemon.cpu_s(), machine_busy_s(), children_cpu_s(), time.perf_counter()
    others0 = sum(d.cpu_s() for d in daemons.values() if d is not daemon)
    result = run_loadgen(settings, daemon.url + path, conc, settings.duration_s, scratch, lua)
    wall = time.perf_counter() - t0
    server = daemon.cpu_s() - cpu0
    idle_daemons = sum(d.cpu_s() for d in daemons.values() if d is not daemon) - others0
    loadgen = children_cpu_s() - kids0
    busy1 = machine_busy_s()
    busy, steal = busy1[0] - busy0[0], busy1[1] - busy0[1]
    n = result["requests"]
    hist = [(int(v), int(c)) for v, c in result["latency_us"]]
    record = {
        "requests": n,
        "duration_s": result["duration_us"] / 1e6,
        "throughput": n / (result["duration_us"] / 1e6),
        "errors": result["errors"],
        **summarize(hist),
        "server_cpu_s": server,
        "server_cpu_us_per_req": server / n * 1e6 if n else float("nan"),
        "server_cores": server / wall,
        "loadgen_cpu_us_per_req": loadgen / n * 1e6 if n else float("nan"),
        "other_cores": max(0.0, (busy - server - idle_daemons - loadgen) / wall),
        "steal_cores": steal / wall,
        "hist": hist,
    }
    if "wrk_text" in result:
        record["wrk_text"] = result["wrk_text"]
    return record


def count_log_lines(path: Path) -> int:
    """Lines of the logged daemon's stderr that are access-log records."""
    count = 0
    with path.open("rb") as f:
        for line in f:
            if line.startswith(b"{") and b'"request_id"' in line:
                count += 1
    return count


def pool_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One case's rounds pooled: latencies from the merged histograms, throughput over all rounds."""
    requests = sum(r["requests"] for r in rounds)
    seconds = sum(r["duration_s"] for r in rounds)
    server = sum(r["server_cpu_s"] for r in rounds)
    row = {
        "requests": requests,
        "seconds": seconds,
        "throughput": requests / seconds,
        **summarize(merge([r["hist"] for r in rounds])),
        "errors": sum(sum(r["errors"].values()) for r in rounds),
        "server_cpu_us_per_req": server / requests * 1e6,
        "server_cores": statistics.mean(r["server_cores"] for r in rounds),
        "loadgen_cpu_us_per_req": statistics.mean(r["loadgen_cpu_us_per_req"] for r in rounds),
        "other_cores": statistics.mean(r["other_cores"] for r in rounds),
        "steal_cores": statistics.mean(r["steal_cores"] for r in rounds),
        "round_throughput": [r["throughput"] for r in rounds],
        "round_p50_ms": [r["p50_ms"] for r in rounds],
        "round_p99_ms": [r["p99_ms"] for r in rounds],
        "round_server_cpu_us_per_req": [r["server_cpu_us_per_req"] for r in rounds],
    }
    if rounds and "wrk_text" in rounds[0]:
        row["wrk_text"] = [r["wrk_text"] for r in rounds]
    return row


def aggregate(raw: dict[str, Any]) -> dict[str, Any]:
    """Pool the rounds of every case; ratios against ``bare`` pooled and per round."""
    out: dict[str, Any] = {}
    for conc, cases in raw["runs"].items():
        table: dict[str, Any] = {case: pool_rounds(rounds) for case, rounds in cases.items()}
        bare = table["bare"]
        for case in INVOKE_CASES:
            row = table[case]
            paired_tp = [i / b for i, b in zip(row["round_throughput"], bare["round_throughput"], strict=True)]
            paired_p99 = [i / b for i, b in zip(row["round_p99_ms"], bare["round_p99_ms"], strict=True)]
            row["vs_bare"] = {
                "throughput_ratio": row["throughput"] / bare["throughput"],
                "p50_ratio": row["p50_ms"] / bare["p50_ms"],
                "p99_ratio": row["p99_ms"] / bare["p99_ms"],
                "extra_server_cpu_us_per_req": row["server_cpu_us_per_req"] - bare["server_cpu_us_per_req"],
                "round_throughput_ratio_median": statistics.median(paired_tp),
                "round_throughput_ratio_min": min(paired_tp),
                "round_throughput_ratio_max": max(paired_tp),
                "round_p99_ratio_median": statistics.median(paired_p99),
            }
        log_row, inline_row = table["invoke_inline_log"], table["invoke_inline"]
        table["access_log_cost"] = {
            "server_cpu_us_per_req": log_row["server_cpu_us_per_req"] - inline_row["server_cpu_us_per_req"],
            "throughput_ratio": log_row["throughput"] / inline_row["throughput"],
            "p99_ratio": log_row["p99_ms"] / inline_row["p99_ms"],
        }
        out[str(conc)] = table
    return out


def check_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    table = results.get(str(TARGET_CONCURRENCY))
    if table is None:
        return []
    targets = []
    for case in ("invoke_inline", "invoke_thread"):
        row = table[case]
        ratio = row["vs_bare"]["throughput_ratio"]
        targets.append(
            {
                "target": f"{case} throughput >= {TARGET_THROUGHPUT_RATIO}x bare at c={TARGET_CONCURRENCY}",
                "measured": f"{row['throughput']:.0f} vs {table['bare']['throughput']:.0f} req/s = {ratio:.2f}x"
                f" (per-round median {row['vs_bare']['round_throughput_ratio_median']:.2f}x)",
                "met": ratio >= TARGET_THROUGHPUT_RATIO,
            }
        )
        targets.append(
            {
                "target": f"{case} p99 <= {TARGET_P99_MS:g} ms at c={TARGET_CONCURRENCY}",
                "measured": f"{row['p99_ms']:.1f} ms (bare: {table['bare']['p99_ms']:.1f} ms)",
                "met": row["p99_ms"] <= TARGET_P99_MS,
            }
        )
    return targets


def print_report(results: dict[str, Any]) -> None:
    print(
        f"\n{'c':>3} {'case':<18}{'p50 ms':>8}{'p99 ms':>8}{'p99.9':>8}{'req/s':>8}{'tput/bare':>10}{'p99/bare':>9}"
        f"{'srv us/req':>11}{'+us/req':>8}{'others':>7}{'steal':>6}"
    )
    for conc, table in results["by_concurrency"].items():
        for case in CASES:
            row = table[case]
            vs = row.get("vs_bare")
            ratio = f"{vs['throughput_ratio']:.2f}x" if vs else "-"
            p99r = f"{vs['p99_ratio']:.2f}x" if vs else "-"
            extra = f"{vs['extra_server_cpu_us_per_req']:+.0f}" if vs else "-"
            print(
                f"{conc:>3} {case:<18}{row['p50_ms']:>8.2f}{row['p99_ms']:>8.2f}{row['p999_ms']:>8.2f}"
                f"{row['throughput']:>8.0f}{ratio:>10}{p99r:>9}{row['server_cpu_us_per_req']:>11.0f}{extra:>8}"
                f"{row['other_cores']:>7.2f}{row['steal_cores']:>6.2f}"
            )
        cost = table["access_log_cost"]
        print(
            f"    access log on: {cost['server_cpu_us_per_req']:+.0f} us CPU per request,"
            f" throughput {cost['throughput_ratio']:.2f}x, p99 {cost['p99_ratio']:.2f}x of the same invoke without it"
        )
    print(f"access-log lines written by the logged daemon: {results['access_log_lines']}")
    failed = {
        f"{daemon} {key}": n
        for daemon, counts in results["outcomes"].items()
        for key, n in counts.items()
        if not key.endswith(":ok")
    }
    print("invoke outcomes other than ok: " + (", ".join(f"{k}: {n:g}" for k, n in failed.items()) or "none"))
    print("\ntargets:")
    for target in results["targets"]:
        print(f"  [{'met' if target['met'] else 'MISSED'}] {target['target']}: {target['measured']}")


# --- metadata and main -----------------------------------------------------------------------


def machine(settings: Settings) -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for dist in ("wasmtime", "hypercorn", "h11", "starlette", "trio", "anyio", "prometheus_client", "msgspec"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    wrk = None
    if shutil.which("wrk"):
        wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0:1]
    return {
        **machine_info(),
        "versions": versions,
        "wrk": wrk[0] if wrk else None,
        "payload_bytes": len(PAYLOAD),
        "settings": asdict(settings),
        **git_state(REPO),
        "load_avg_start": list(os.getloadavg()),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 s per case (checks the benchmark)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5; 2 with --quick)")
    parser.add_argument("--duration", type=float, help="seconds per case and round (default 4; 2 with --quick)")
    parser.add_argument("--warmup", type=float, default=2.0, help="untimed seconds per case first (default 2)")
    parser.add_argument("--concurrency", default="1,50", help="comma-separated connection counts (default 1,50)")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=(os.cpu_count() or 1) >= 2,
        help="daemons on CPU 0, the load generator on CPU 1 (default: on with 2 or more CPUs)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON results (default {DEFAULT_OUT})")
    # the Python load generator's own process (internal)
    parser.add_argument("--loadgen-child", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--connections", type=int, default=1, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.loadgen_child:
        python_loadgen(args.loadgen_child, args.connections, args.duration, args.out)
        return 0
    loadgen = args.loadgen
    if loadgen == "auto":
        loadgen = "wrk" if shutil.which("wrk") else "python"
        if loadgen == "python":
            log("wrk not found (apt-get install -y wrk): using the Python load generator")
    if args.pin and (os.cpu_count() or 1) < 2:
        raise SystemExit("--pin needs at least 2 CPUs")
    settings = Settings(
        rounds=args.rounds or (2 if args.quick else 5),
        duration_s=args.duration or (2.0 if args.quick else 4.0),
        warmup_s=args.warmup,
        concurrency=tuple(int(c) for c in args.concurrency.split(",")),
        loadgen=loadgen,
        pin=args.pin,
    )
    started = time.perf_counter()
    meta = machine(settings)
    with tempfile.TemporaryDirectory(prefix="wasmhive-http-bench-") as scratch:
        raw = measure(settings, Path(scratch))
    results: dict[str, Any] = {"meta": meta}
    results["by_concurrency"] = aggregate(raw)
    results["idle_daemon_cores"] = raw["idle_daemon_cores"]
    results["access_log_lines"] = raw["access_log_lines"]
    results["outcomes"] = raw["outcomes"]
    results["targets"] = check_targets(results["by_concurrency"])
    results["rounds"] = {
        str(c): {case: [{k: v for k, v in r.items() if k != "hist"} for r in rs] for case, rs in cases.items()}
        for c, cases in raw["runs"].items()
    }
    meta["duration_s"] = time.perf_counter() - started
    meta["load_avg_end"] = list(os.getloadavg())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(args.out.suffix + ".tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(args.out)
    print_report(results)
    log(f"wrote {args.out} ({meta['duration_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
