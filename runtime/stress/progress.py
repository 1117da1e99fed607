"""A live progress display: one line rewritten on a terminal, a line every few seconds otherwise."""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import TYPE_CHECKING, TextIO

from .history import History
from .scenario import Scenario

if TYPE_CHECKING:
    from .report import StressReport

__all__ = ["Progress"]


class Progress:
    """Shows elapsed time, the answer rate, errors by kind, pool size and breaker state.

    On a TTY the line is redrawn (``\\r``) at most every ``refresh`` seconds;
    otherwise a full line is printed every ``every`` seconds.
    """

    def __init__(self, stream: TextIO | None = None, *, refresh: float = 0.25, every: float = 5.0) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._tty = bool(getattr(self._stream, "isatty", lambda: False)())
        self._period = refresh if self._tty else every
        self._last = 0.0
        self._seen = 0
        self._errors: Counter[str] = Counter()
        self._ok = 0
        self._rate_at = (0.0, 0)

    def update(self, history: History, scenario: Scenario) -> None:
        """Redraw if it is time (called by the runner at every sample)."""
        clock = time.monotonic()
        if clock - self._last < self._period:
            return
        self._last = clock
        answers = history.answers
        for a in answers[self._seen :]:
            if a.outcome == "ok":
                self._ok += 1
            else:
                self._errors[a.error or "?"] += 1
        self._seen = len(answers)
        at = history.now()
        last_at, last_n = self._rate_at
        rate = (self._seen - last_n) / (at - last_at) if at > last_at else 0.0
        self._rate_at = (at, self._seen)
        self._write(self._line(history, scenario, at, rate))

    def _line(self, history: History, scenario: Scenario, at: float, rate: float) -> str:
        phase = "warm-up" if at < 0 else f"{min(at, scenario.duration):5.1f}/{scenario.duration:g}s"
        latest: dict[str, tuple[int, str | None]] = {}
        for s in reversed(history.samples[-4 * len(scenario.functions) :]):
            latest.setdefault(s.function, (s.pool_size, s.breaker))
        pools = " ".join(
            f"{name}:pool={size}" + (f",{breaker.lower()}" if breaker else "")
            for name, (size, breaker) in sorted(latest.items())
        )
        errors = ",".join(f"{k}={v}" for k, v in self._errors.most_common(4)) or "none"
        return f"{phase}  {rate:7.0f} ans/s  ok={self._ok}  errors: {errors}  lost={len(history.lost)}  {pools}"

    def _write(self, line: str) -> None:
        if self._tty:
            self._stream.write("\r\x1b[2K" + line)
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def finish(self, report: StressReport) -> None:
        """End the live line and print the verdicts."""
        if self._tty:
            self._stream.write("\n")
        for inv in report.invariants:
            self._stream.write(f"{inv.verdict.upper():8} {inv.name}: {inv.detail}\n")
        self._stream.write(f"verdict: {report.verdict}\n")
        self._stream.flush()
