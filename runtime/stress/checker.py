"""The checker: invariants over a run's history, each valid, invalid or unknown (Jepsen style).

Safety invariants (over every request, warm-up included):

* ``no_lost``: every request got an answer within ``deadline + grace``;
* ``no_duplicate_answers``: no request got two answers;
* ``typed_errors``: every error is a ``WasmhiveError`` subclass;
* ``at_most_once``: no request to a function not declared idempotent entered
  the guest more than once (counted by the target's probe at the guest
  boundary).  ``unknown`` if the target cannot see executions, or if it
  missed some (a reply with no execution seen).

Performance invariants (measured requests only, grouped in windows by
intended send time):

* ``recovery``: after the last fault window closes, the time until windows
  are back to the fault-free baseline (see :func:`compute_recovery`);
* ``p99_ratio`` (only with ``checks.max_p99_ratio``): the p99 of successful
  calls over the run is at most that many times the baseline p99.

The run's verdict is invalid if any invariant is invalid, else unknown if any
is unknown, else valid.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Literal

import msgspec

from .history import History
from .scenario import ChecksSpec, Scenario

__all__ = [
    "CheckResult",
    "Counts",
    "Invariant",
    "LatencySummary",
    "Recovery",
    "Verdict",
    "WindowStats",
    "check",
    "combine",
    "compute_recovery",
    "percentile",
]

Verdict = Literal["valid", "invalid", "unknown"]

#: At most this many example request ids per invariant.
EXAMPLES = 10


class Invariant(msgspec.Struct, frozen=True):
    """One invariant's verdict, why, and up to 10 request ids that show it."""

    name: str
    verdict: Verdict
    detail: str
    examples: list[int] = []


class LatencySummary(msgspec.Struct, frozen=True):
    """Latency of successful calls (seconds, from the intended send time); None without calls."""

    count: int
    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None


class WindowStats(msgspec.Struct, frozen=True):
    """The measured requests intended to be sent in ``[start, start + window)``."""

    start: float
    answers: int
    ok: int
    errors: dict[str, int]
    #: Successful calls per second.
    throughput: float
    p50: float | None
    p99: float | None
    #: Inside a fault window (at least partly).
    faulted: bool


class Recovery(msgspec.Struct, frozen=True):
    """Recovery after the last fault window (times in seconds after the warm-up)."""

    baseline_success: float | None
    baseline_p99: float | None
    last_fault_end: float | None
    recovered_at: float | None
    #: ``recovered_at - last_fault_end``.
    time: float | None
    verdict: Verdict
    detail: str


class Counts(msgspec.Struct, frozen=True):
    """How requests ended."""

    requests: int
    measured: int
    ok: int
    errors: dict[str, int]
    untyped: int
    lost: int
    duplicate_answers: int
    #: Answers later than the deadline (but within the grace).
    late: int
    executions: int
    #: Executions of payloads that are not requests (mailbox floods).
    foreign_executions: int
    double_executions: int


