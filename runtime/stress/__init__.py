"""The fault-injection stress harness: load, real faults, exactly-once accounting, verdicts, a report.

::

    from wasmhive.runtime.stress import load_scenario, run_stress

    report = await run_stress(load_scenario("examples/stress/crash-loop.toml"), report_dir="out")
    assert report.verdict == "valid"

Modules, one job each: :mod:`.scenario` (TOML scenarios), :mod:`.schedule`
(the seeded fault schedule), :mod:`.load` (payloads, open and closed loop),
:mod:`.target` (the :class:`Target` protocol), :mod:`.embedded` (the
in-process target), :mod:`.faults` (its injectors), :mod:`.daemon_target`
(a ``wasmhive serve`` over HTTP) with :mod:`.daemon_process`, :mod:`.proxy`,
:mod:`.wire`, :mod:`.scrape` and :mod:`.trace_reader`, :mod:`.history` (the
record), :mod:`.checker` (invariants and verdicts), :mod:`.report`
(report.json and report.html), :mod:`.progress`, :mod:`.runner`
(:func:`run_stress`) and :mod:`.command` (``wasmhive stress``).  The guide
is docs/stress.md.
"""

from .checker import CheckResult, Invariant, Verdict, check
from .daemon_target import DaemonTarget
from .embedded import EmbeddedTarget
from .history import History
from .progress import Progress
from .report import StressReport, exit_status, write_report
from .runner import run_stress
from .scenario import Scenario, ScenarioError, load_scenario, parse_scenario
from .schedule import FaultEvent, FaultSchedule, build_schedule
from .target import FunctionState, Injection, Target

__all__ = [
    "CheckResult",
    "DaemonTarget",
    "EmbeddedTarget",
    "FaultEvent",
    "FaultSchedule",
    "FunctionState",
    "History",
    "Injection",
    "Invariant",
    "Progress",
    "Scenario",
    "ScenarioError",
    "StressReport",
    "Target",
    "Verdict",
    "build_schedule",
    "check",
    "exit_status",
    "load_scenario",
    "parse_scenario",
    "run_stress",
    "write_report",
]
