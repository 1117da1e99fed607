"""The stress checker on hand-built histories: each invariant can fail, and recovery is computed as documented."""

from __future__ import annotations

import gc

import msgspec

from wasmhive.runtime import CallTimeout
from wasmhive.runtime.stress.checker import WindowStats, check, combine, compute_recovery, percentile
from wasmhive.runtime.stress.history import AnswerRecord, History
from wasmhive.runtime.stress.scenario import ChecksSpec, parse_scenario

SCENARIO = """
duration = 4.0
warmup = 0.0
[[functions]]
name = "strict"
[[functions]]
name = "lenient"
idempotent = true
[load]
rate = 10.0
"""


def scenario(extra: str = "") -> object:
    return parse_scenario(SCENARIO + extra)


def history_with(n: int, function: str = "strict") -> History:
    h = History()
    h.executions_observed = True
    for i in range(n):
        h.add_request(function, b"p%d" % i, intended=i * 0.1, warmup=False)
    return h


def answer_all(h: History) -> None:
    for r in h.requests:
        h.executed(b"p%d" % r.id, "strict-1")
        h.answer(r.id, "ok")


def verdicts(h: History, extra: str = "") -> dict[str, str]:
    return {i.name: i.verdict for i in check(h, scenario(extra)).invariants}  # type: ignore[arg-type]


def test_a_clean_history_is_valid() -> None:
    h = history_with(20)
    answer_all(h)
    result = check(h, scenario())  # type: ignore[arg-type]
    assert result.verdict == "valid", result.invariants
    assert result.counts.ok == 20 and result.counts.executions == 20


def test_a_request_without_answer_is_lost() -> None:
    h = history_with(5)
    answer_all(h)
    h.requests.append(h.add_request("strict", b"never", intended=0.6, warmup=False))
    h.requests.pop()  # (add_request already appended it)
    h.give_up(5)
    result = check(h, scenario())  # type: ignore[arg-type]
    lost = next(i for i in result.invariants if i.name == "no_lost")
    assert (lost.verdict, lost.examples) == ("invalid", [5])
    assert result.verdict == "invalid" and result.counts.lost == 1


def test_two_answers_to_one_request_are_a_duplicate() -> None:
    h = history_with(3)
    answer_all(h)
    h.answer(1, "error", CallTimeout("late", function="strict"))
    assert verdicts(h)["no_duplicate_answers"] == "invalid"


def test_an_untyped_error_is_invalid_and_a_typed_one_is_not() -> None:
    h = history_with(2)
    h.executed(b"p0", "strict-1")
    h.answer(0, "error", CallTimeout("slow", function="strict"))
    h.executed(b"p1", "strict-1")
    h.answer(1, "untyped", ConnectionResetError("boom"))
    result = check(h, scenario())  # type: ignore[arg-type]
    typed = next(i for i in result.invariants if i.name == "typed_errors")
    assert typed.verdict == "invalid" and typed.examples == [1] and "ConnectionResetError" in typed.detail
    assert result.counts.errors == {"CallTimeout": 1, "ConnectionResetError": 1} and result.counts.untyped == 1


def test_double_execution_is_invalid_only_for_functions_not_declared_idempotent() -> None:
    h = history_with(2)
    answer_all(h)
    h.executed(b"p1", "strict-2")  # a retry ran request 1 again
    assert verdicts(h)["at_most_once"] == "invalid"
    lenient = history_with(2, "lenient")
    answer_all(lenient)
    lenient.executed(b"p1", "lenient-2")
    assert verdicts(lenient)["at_most_once"] == "valid"


def test_executions_that_are_not_requests_do_not_count() -> None:
    h = history_with(2)
    answer_all(h)
    h.executed(b"flood-1", "strict-1")
    result = check(h, scenario())  # type: ignore[arg-type]
    assert result.verdict == "valid" and result.counts.foreign_executions == 1


def test_at_most_once_is_unknown_when_executions_cannot_be_seen() -> None:
    h = history_with(2)
    for r in h.requests:
        h.answer(r.id, "ok")
    assert verdicts(h)["at_most_once"] == "unknown"  # replies with no execution seen: the probe is blind
    h.executions_observed = False
    result = check(h, scenario())  # type: ignore[arg-type]
    assert result.verdict == "unknown"


def window(start: float, answers: int, ok: int, p99: float | None) -> WindowStats:
    return WindowStats(start, answers, ok, {}, float(ok), p99, p99, False)


