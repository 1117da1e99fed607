"""Stress scenarios and the seeded fault schedule: validation names the field; same seed, same schedule."""

from __future__ import annotations

from pathlib import Path

import pytest

from wasmhive.runtime.stress import ScenarioError, build_schedule, load_scenario, parse_scenario
from wasmhive.runtime.stress.load import PayloadFactory, arrivals, choose_function
from wasmhive.runtime.stress.scenario import PayloadSpec

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

FAULTY = """
duration = 10.0
[[functions]]
name = "a"
[[functions]]
name = "b"
weight = 3.0
[load]
rate = 100.0
[[faults]]
kind = "kill"
rate = 5.0
window = [2.0, 6.0]
[[faults]]
kind = "timeout"
probability = 0.1
[[faults]]
kind = "flood"
rate = 1.0
function = "b"
"""


def test_same_seed_same_schedule_and_another_seed_another() -> None:
    scenario = parse_scenario(FAULTY)
    one, again, other = build_schedule(scenario, 7), build_schedule(scenario, 7), build_schedule(scenario, 8)
    assert one.events == again.events and one.fingerprint() == again.fingerprint()
    assert one.events != other.events and one.fingerprint() != other.fingerprint()
    assert [one.request_faults(i, "a", 1.0) for i in range(200)] == [
        again.request_faults(i, "a", 1.0) for i in range(200)
    ]
    assert [one.request_faults(i, "a", 1.0) for i in range(200)] != [
        other.request_faults(i, "a", 1.0) for i in range(200)
    ]


def test_the_schedule_follows_rates_windows_and_functions() -> None:
    schedule = build_schedule(parse_scenario(FAULTY), 1)
    kills = [e for e in schedule.events if e.kind == "kill"]
    assert all(2.0 <= e.at < 6.0 for e in kills) and 8 <= len(kills) <= 40  # about 5/s for 4 s
    assert {e.function for e in schedule.events if e.kind == "flood"} == {"b"}
    hit = sum(bool(schedule.request_faults(i, "a", 5.0)) for i in range(5000))
    assert 400 < hit < 600  # probability 0.1
    assert schedule.request_faults(3, "a", -0.5) == ()  # never during the warm-up
    assert [e.at for e in schedule.events] == sorted(e.at for e in schedule.events)


def test_load_is_seeded_too_and_payloads_are_unique() -> None:
    scenario = parse_scenario(FAULTY)
    assert arrivals(100.0, 0.0, 2.0, 5) == arrivals(100.0, 0.0, 2.0, 5) != arrivals(100.0, 0.0, 2.0, 6)
    assert 150 < len(arrivals(100.0, 0.0, 2.0, 5)) < 250
    picks = [choose_function(scenario, 3, i) for i in range(4000)]
    assert 2700 < picks.count("b") < 3300  # weight 3 of 4
    for spec in (
        PayloadSpec(kind="random", size=64),
        PayloadSpec(kind="json", size=48),
        PayloadSpec(kind="template", template='{"name": "user-{seq}"}'),
    ):
        factory = PayloadFactory(spec, 1)
        payloads = [factory.make(i) for i in range(5000)]
        assert len(set(payloads)) == len(payloads)
    assert len(PayloadFactory(PayloadSpec(size=64), 1).make(12)) == 64


@pytest.mark.parametrize(
    ("toml", "field"),
    [
        ('[load]\nrate = 1.0\n[[functions]]\nname = "a"\nweight = "x"', "functions[0].weight"),
        ('[load]\nmode = "closed"\n[[functions]]\nname = "a"', "load.concurrency"),
        ('[load]\nrate = 1.0\n[[functions]]\nname = "a"\nmodule = "missing.wat"', "functions[0].module"),
        (
            '[load]\nrate = 1.0\n[[functions]]\nname = "a"\noptions = { pool = { min_size = 3, max_size = 1 } }',
            "functions[0].options.pool",
        ),
        ('[load]\nrate = 1.0\n[[functions]]\nname = "a"\n[[faults]]\nkind = "kill"', "faults[0]"),
        (
            '[load]\nrate = 1.0\n[[functions]]\nname = "a"\n[[faults]]\nkind = "kill"\nrate = 1.0\nwindow = [5.0, 50.0]',
            "faults[0].window",
        ),
        ('[load]\nrate = 1.0\n[[functions]]\nname = "a"\n[[faults]]\nkind = "fuel"\nrate = 1.0', "faults[0].kind"),
        ('[load]\nrate = 1.0\n[[functions]]\nname = "a"\n[[faults]]\nkind = "melt"\nrate = 1.0', "faults[0].kind"),
        (
            '[load]\nrate = 1.0\n[[functions]]\nname = "a"\n[[faults]]\nkind = "kill"\nrate = 1.0\nfunction = "b"',
            "faults[0].function",
        ),
        ('[load]\nrate = 1.0\nbogus = 1\n[[functions]]\nname = "a"', "load"),
    ],
)
def test_a_bad_scenario_names_the_field(toml: str, field: str) -> None:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(toml, base_dir=EXAMPLES)
    assert str(info.value).startswith(field), str(info.value)


def test_every_bundled_scenario_is_valid() -> None:
    paths = sorted((EXAMPLES / "stress").glob("*.toml"))
    assert {p.stem for p in paths} >= {"crash-loop", "flaky-host", "memory-bomb", "traffic-burst", "mixed"}
    for path in paths:
        scenario = load_scenario(path)
        assert build_schedule(scenario).fingerprint() == build_schedule(scenario).fingerprint()
