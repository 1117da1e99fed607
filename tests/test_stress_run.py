"""The stress harness against real actors: healthy runs are valid, planted defects are caught, faults are real."""

from __future__ import annotations

import gc
import json
from pathlib import Path

import anyio
import pytest
from click.testing import CliRunner

from wasmhive.runtime import Runtime, RuntimeConfig
from wasmhive.runtime.stress import EmbeddedTarget, Scenario, parse_scenario, run_stress
from wasmhive.runtime.stress.command import stress
from wasmhive.runtime.stress.target import FunctionState, Injection

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


HEALTHY = """
seed = 5
duration = 2.0
warmup = 0.3
deadline = 1.0
grace = 0.5
window = 0.25
checks = { p99_factor = 3.0, p99_slack = 0.01 }
[[functions]]
name = "echo"
module = "echo.wat"
options = { instances = 2, timeout = 0.5, retry = { max_attempts = 3 } }
[load]
rate = 300.0
[[faults]]
kind = "timeout"
probability = 0.05
window = [0.5, 1.0]
[[faults]]
kind = "kill"
rate = 10.0
window = [0.5, 1.0]
[[faults]]
kind = "kill"
rate = 10.0
during_call = true
window = [0.5, 1.0]
"""

#: The planted defect: retry declared idempotent on a function the scenario says is not (a quarter of
#: the calls time out in [0.5, 1.0), and each timed-out call is run again).
DOUBLE_RUN = (
    HEALTHY.split("[[faults]]")[0].replace(
        "retry = { max_attempts = 3 }", "retry = { max_attempts = 3, idempotent = true, budget_max_tokens = 1000.0 }"
    )
    + '[[faults]]\nkind = "timeout"\nprobability = 0.25\nwindow = [0.5, 1.0]\n'
)


def scenario(text: str) -> Scenario:
    return parse_scenario(text, base_dir=EXAMPLES)


@pytest.mark.trio
async def test_a_healthy_configuration_under_faults_is_valid(tmp_path: Path) -> None:
    report = await run_stress(scenario(HEALTHY), report_dir=tmp_path)
    assert report.verdict == "valid", report.invariants
    assert report.recovery.recovered_at is not None and report.recovery.recovered_at >= 1.0
    assert report.counts.errors.get("CallTimeout", 0) > 0  # the faults were real
    assert report.functions["echo"].crashes > 0
    assert report.counts.lost == report.counts.untyped == report.counts.double_executions == 0
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["verdict"] == "valid" and saved["version"] == 1
    page = (tmp_path / "report.html").read_text()
    assert page.count("<svg") >= 3 and "fault window" in page
    assert "<script" not in page


@pytest.mark.trio
async def test_a_retry_that_reruns_a_non_idempotent_call_is_invalid() -> None:
    report = await run_stress(scenario(DOUBLE_RUN))
    at_most_once = next(i for i in report.invariants if i.name == "at_most_once")
    assert at_most_once.verdict == "invalid" and at_most_once.examples
    assert report.verdict == "invalid" and report.counts.double_executions > 0


class DroppingTarget(EmbeddedTarget):
    """A test-only defect: the reply to one request (the 20th call) never comes back."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def call(self, function: str, payload: bytes) -> bytes:
        self.calls += 1
        n = self.calls
        reply = await super().call(function, payload)
        if n == 20:
            await anyio.sleep_forever()
        return reply


@pytest.mark.trio
async def test_a_dropped_reply_is_a_lost_request() -> None:
    text = HEALTHY.replace("deadline = 1.0", "deadline = 0.2").replace("grace = 0.5", "grace = 0.1")
    report = await run_stress(scenario(text.split("[[faults]]")[0]), target=DroppingTarget())
    lost = next(i for i in report.invariants if i.name == "no_lost")
    assert (lost.verdict, report.counts.lost) == ("invalid", 1)
    assert report.verdict == "invalid"


class UntypedTarget(EmbeddedTarget):
    """A test-only defect: one call fails with an exception that is not a WasmhiveError."""

    async def call(self, function: str, payload: bytes) -> bytes:
        if payload.startswith(b"wh-stress 7 "):
            raise ConnectionResetError("the connection was reset")
        return await super().call(function, payload)


@pytest.mark.trio
async def test_an_untyped_error_is_invalid() -> None:
    report = await run_stress(scenario(HEALTHY.split("[[faults]]")[0]), target=UntypedTarget())
    typed = next(i for i in report.invariants if i.name == "typed_errors")
    assert typed.verdict == "invalid"
    # The detail names the error and where it was raised, so the report points at the bug.
    assert "ConnectionResetError (the connection was reset (raised at test_stress_run.py:" in typed.detail
    assert "in call)" in typed.detail


@pytest.mark.trio
async def test_every_fault_kind_goes_through_the_real_failure_path() -> None:
    text = """
