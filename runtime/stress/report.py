"""The run's report: ``report.json`` (schema in docs/stress.md) and a self-contained ``report.html``.

The HTML page draws its charts as inline SVG (no scripts, no external
files): throughput and latency (p50, p99) per window with the fault windows
shaded, pool size over time, and breaker state over time.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import msgspec

from .checker import CheckResult, Counts, Invariant, LatencySummary, Recovery, Verdict, WindowStats
from .history import FaultRecord, History, Sample, SupervisionRecord
from .scenario import Scenario
from .schedule import FaultSchedule

__all__ = [
    "REPORT_VERSION",
    "FunctionTotals",
    "StressReport",
    "build_report",
    "exit_status",
    "render_html",
    "write_report",
]

REPORT_VERSION = 1
#: At most this many supervision events are kept in the report.
MAX_EVENTS = 2000


class FunctionTotals(msgspec.Struct, frozen=True):
    """What supervision did to one function during the run (differences of the first and last samples)."""

    crashes: int
    restarts: int
    retries: int
    rejections: int
    max_pool_size: int
    breaker_states: list[str]


class StressReport(msgspec.Struct, frozen=True):
    """Everything ``report.json`` holds (see docs/stress.md for each field)."""

    version: int
    verdict: Verdict
    invariants: list[Invariant]
    target: str
    seed: int
    schedule_fingerprint: str
    started_at: float
    scenario: Scenario
    counts: Counts
    latency: LatencySummary
    latency_by_function: dict[str, LatencySummary]
    windows: list[WindowStats]
    recovery: Recovery
    functions: dict[str, FunctionTotals]
    faults: list[FaultRecord]
    samples: list[Sample]
    supervision: list[SupervisionRecord]


def exit_status(verdict: Verdict) -> int:
    """The ``wasmhive stress`` exit status of a verdict: 0 valid, 1 invalid, 3 unknown."""
    return {"valid": 0, "invalid": 1, "unknown": 3}[verdict]


def build_report(
    scenario: Scenario,
    *,
    seed: int,
    schedule: FaultSchedule,
    target: str,
    history: History,
    result: CheckResult,
    started_at: float,
) -> StressReport:
    """Put the checker's result and the history's timelines together."""
    functions: dict[str, FunctionTotals] = {}
    for fn in scenario.functions:
        samples = [s for s in history.samples if s.function == fn.name]
        if not samples:
            continue
        first, last = samples[0], samples[-1]
        states: list[str] = []
        for s in samples:
            if s.breaker is not None and (not states or states[-1] != s.breaker):
                states.append(s.breaker)
        functions[fn.name] = FunctionTotals(
            crashes=last.crashes - first.crashes,
            restarts=last.restarts - first.restarts,
            retries=last.retries - first.retries,
            rejections=last.rejections - first.rejections,
            max_pool_size=max(s.pool_size for s in samples),
            breaker_states=states,
        )
    return StressReport(
        version=REPORT_VERSION,
        verdict=result.verdict,
        invariants=result.invariants,
        target=target,
        seed=seed,
        schedule_fingerprint=schedule.fingerprint(),
        started_at=started_at,
        scenario=scenario,
        counts=result.counts,
        latency=result.latency,
        latency_by_function=result.latency_by_function,
        windows=result.windows,
        recovery=result.recovery,
        functions=functions,
        faults=sorted(history.faults, key=lambda f: f.at),
        samples=history.samples,
        supervision=history.supervision[:MAX_EVENTS],
    )


def write_report(report: StressReport, directory: Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` into ``directory`` (made if missing)."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path, html_path = directory / "report.json", directory / "report.html"
    json_path.write_bytes(msgspec.json.format(msgspec.json.encode(report), indent=2))
    html_path.write_text(render_html(report), encoding="utf-8")
    return json_path, html_path


# --- HTML and SVG -------------------------------------------------------------------------

_W, _H, _L, _R, _T, _B = 760, 200, 56, 12, 12, 28
_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
_BREAKER_LEVELS = {"CLOSED": 0, "HALF_OPEN": 1, "OPEN": 2, "FORCED_OPEN": 2, "DISABLED": 0, "METRICS_ONLY": 0}

Series = tuple[str, list[tuple[float, float]]]


def _chart(
    title: str,
    series: Sequence[Series],
    *,
    x_max: float,
    shade: Sequence[tuple[float, float]],
    y_label: str,
    step: bool = False,
    y_ticks: dict[float, str] | None = None,
) -> str:
    """One SVG line chart; x in seconds from 0 to ``x_max``; fault windows shaded."""
    ys = [y for _, pts in series for _, y in pts]
    y_max = max([*ys, max(y_ticks) if y_ticks else 0.0]) or 1.0
    y_max *= 1.08
    pw, ph = _W - _L - _R, _H - _T - _B

    def px(x: float) -> float:
        return _L + pw * min(max(x / x_max, 0.0), 1.0)

    def py(y: float) -> float:
        return _T + ph * (1.0 - y / y_max)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" role="img" '
        f'aria-label="{html.escape(title)}">',
        f'<rect x="{_L}" y="{_T}" width="{pw}" height="{ph}" fill="#fff" stroke="#999"/>',
    ]
    for start, end in shade:
        parts.append(
            f'<rect x="{px(start):.1f}" y="{_T}" width="{max(1.0, px(end) - px(start)):.1f}" height="{ph}" '
            'fill="#f4a582" fill-opacity="0.3"><title>fault window</title></rect>'
        )
    ticks = y_ticks or {y_max / 1.08 * k / 4: f"{y_max / 1.08 * k / 4:.3g}" for k in range(5)}
    for value, label in ticks.items():
        y = py(value)
        parts.append(f'<line x1="{_L}" x2="{_L + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{_L - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{html.escape(label)}</text>')
    for k in range(6):
        x = x_max * k / 5
        parts.append(f'<text x="{px(x):.1f}" y="{_H - 12}" font-size="10" text-anchor="middle">{x:.3g}s</text>')
    parts.append(
        f'<text x="12" y="{_T + ph / 2:.0f}" font-size="10" transform="rotate(-90 12 {_T + ph / 2:.0f})" '
        f'text-anchor="middle">{html.escape(y_label)}</text>'
    )
    for i, (name, pts) in enumerate(series):
        if not pts:
            continue
        color = _COLORS[i % len(_COLORS)]
        coords: list[str] = []
        prev_y: float | None = None
        for x, y in pts:
            if step and prev_y is not None:
                coords.append(f"{px(x):.1f},{py(prev_y):.1f}")
            coords.append(f"{px(x):.1f},{py(y):.1f}")
            prev_y = y
        parts.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{" ".join(coords)}">'
            f"<title>{html.escape(name)}</title></polyline>"
        )
        parts.append(
            f'<text x="{_L + 8 + 150 * i}" y="{_T + 12}" font-size="11" fill="{color}">{html.escape(name)}</text>'
        )
    parts.append("</svg>")
    return f"<h3>{html.escape(title)}</h3>\n" + "".join(parts)


def render_html(report: StressReport) -> str:
    """The report as one HTML page with inline SVG charts."""
    scenario = report.scenario
    size = scenario.window
    shade = scenario.fault_windows() or ([(0.0, scenario.duration)] if scenario.faults else [])
    mid = [(w.start + size / 2, w) for w in report.windows]
    charts = [
        _chart(
            "Throughput per window",
            [
                ("ok/s", [(x, w.throughput) for x, w in mid]),
                ("errors/s", [(x, (w.answers - w.ok) / size) for x, w in mid]),
            ],
            x_max=scenario.duration,
            shade=shade,
            y_label="per second",
        ),
        _chart(
            "Latency of successful calls per window",
            [
                ("p50 (ms)", [(x, w.p50 * 1000) for x, w in mid if w.p50 is not None]),
                ("p99 (ms)", [(x, w.p99 * 1000) for x, w in mid if w.p99 is not None]),
            ],
            x_max=scenario.duration,
            shade=shade,
            y_label="ms",
        ),
    ]
    names = [f.name for f in scenario.functions]
    measured = [s for s in report.samples if s.at >= 0]
    charts.append(
        _chart(
            "Pool size",
            [(n, [(s.at, float(s.pool_size)) for s in measured if s.function == n]) for n in names],
            x_max=scenario.duration,
            shade=shade,
            y_label="actors",
            step=True,
        )
    )
    if any(s.breaker is not None for s in measured):
        charts.append(
            _chart(
                "Breaker state",
                [
                    (
                        n,
                        [
                            (s.at, float(_BREAKER_LEVELS.get(s.breaker, 0)))
                            for s in measured
                            if s.function == n and s.breaker
                        ],
                    )
                    for n in names
                ],
                x_max=scenario.duration,
                shade=shade,
                y_label="state",
                step=True,
                y_ticks={0.0: "closed", 1.0: "half-open", 2.0: "open"},
            )
        )
    rows = "".join(
        f'<tr class="{i.verdict}"><td>{html.escape(i.name)}</td><td>{i.verdict}</td>'
        f"<td>{html.escape(i.detail)}</td><td>{', '.join(map(str, i.examples))}</td></tr>"
        for i in report.invariants
    )
    c, lat = report.counts, report.latency

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v * 1000:.3f}"

    errors = ", ".join(f"{k}: {v}" for k, v in sorted(c.errors.items())) or "none"
    totals = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{t.crashes}</td><td>{t.restarts}</td><td>{t.retries}</td>"
        f"<td>{t.rejections}</td><td>{t.max_pool_size}</td>"
        f"<td>{html.escape(' → '.join(t.breaker_states) or '-')}</td></tr>"
        for n, t in report.functions.items()
    )
    faults = "".join(
        f"<tr><td>{f.at:.3f}</td><td>{f.kind}</td><td>{html.escape(f.function)}</td><td>{f.applied}</td>"
        f"<td>{html.escape(f.note)}</td></tr>"
        for f in report.faults[:300]
    )
    rec = report.recovery
    base_rate = rec.baseline_success
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>wasmhive stress report: {report.verdict}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 900px; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
td, th {{ border: 1px solid #ccc; padding: 3px 8px; font-size: 13px; }}
tr.valid td:nth-child(2) {{ color: #1a7f37; }} tr.invalid td:nth-child(2) {{ color: #cf222e; font-weight: bold; }}
tr.unknown td:nth-child(2) {{ color: #9a6700; }}
.verdict {{ font-size: 1.4em; }}
</style></head><body>
<h1>wasmhive stress report</h1>
<p class="verdict">verdict: <b>{report.verdict}</b> &middot; target {html.escape(report.target)}
&middot; seed {report.seed}
&middot; {scenario.duration:g}s measured after {scenario.warmup:g}s warm-up &middot; load {scenario.load.mode}
{f"{scenario.load.rate:g}/s" if scenario.load.rate else f"x{scenario.load.concurrency}"}</p>
<h2>Invariants</h2>
<table><tr><th>invariant</th><th>verdict</th><th>detail</th><th>example requests</th></tr>{rows}</table>
<h2>Requests</h2>
<p>{c.requests} requests ({c.measured} measured): {c.ok} ok, errors {html.escape(errors)}; untyped {c.untyped},
lost {c.lost}, answered twice {c.duplicate_answers}, late {c.late}; {c.executions} executions seen
({c.double_executions} requests executed more than once, {c.foreign_executions} flood messages).</p>
<p>Latency of successful calls (ms): p50 {ms(lat.p50)}, p95 {ms(lat.p95)}, p99 {ms(lat.p99)}, max {ms(lat.max)}.</p>
<p>Recovery: {html.escape(rec.detail)} (baseline success {"-" if base_rate is None else f"{base_rate:.4f}"},
baseline p99 {ms(rec.baseline_p99)} ms).</p>
{"".join(charts)}
<h2>Supervision</h2>
<table><tr><th>function</th><th>crashes</th><th>restarts</th><th>retries</th><th>rejections</th><th>max pool</th>
<th>breaker states</th></tr>{totals}</table>
<h2>Faults injected</h2>
<table><tr><th>at (s)</th><th>kind</th><th>function</th><th>applied</th><th>what</th></tr>{faults}</table>
</body></html>
"""
