"""The stress harness against a real ``wasmhive serve`` subprocess: the daemon target, its faults, its verdicts."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from wasmhive.actors.errors import CircuitOpen, GuestTrap, UnknownFunction
from wasmhive.runtime.daemon.config import load_config
from wasmhive.runtime.daemon.errors import RequestTimeout
from wasmhive.runtime.stress import Scenario, ScenarioError, build_schedule, parse_scenario, run_stress
from wasmhive.runtime.stress.command import stress
from wasmhive.runtime.stress.daemon_process import DaemonProcess, daemon_config, to_toml
from wasmhive.runtime.stress.daemon_target import DaemonTarget
from wasmhive.runtime.stress.proxy import RequestFramer
from wasmhive.runtime.stress.report import StressReport
from wasmhive.runtime.stress.wire import UntypedAnswer, error_from_answer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

#: Generous deadlines and tolerances: the machine running the tests may be busy.
HEAD = """
seed = {seed}
duration = {duration}
warmup = 0.5
deadline = 2.0
grace = 1.0
window = 0.5
checks = {{ p99_factor = 20.0, p99_slack = 0.2, success_tolerance = 0.2 }}
[[functions]]
name = "echo"
module = "echo.wat"
options = {{ instances = 2, timeout = 0.5, retry = {{ max_attempts = 3 }} }}
[load]
rate = 100.0
"""

KILL = """
[[faults]]
kind = "daemon_kill"
rate = 1.0
window = [0.8, 1.6]
restart_after = 0.3
"""

RESET = """
[[faults]]
kind = "reset_connection"
probability = 0.1
window = [0.5, 1.0]
[[faults]]
kind = "slow_connection"
latency = 0.01
jitter = 0.005
window = [1.0, 1.5]
"""

#: The planted defect: a retry policy that re-runs calls after the guest started (idempotent = true) on a
#: function the scenario declares NOT idempotent, and a guest that traps (faulty.wat traps on "!...").
DOUBLE_RUN = """
seed = 1
duration = 1.5
warmup = 0.3
deadline = 2.0
grace = 1.0
[[functions]]
name = "faulty"
module = "faulty.wat"
idempotent = false
payload = { kind = "template", template = "!{seq}" }
options = { instances = 2, retry = { max_attempts = 3, idempotent = true, budget_max_tokens = 1000.0 } }
[load]
rate = 50.0
"""


def scenario(text: str) -> Scenario:
    return parse_scenario(text, base_dir=EXAMPLES)


def verdicts(report: StressReport) -> dict[str, str]:
    return {i.name: i.verdict for i in report.invariants}


SAFETY = ("no_lost", "no_duplicate_answers", "typed_errors", "at_most_once")


def assert_safe(report: StressReport) -> None:
    got = verdicts(report)
    assert all(got[name] == "valid" for name in SAFETY), report.invariants


# --- whole runs against a real daemon -------------------------------------------------------


def test_a_healthy_run_against_the_daemon_is_valid_from_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "healthy.toml"
    path.write_text(HEAD.format(seed=3, duration=2.0).replace('module = "echo.wat"', f'module = "{EXAMPLES}/echo.wat"'))
    result = CliRunner().invoke(stress, [str(path), "--target", "daemon", "-q", "--report", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    report = msgspec.json.decode((tmp_path / "out" / "report.json").read_bytes())
    assert report["verdict"] == "valid" and report["target"] == "daemon"
    counts = report["counts"]
    assert counts["ok"] == counts["measured"] > 100
    assert counts["executions"] == counts["requests"]  # the trace saw every call enter the guest
    samples = report["samples"]
    assert samples and all(s["pool_size"] == 2 and not s["stale"] for s in samples)


@pytest.mark.trio
async def test_daemon_kill_loses_nothing_and_the_daemon_comes_back_with_its_functions() -> None:
    s = scenario(HEAD.format(seed=0, duration=3.0) + KILL)
    assert len(build_schedule(s).events) == 1
    report = await run_stress(s, target=DaemonTarget())
    assert_safe(report)
    assert report.counts.lost == report.counts.untyped == report.counts.double_executions == 0
    transport = report.counts.errors.get("ConnectionFailed", 0) + report.counts.errors.get("ConnectionReset", 0)
    assert transport > 0, report.counts  # the kill was real: calls failed while the daemon was down
    kills = [f for f in report.faults if f.kind == "daemon_kill"]
    assert kills[0].applied and "SIGKILL" in kills[0].note
    back = [f for f in kills if f.note.startswith("restarted")]
    assert back and back[0].applied and "every function is back" in back[0].note
    assert any(s.stale for s in report.samples)  # sampled while down: the last values, marked
    # Calls succeed after the restart: the last window is all replies.
    assert report.windows[-1].ok == report.windows[-1].answers > 0


@pytest.mark.trio
async def test_reset_connections_give_typed_connection_resets_and_the_run_stays_valid() -> None:
    report = await run_stress(scenario(HEAD.format(seed=3, duration=2.0) + RESET), target=DaemonTarget())
    assert_safe(report)
    resets = [f for f in report.faults if f.kind == "reset_connection"]
    assert resets and report.counts.errors.get("ConnectionReset") == len(resets)
    # Indeterminate for the client, settled by the trace: each reset request ran once.
    assert report.counts.executions == report.counts.requests
    slowed = [f for f in report.faults if f.kind == "slow_connection"]
    assert slowed and slowed[0].applied


def test_a_retry_that_reruns_a_non_idempotent_call_is_invalid_and_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "double.toml"
    path.write_text(DOUBLE_RUN.replace('module = "faulty.wat"', f'module = "{EXAMPLES}/faulty.wat"'))
    result = CliRunner().invoke(stress, [str(path), "--target", "daemon", "-q", "--report", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert "INVALID  at_most_once" in result.output
    report = msgspec.json.decode((tmp_path / "out" / "report.json").read_bytes())
    assert report["counts"]["double_executions"] > 0
    assert {"GuestTrap", "ActorCrashed"} & set(report["counts"]["errors"])  # the daemon's JSON errors, rebuilt


@pytest.mark.trio
async def test_a_running_daemon_by_url_calls_only(tmp_path: Path) -> None:
    s = scenario(HEAD.format(seed=3, duration=1.0))
    daemon = DaemonProcess(tmp_path, daemon_config(s, trace=tmp_path / "trace.jsonl"))
    await daemon.start()
    try:
        target = DaemonTarget(daemon.url)
        assert "daemon_kill" not in target.supported_faults()
        report = await run_stress(s, target=target)
        assert verdicts(report)["at_most_once"] == "unknown"  # executions are not observable from outside
        assert report.verdict == "unknown" and report.counts.ok == report.counts.measured
        missing = msgspec.structs.replace(
            s, functions=[*s.functions, msgspec.structs.replace(s.functions[0], name="nope")]
        )
        with pytest.raises(ScenarioError, match="nope"):
            await run_stress(missing, target=DaemonTarget(daemon.url))
        with pytest.raises(ScenarioError, match="daemon_kill"):
            await run_stress(scenario(HEAD.format(seed=0, duration=3.0) + KILL), target=DaemonTarget(daemon.url))
    finally:
        await daemon.terminate()


# --- the pieces ------------------------------------------------------------------------------


def test_error_answers_become_typed_errors_or_untyped_ones() -> None:
    trap = error_from_answer(502, b'{"error": "GuestTrap", "message": "unreachable", "function": "f"}')
    assert isinstance(trap, GuestTrap) and trap.function == "f"
    assert isinstance(error_from_answer(404, b'{"error": "UnknownFunction", "message": "x"}'), UnknownFunction)
    assert isinstance(error_from_answer(503, b'{"error": "CircuitOpen", "message": "x"}'), CircuitOpen)
    assert isinstance(error_from_answer(504, b'{"error": "RequestTimeout", "message": "x"}'), RequestTimeout)
    assert isinstance(error_from_answer(500, b"Internal Server Error"), UntypedAnswer)
    assert isinstance(error_from_answer(500, b'{"error": "NoSuchKind", "message": "x"}'), UntypedAnswer)
    assert isinstance(error_from_answer(502, b'{"detail": "bad gateway"}'), UntypedAnswer)


def test_the_framer_finds_each_request_and_its_id() -> None:
    framer = RequestFramer()
    one = b"POST /v1/invoke/echo HTTP/1.1\r\nHost: x\r\nX-Request-Id: wh-stress-7\r\nContent-Length: 5\r\n\r\nhello"
    two = b"POST /v1/invoke/echo HTTP/1.1\r\ncontent-length: 0\r\n\r\n"
    assert framer.feed(one[:20]) == []
    assert framer.feed(one[20:-2]) == []
    assert framer.feed(one[-2:] + two) == ["wh-stress-7", None]
    chunked = RequestFramer()
    assert chunked.feed(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n") == []
    assert chunked.lost


def test_the_generated_daemon_config_is_valid_and_carries_the_options(tmp_path: Path) -> None:
    s = scenario(HEAD.format(seed=3, duration=1.0))
    path = tmp_path / "wasmhive.toml"
    path.write_text(to_toml(daemon_config(s, trace=tmp_path / "trace.jsonl")))
    config = load_config(path)
    assert config.server.access_log is False and config.server.trace_executions == str(tmp_path / "trace.jsonl")
    (echo,) = config.deploy
    assert echo.name == "echo" and Path(echo.path) == EXAMPLES / "echo.wat"
    assert echo.options.instances == 2 and echo.options.retry is not None and echo.options.retry.max_attempts == 3
    with pytest.raises(ScenarioError, match="module"):
        daemon_config(
            msgspec.structs.replace(s, functions=[msgspec.structs.replace(s.functions[0], module=None)]),
            trace=tmp_path / "t",
        )


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ('kind = "daemon_kill"\nprobability = 0.1', "takes a rate"),
        ('kind = "daemon_kill"\nrate = 1.0\nfunction = "echo"', "whole daemon"),
        ('kind = "reset_connection"\nrate = 1.0', "takes a probability"),
        ('kind = "slow_connection"\nprobability = 0.5\nlatency = 0.01', "takes a latency"),
        ('kind = "slow_connection"', "latency > 0"),
        ('kind = "slow_connection"\nlatency = 0.01\njitter = 0.02', "jitter"),
        ('kind = "kill"\nrate = 1.0\nrestart_after = 1.0', "only for daemon_kill"),
        ('kind = "daemon_kill"\nrate = 1.0\nrestart_after = -1.0', "restart_after"),
        ('kind = "kill"\nrate = 1.0\nlatency = 0.1', "only for host and slow_connection"),
    ],
)
def test_daemon_fault_kinds_are_validated(fault: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        scenario(HEAD.format(seed=1, duration=2.0) + "[[faults]]\n" + fault + "\n")


def test_daemon_faults_have_the_same_schedule_for_the_same_seed() -> None:
    s = scenario(HEAD.format(seed=1, duration=3.0) + KILL + RESET)
    assert build_schedule(s, 5).fingerprint() == build_schedule(s, 5).fingerprint()
    assert build_schedule(s, 5).fingerprint() != build_schedule(s, 6).fingerprint()
    assert all(e.function == "*" for e in build_schedule(s, 1).events)


@pytest.mark.trio
async def test_the_embedded_target_refuses_daemon_faults() -> None:
    with pytest.raises(ScenarioError, match="embedded target cannot inject"):
        await run_stress(scenario(HEAD.format(seed=0, duration=3.0) + KILL))