def recovery(windows: list[WindowStats], **checks: float) -> object:
    return compute_recovery(
        windows,
        fault_windows=[(2.0, 4.0)],
        has_unwindowed_faults=False,
        window=1.0,
        duration=float(len(windows)),
        checks=ChecksSpec(**checks),  # type: ignore[arg-type]
        baseline_p99=0.010,
    )


def test_recovery_is_the_first_good_window_after_the_faults_that_stays_good() -> None:
    base = [window(0, 100, 100, 0.010), window(1, 100, 100, 0.010)]
    faulted = [window(2, 100, 50, 0.5), window(3, 100, 60, 0.4)]
    after = [window(4, 100, 90, 0.2), window(5, 100, 100, 0.011), window(6, 100, 90, 0.011), window(7, 100, 100, 0.012)]
    r = recovery(base + faulted + after)
    # window 5 is good but window 6 is not (success 90% < 98%): recovered at 6? no, 6 is bad; at 7 (the last).
    assert (r.verdict, r.recovered_at, r.time) == ("valid", 7.0, 3.0)  # type: ignore[attr-defined]
    r = recovery(base + faulted + after, recovery_within=2.0)
    assert r.verdict == "invalid"  # type: ignore[attr-defined]


def test_recovery_is_unknown_without_a_baseline_or_time_after_the_faults() -> None:
    no_baseline = compute_recovery(
        [window(0, 10, 10, 0.01)] * 6,
        fault_windows=[(0.0, 2.0)],
        has_unwindowed_faults=False,
        window=1.0,
        duration=6.0,
        checks=ChecksSpec(),
        baseline_p99=None,
    )
    assert no_baseline.verdict == "unknown"
    still_bad = recovery(
        [window(0, 100, 100, 0.01), window(1, 100, 100, 0.01)] + [window(i, 100, 10, 0.5) for i in range(2, 6)]
    )
    assert still_bad.verdict == "unknown"  # type: ignore[attr-defined]
    # ... but invalid once the bound (plus the two windows needed to see it) has passed.
    long_bad = recovery(
        [window(0, 100, 100, 0.01), window(1, 100, 100, 0.01)] + [window(i, 100, 10, 0.5) for i in range(2, 9)],
        recovery_within=1.0,
    )
    assert long_bad.verdict == "invalid"  # type: ignore[attr-defined]


def test_recovery_from_a_real_history_uses_the_windows_before_the_first_fault() -> None:
    h = History()
    h.executions_observed = True
    seq = 0
    for t10 in range(60):  # 6 s, 10 requests per second; failures and slowness in [2, 4)
        t = t10 / 10
        h.add_request("strict", b"r%d" % seq, intended=t, warmup=False)
        h.executed(b"r%d" % seq, "strict-1")
        faulty = 2.0 <= t < 4.0
        if faulty and t10 % 2:
            h.answer(seq, "error", CallTimeout("x", function="strict"))
        else:
            h.answers.append(AnswerRecord(seq, t + (0.3 if faulty else 0.001), "ok"))
        seq += 1
    extra = '\n[[faults]]\nkind = "kill"\nrate = 1.0\nwindow = [2.0, 4.0]\n'
    s = parse_scenario(SCENARIO.replace("duration = 4.0", "duration = 6.0") + extra)
    s = msgspec.structs.replace(s, checks=ChecksSpec(min_window_answers=5))
    result = check(h, s)
    assert result.recovery.baseline_success == 1.0
    assert result.recovery.recovered_at == 4.0 and result.recovery.verdict == "valid"
    assert [w.faulted for w in result.windows] == [False, False, True, True, False, False]
    assert result.windows[2].errors == {"CallTimeout": 5}


def test_percentile_and_combine() -> None:
    assert percentile([], 99) is None
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 99) == 99.0
    assert combine(["valid", "unknown"]) == "unknown"
    assert combine(["unknown", "invalid", "valid"]) == "invalid"
    assert combine(["valid"]) == "valid"


def test_history_records_are_invisible_to_the_garbage_collector() -> None:
    # A run keeps about a million records; tracked, every full collection walks them all.
    h = history_with(1)
    h.executed(b"p0", "strict-1")
    h.answer(0, "untyped", ValueError("x"))
    records = [*h.requests, *h.answers, *h.executions]
    assert len(records) == 3
    assert not any(gc.is_tracked(r) for r in records)