seed = 9
duration = 1.5
warmup = 0.2
[runtime]
fuel = true
[[functions]]
name = "grow"
module = "grow.wat"
options = { instances = 2, timeout = 0.5 }
[[functions]]
name = "counter"
module = "counter.wat"
options = { instances = 2, timeout = 0.5 }
[[functions]]
name = "echo"
module = "echo.wat"
options = { instances = 2, timeout = 0.5, mailbox_size = 4, overflow = "reject" }
[load]
rate = 300.0
[[faults]]
kind = "oom"
function = "grow"
probability = 0.1
[[faults]]
kind = "fuel"
function = "echo"
probability = 0.1
[[faults]]
kind = "kill"
function = "echo"
probability = 0.05
[[faults]]
kind = "host"
function = "counter"
probability = 0.2
error = "crash"
latency = 0.001
jitter = 0.0005
[[faults]]
kind = "flood"
function = "echo"
rate = 4.0
messages = 8
"""
    report = await run_stress(scenario(text))
    errors = report.counts.errors
    for kind in ("OutOfMemory", "FuelExhausted", "ActorKilled", "HostError"):
        assert errors.get(kind, 0) > 0, (kind, errors)
    assert report.counts.foreign_executions > 0  # the flood reached the guest
    host = [f for f in report.faults if f.kind == "host"]
    assert len(host) == 1 and host[0].applied and "host calls delayed" in host[0].note, host
    delayed, failed = (int(word) for word in host[0].note.replace(",", "").split() if word.isdigit())
    assert delayed == failed > 0, host[0].note  # a hit call is slowed, then crashes; the others are untouched
    assert report.verdict in ("valid", "unknown"), report.invariants  # (no baseline: recovery unknown)
    assert {i.name: i.verdict for i in report.invariants}["recovery"] == "unknown"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scenario.toml"
    path.write_text(text.replace('module = "', f'module = "{EXAMPLES}/'))
    return path


def test_the_command_exits_1_on_an_invalid_run_and_2_on_a_bad_scenario(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(stress, [str(write(tmp_path, DOUBLE_RUN)), "-q", "--report", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert "INVALID  at_most_once" in result.output
    assert json.loads((tmp_path / "out" / "report.json").read_text())["verdict"] == "invalid"
    bad = runner.invoke(stress, [str(write(tmp_path, HEALTHY.replace("rate = 300.0", "rate = -1.0"))), "-q"])
    assert bad.exit_code == 2 and "load.rate" in bad.output
    both = runner.invoke(stress, [str(write(tmp_path, HEALTHY)), "--rate", "5", "--concurrency", "2"])
    assert both.exit_code == 2


def test_the_command_exits_0_on_a_valid_run(tmp_path: Path) -> None:
    result = CliRunner().invoke(stress, [str(write(tmp_path, HEALTHY)), "-q", "--concurrency", "4", "--seed", "11"])
    assert result.exit_code == 0, result.output
    assert "verdict: valid" in result.output


def test_the_target_protocol_is_met_by_the_embedded_target() -> None:
    from wasmhive.runtime.stress.target import Target

    target: Target = EmbeddedTarget()
    assert target.supported_faults() >= {"timeout", "oom", "fuel", "kill", "host", "flood"}
    assert FunctionState(1, 1, 0, None, 0, 0, 0, 0).pool_size == 1 and Injection(True, "x").applied


class FreezeWatchingTarget(EmbeddedTarget):
    """Notes whether the collector's frozen generation holds anything while calls run."""

    frozen_during_calls: set[bool]

    async def call(self, function: str, payload: bytes) -> bytes:
        self.frozen_during_calls.add(gc.get_freeze_count() > 0)
        return await super().call(function, payload)


@pytest.mark.trio
async def test_the_run_keeps_its_bookkeeping_out_of_full_garbage_collections() -> None:
    assert gc.get_freeze_count() == 0
    target = FreezeWatchingTarget()
    target.frozen_during_calls = set()
    report = await run_stress(scenario(HEALTHY.split("[[faults]]")[0]), target=target)
    assert target.frozen_during_calls == {True}  # frozen for the whole load
    assert gc.get_freeze_count() == 0  # and given back afterwards
    assert report.counts.ok > 0


@pytest.mark.trio
async def test_a_users_own_runtime_meets_host_faults_and_is_left_as_it_was(config: RuntimeConfig) -> None:
    text = """
seed = 6
duration = 1.0
warmup = 0.2
[[functions]]
name = "counter"
[load]
rate = 200.0
[[faults]]
kind = "host"
probability = 0.5
error = "crash"
ops = ["kv.incr"]
"""
    async with Runtime(config) as rt:
        await rt.deploy("counter", EXAMPLES / "counter.wat", instances=2)
        report = await run_stress(scenario(text), target=EmbeddedTarget(rt))
        (host,) = [f for f in report.faults if f.kind == "host"]
        assert host.applied and host.note.startswith("0 host calls delayed, ") and "0 failed" not in host.note
        assert report.counts.errors.get("HostError", 0) > 0  # the crashes reached the callers as HostError
        assert report.counts.untyped == report.counts.lost == 0
        # Afterwards the runtime is the user's again: the function stays, and no fault is left.
        assert rt.functions() == ["counter"]
        for _ in range(50):
            await rt.invoke("counter", b"")