class CheckResult(msgspec.Struct, frozen=True):
    """Every verdict and the statistics behind them."""

    verdict: Verdict
    invariants: list[Invariant]
    counts: Counts
    latency: LatencySummary
    latency_by_function: dict[str, LatencySummary]
    windows: list[WindowStats]
    recovery: Recovery


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` percentile (0-100) of already sorted values; None if empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _summary(values: list[float]) -> LatencySummary:
    values = sorted(values)
    return LatencySummary(
        len(values),
        percentile(values, 50),
        percentile(values, 95),
        percentile(values, 99),
        values[-1] if values else None,
    )


def combine(verdicts: Sequence[Verdict]) -> Verdict:
    """Invalid if any is invalid, else unknown if any is unknown, else valid."""
    if "invalid" in verdicts:
        return "invalid"
    if "unknown" in verdicts:
        return "unknown"
    return "valid"


def check(history: History, scenario: Scenario) -> CheckResult:
    """Judge a run: every invariant's verdict, the counts, latencies, windows and recovery."""
    requests = history.requests
    answers_of: dict[int, int] = Counter(a.request for a in history.answers)
    first_answer: dict[int, tuple[float, str, str | None]] = {}
    for a in history.answers:
        first_answer.setdefault(a.request, (a.at, a.outcome, a.error))

    lost = [r.id for r in requests if answers_of.get(r.id, 0) == 0]
    duplicates = [r for r, n in answers_of.items() if n > 1]
    untyped = [a.request for a in history.answers if a.outcome == "untyped"]
    invariants = [
        _invariant("no_lost", lost, f"{len(lost)} of {len(requests)} requests got no answer", "every request answered"),
        _invariant(
            "no_duplicate_answers",
            duplicates,
            f"{len(duplicates)} requests were answered more than once",
            "no request answered twice",
        ),
        _invariant(
            "typed_errors",
            untyped,
            f"{len(untyped)} answers were errors that are not WasmhiveError: " + _untyped_kinds(history),
            "every error was a typed WasmhiveError",
        ),
    ]
    executions: Counter[int] = Counter()
    foreign = 0
    for e in history.executions:
        if e.request is None:
            foreign += 1
        else:
            executions[e.request] += 1
    at_most_once, doubles = _at_most_once(history, scenario, executions, first_answer)
    invariants.append(at_most_once)

    # Statistics of measured requests, by the window they were meant to be sent in.
    size = scenario.window
    n_windows = max(1, math.ceil(scenario.duration / size - 1e-9))
    fault_windows = scenario.fault_windows()
    per_window: list[list[float]] = [[] for _ in range(n_windows)]
    answered = [0] * n_windows
    ok_in = [0] * n_windows
    errors_in: list[Counter[str]] = [Counter() for _ in range(n_windows)]
    all_ok: list[float] = []
    by_function: dict[str, list[float]] = {f.name: [] for f in scenario.functions}
    errors: Counter[str] = Counter()
    late = 0
    ok_total = 0
    measured = 0
    for r in requests:
        if r.warmup:
            continue
        measured += 1
        first = first_answer.get(r.id)
        if first is None:
            continue
        at, outcome, error = first
        if at - r.sent > scenario.deadline:
            late += 1
        w = min(n_windows - 1, max(0, int(r.intended // size)))
        answered[w] += 1
        if outcome == "ok":
            took = at - r.intended
            per_window[w].append(took)
            all_ok.append(took)
            by_function.setdefault(r.function, []).append(took)
            ok_in[w] += 1
            ok_total += 1
        else:
            errors_in[w][error or "?"] += 1
            errors[error or "?"] += 1
    windows = []
    for w in range(n_windows):
        start = w * size
        lat = sorted(per_window[w])
        windows.append(
            WindowStats(
                start=round(start, 6),
                answers=answered[w],
                ok=ok_in[w],
                errors=dict(errors_in[w]),
                throughput=ok_in[w] / size,
                p50=percentile(lat, 50),
                p99=percentile(lat, 99),
                faulted=any(s < start + size and start < e for s, e in fault_windows),
            )
        )

    baseline_latencies = sorted(
        lat
        for w, ws in enumerate(windows)
        if fault_windows and ws.start + size <= fault_windows[0][0] + 1e-9
        for lat in per_window[w]
    )
    recovery = compute_recovery(
        windows,
        fault_windows=fault_windows,
        has_unwindowed_faults=any(f.window is None for f in scenario.faults),
        window=size,
        duration=scenario.duration,
        checks=scenario.checks,
        baseline_p99=percentile(baseline_latencies, 99),
    )
    invariants.append(Invariant("recovery", recovery.verdict, recovery.detail))
    latency = _summary(all_ok)
    if scenario.checks.max_p99_ratio is not None:
        invariants.append(_p99_ratio(latency.p99, recovery.baseline_p99, scenario.checks.max_p99_ratio))

    counts = Counts(
        requests=len(requests),
        measured=measured,
        ok=ok_total,
        errors=dict(errors),
        untyped=len(untyped),
        lost=len(lost),
        duplicate_answers=len(duplicates),
        late=late,
        executions=sum(executions.values()),
        foreign_executions=foreign,
        double_executions=doubles,
    )
    return CheckResult(
        verdict=combine([i.verdict for i in invariants]),
        invariants=invariants,
        counts=counts,
        latency=latency,
        latency_by_function={name: _summary(values) for name, values in by_function.items()},
        windows=windows,
        recovery=recovery,
    )


def _untyped_kinds(history: History) -> str:
    """Each untyped error type once, with the message of its first occurrence (where it was raised)."""
    first: dict[str, str | None] = {}
    for a in history.answers:
        if a.outcome == "untyped":
            first.setdefault(a.error or "?", a.message)
    return "; ".join(f"{kind} ({message})" if message else kind for kind, message in sorted(first.items()))


def _invariant(name: str, bad: list[int], failed: str, held: str) -> Invariant:
    if bad:
        return Invariant(name, "invalid", failed, sorted(bad)[:EXAMPLES])
    return Invariant(name, "valid", held)


def _at_most_once(
    history: History,
    scenario: Scenario,
    executions: Counter[int],
    first_answer: dict[int, tuple[float, str, str | None]],
) -> tuple[Invariant, int]:
    strict = {f.name for f in scenario.functions if not f.idempotent}
    doubles = [r.id for r in history.requests if r.function in strict and executions.get(r.id, 0) > 1]
    if not strict:
        return Invariant("at_most_once", "valid", "every function is declared idempotent: nothing to check"), 0
    if doubles:
        return (
            Invariant(
                "at_most_once",
                "invalid",
                f"{len(doubles)} requests to functions not declared idempotent were executed more than once "
                f"(at most {max(executions[d] for d in doubles)} times)",
                doubles[:EXAMPLES],
            ),
            len(doubles),
        )
    if not history.executions_observed:
        return Invariant("at_most_once", "unknown", "the target cannot see executions at the guest boundary"), 0
    unseen = [
        r.id
        for r in history.requests
        if r.function in strict and executions.get(r.id, 0) == 0 and first_answer.get(r.id, (0, "", None))[1] == "ok"
    ]
    if unseen:
        return (
            Invariant(
                "at_most_once",
                "unknown",
                f"the probe missed {len(unseen)} executions (replies with no execution seen): counts not trusted",
                unseen[:EXAMPLES],
            ),
            0,
        )
    return Invariant("at_most_once", "valid", "no request to a non-idempotent function ran twice"), 0


def compute_recovery(
    windows: Sequence[WindowStats],
    *,
    fault_windows: Sequence[tuple[float, float]],
    has_unwindowed_faults: bool,
    window: float,
    duration: float,
    checks: ChecksSpec,
    baseline_p99: float | None,
) -> Recovery:
    """Recovery after the last fault window, at the resolution of one window.

    The **baseline** is the windows that end before the first fault window
    starts: their pooled success rate and ``baseline_p99`` (the p99 of their
    successful calls).  A window is **good** if it has at least
    ``checks.min_window_answers`` answers, a success rate of at least
    ``baseline - success_tolerance``, and a p99 of at most
    ``max(baseline_p99 * p99_factor, baseline_p99 + p99_slack)``.  The run
    has **recovered at** the start of the first window that starts at or
    after the end of the last fault window and that, with the window after
    it, is good (the last window of the run may stand alone).  Recovery time
    is ``recovered_at - last_fault_end``.

    Verdicts: no faults at all is valid (nothing to recover from); faults
    without a window, no baseline window, or no window left after the faults
    is unknown; recovered is valid (invalid if ``checks.recovery_within`` is
    set and exceeded); not recovered is invalid if ``recovery_within`` (plus
    the two windows it takes to see it) elapsed before the run ended, else
    unknown.
    """
    if not fault_windows and not has_unwindowed_faults:
        return Recovery(None, None, None, None, None, "valid", "no faults: nothing to recover from")
    if has_unwindowed_faults:
        return Recovery(None, None, None, None, None, "unknown", "some faults have no window: they never end")
    first_start = fault_windows[0][0]
    last_end = max(e for _, e in fault_windows)
    baseline = [w for w in windows if w.start + window <= first_start + 1e-9]
    answers = sum(w.answers for w in baseline)
    if not baseline or answers == 0 or baseline_p99 is None:
        return Recovery(
            None, None, last_end, None, None, "unknown", "no baseline: no answered window before the first fault"
        )
    rate = sum(w.ok for w in baseline) / answers
    p99_limit = max(baseline_p99 * checks.p99_factor, baseline_p99 + checks.p99_slack)

    def good(w: WindowStats) -> bool:
        if w.answers < checks.min_window_answers or w.p99 is None:
            return False
        return w.ok / w.answers >= rate - checks.success_tolerance and w.p99 <= p99_limit

    after = [w for w in windows if w.start >= last_end - 1e-9]
    if not after:
        return Recovery(rate, baseline_p99, last_end, None, None, "unknown", "the run ended with the last fault")
    recovered_at = None
    for i, w in enumerate(after):
        if good(w) and (i + 1 == len(after) or good(after[i + 1])):
            recovered_at = w.start
            break
    bound = checks.recovery_within
    if recovered_at is not None:
        took = max(0.0, recovered_at - last_end)
        if bound is not None and took > bound:
            return Recovery(
                rate, baseline_p99, last_end, recovered_at, took, "invalid", f"recovered after {took:g}s > {bound:g}s"
            )
        return Recovery(
            rate,
            baseline_p99,
            last_end,
            recovered_at,
            took,
            "valid",
            f"back to baseline {took:g}s after the last fault (success >= {rate - checks.success_tolerance:.3f}, "
            f"p99 <= {p99_limit * 1000:.2f} ms)",
        )
    observed = duration - last_end
    if bound is not None and observed >= bound + 2 * window:
        return Recovery(rate, baseline_p99, last_end, None, None, "invalid", f"not back to baseline within {bound:g}s")
    return Recovery(
        rate,
        baseline_p99,
        last_end,
        None,
        None,
        "unknown",
        f"not back to baseline in the {observed:g}s the run went on after the last fault",
    )


def _p99_ratio(p99: float | None, baseline: float | None, limit: float) -> Invariant:
    if p99 is None or baseline is None or baseline <= 0:
        return Invariant("p99_ratio", "unknown", "no baseline p99 (or no successful call) to compare with")
    ratio = p99 / baseline
    verdict: Verdict = "valid" if ratio <= limit else "invalid"
    return Invariant(
        "p99_ratio",
        verdict,
        f"p99 {p99 * 1000:.2f} ms is {ratio:.2f}x the fault-free p99 {baseline * 1000:.2f} ms (limit {limit:g}x)",
    )
