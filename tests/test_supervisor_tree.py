"""Supervision trees: OTP rules checked against a reference model, plus focused cases."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from wasmhive.actors.errors import InvalidConfig
from wasmhive.actors.messages import ExitReason
from wasmhive.supervisors.backoff import BackoffPolicy
from wasmhive.supervisors.events import ChildRestarted, EventBus, SupervisorGaveUp
from wasmhive.supervisors.scheduler import ManualScheduler
from wasmhive.supervisors.tree import ChildSpec, DynamicSupervisor, Supervisor, SupervisorPolicy

CRASH = ExitReason("trap", "boom")
NORMAL = ExitReason("normal")


class FakeChild:
    """A supervisable child whose life the test controls."""

    def __init__(self, log: list[str], name: str, busy: bool = False) -> None:
        self.name = name
        self.log = log
        self.busy = busy
        self.exit_reason: ExitReason | None = None
        self._callbacks: list[Any] = []
        self.stopped_with: ExitReason | None = None
        self.killed = False

    @property
    def alive(self) -> bool:
        return self.exit_reason is None and self.stopped_with is None

    def on_exit(self, callback: Any) -> None:
        self._callbacks.append(callback)

    def end(self, reason: ExitReason) -> None:
        if self.exit_reason is not None:
            return
        self.exit_reason = reason
        self.log.append(f"end {self.name} {reason.kind}")
        for callback in self._callbacks:
            callback(self, reason)

    def stop(self, reason: ExitReason) -> None:
        self.stopped_with = reason
        if not self.busy:
            self.end(reason)

    def kill(self) -> None:
        self.killed = True
        self.end(ExitReason("killed"))


@dataclass
class Children:
    """Starts FakeChildren and remembers them."""

    log: list[str] = field(default_factory=list)
    started: dict[str, list[FakeChild]] = field(default_factory=dict)
    busy: bool = False

    def spec(self, child_id: str, **kw: Any) -> ChildSpec:
        def start() -> FakeChild:
            child = FakeChild(self.log, child_id, busy=self.busy)
            self.started.setdefault(child_id, []).append(child)
            self.log.append(f"start {child_id}")
            return child

        return ChildSpec(id=child_id, start=start, **kw)

    def current(self, child_id: str) -> FakeChild:
        return self.started[child_id][-1]


# --- the reference model -------------------------------------------------------------


@dataclass
class Model:
    strategy: str
    restart: list[str]
    max_restarts: int
    period: float
    running: list[bool] = field(default_factory=list)
    present: list[bool] = field(default_factory=list)
    starts: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    gave_up: bool = False

    def __post_init__(self) -> None:
        n = len(self.restart)
        self.running, self.present, self.starts = [True] * n, [True] * n, [1] * n

    def exit(self, i: int, abnormal: bool, now: float) -> None:
        if self.gave_up or not self.running[i]:
            return
        self.running[i] = False
        kind = self.restart[i]
        if kind == "temporary":
            self.present[i] = False
            return
        if kind == "transient" and not abnormal:
            return
        self.times = [t for t in self.times if now - t <= self.period] + [now]
        if len(self.times) > self.max_restarts:
            self.gave_up = True
            self.running = [False] * len(self.running)
            return
        order = [j for j in range(len(self.restart)) if self.present[j]]
        if self.strategy == "one_for_one":
            group = [i]
        elif self.strategy == "one_for_all":
            group = order
        else:
            group = order[order.index(i) :]
        for j in group:
            if self.restart[j] == "temporary":
                self.present[j] = self.running[j] = False
        for j in group:
            if self.present[j]:
                self.running[j] = True
                self.starts[j] += 1


class SupervisorMachine(RuleBasedStateMachine):
    """Drives a real Supervisor and the model through random exits and time steps."""

    @initialize(
        strategy=st.sampled_from(["one_for_one", "one_for_all", "rest_for_one"]),
        restart=st.lists(st.sampled_from(["permanent", "transient", "temporary"]), min_size=1, max_size=5),
        max_restarts=st.integers(0, 4),
        period=st.sampled_from([1.0, 5.0, 30.0]),
    )
    def setup(self, strategy: str, restart: list[str], max_restarts: int, period: float) -> None:
        self.scheduler = ManualScheduler()
        self.children = Children()
        self.ids = [f"c{i}" for i in range(len(restart))]
        specs = [self.children.spec(cid, restart=kind) for cid, kind in zip(self.ids, restart, strict=True)]
        policy = SupervisorPolicy(strategy=strategy, max_restarts=max_restarts, period=period)  # type: ignore[arg-type]
        self.sup = Supervisor("sup", specs, policy, scheduler=self.scheduler).start()
        self.model = Model(strategy, restart, max_restarts, period)

    @rule(i=st.integers(0, 4), abnormal=st.booleans())
    def child_exits(self, i: int, abnormal: bool) -> None:
        i %= len(self.ids)
        if self.model.running[i]:
            self.children.current(self.ids[i]).end(CRASH if abnormal else NORMAL)
        self.model.exit(i, abnormal, self.scheduler.now())

    @rule(dt=st.sampled_from([0.1, 0.5, 1.0, 2.0, 10.0]))
    def time_passes(self, dt: float) -> None:
        self.scheduler.advance(dt)

    @invariant()
    def agrees_with_the_model(self) -> None:
        if not hasattr(self, "sup"):
            return
        assert self.sup.alive == (not self.model.gave_up)
        reported = {info.id: info for info in self.sup.which_children()}
        for i, cid in enumerate(self.ids):
            assert (cid in reported) == (self.model.present[i] or (self.model.gave_up and cid in reported))
            if self.model.gave_up:
                continue
            if self.model.present[i]:
                assert reported[cid].running == self.model.running[i], (cid, self.children.log)
            assert len(self.children.started.get(cid, [])) == self.model.starts[i], (cid, self.children.log)

    @invariant()
    def only_current_children_are_alive(self) -> None:
        if not hasattr(self, "sup"):
            return
        for i, cid in enumerate(self.ids):
            generations = self.children.started.get(cid, [])
            for old in generations[:-1]:
                assert old.exit_reason is not None, f"an old generation of {cid} is still alive"
            if generations and (self.model.gave_up or not self.model.running[i]):
                assert generations[-1].exit_reason is not None


SupervisorMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
TestSupervisorModel = SupervisorMachine.TestCase


# --- focused cases -------------------------------------------------------------------


def test_children_start_in_order_and_stop_in_reverse() -> None:
    children = Children()
    sup = Supervisor("s", [children.spec(c) for c in "abc"], scheduler=ManualScheduler()).start()
    sup.stop()
    assert children.log == ["start a", "start b", "start c", "end c shutdown", "end b shutdown", "end a shutdown"]
    assert not sup.alive and sup.exit_reason == ExitReason("shutdown")


def test_a_failing_start_stops_the_started_children_and_raises() -> None:
    children = Children()

    def broken() -> FakeChild:
        raise InvalidConfig("cannot start")

    specs = [children.spec("a"), children.spec("b"), ChildSpec(id="c", start=broken)]
    with pytest.raises(InvalidConfig):
        Supervisor("s", specs, scheduler=ManualScheduler()).start()
    assert children.log == ["start a", "start b", "end b shutdown", "end a shutdown"]


def test_intensity_exceeded_escalates_to_the_parent() -> None:
    scheduler = ManualScheduler()
    children = Children()
    inner_starts: list[Supervisor] = []

    def start_inner() -> Supervisor:
        inner = Supervisor(
            "inner", [children.spec("w")], SupervisorPolicy(max_restarts=2, period=10), scheduler=scheduler
        )
        inner_starts.append(inner)
        return inner.start()

    events = EventBus()
    seen: list[Any] = []
    events.listen(seen.append)
    outer = Supervisor(
        "outer",
        [ChildSpec(id="inner", start=start_inner)],
        SupervisorPolicy(max_restarts=1, period=10),
        scheduler=scheduler,
        events=events,
    ).start()
    # The inner supervisor absorbs 2 crashes of its worker; the 3rd makes it give up.
    for _ in range(3):
        children.current("w").end(CRASH)
    assert not inner_starts[0].alive
    assert len(inner_starts) == 2 and inner_starts[1].alive  # the outer one restarted it
    assert outer.alive
    # Restarts multiply: 3 more crashes kill the second inner; the outer gives up too.
    for _ in range(3):
        children.current("w").end(CRASH)
    assert not outer.alive
    assert outer.exit_reason is not None and outer.exit_reason.message == "reached max restart intensity"
    assert len(children.started["w"]) == 6
    assert any(isinstance(e, SupervisorGaveUp) and e.supervisor == "outer" for e in seen)


def test_restart_backoff_follows_the_formula_and_resets_after_a_quiet_period() -> None:
    scheduler = ManualScheduler()
    children = Children()
    events = EventBus()
    delays: list[float] = []
    events.listen(lambda e: delays.append(e.delay) if isinstance(e, ChildRestarted) else None)
    backoff = BackoffPolicy(min_backoff=0.1, max_backoff=1.0, random_factor=0.0, reset_after=5.0)
    sup = Supervisor(
        "s",
        [children.spec("a", backoff=backoff)],
        SupervisorPolicy(max_restarts=100, period=1),
        scheduler=scheduler,
        events=events,
    ).start()
    for _ in range(5):
        children.current("a").end(CRASH)
        assert not sup.which_children()[0].running  # waiting out the backoff
        scheduler.advance(delays[-1])
        assert sup.which_children()[0].running
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0])
    scheduler.advance(6.0)  # quiet for longer than reset_after
    children.current("a").end(CRASH)
    assert delays[-1] == pytest.approx(0.1)


def test_shutdown_gives_grace_then_kills() -> None:
    scheduler = ManualScheduler()
    children = Children(busy=True)
    sup = Supervisor("s", [children.spec("slow", shutdown=2.0), children.spec("brutal", shutdown="brutal_kill")],
                     scheduler=scheduler).start()
    sup.stop()
    slow, brutal = children.current("slow"), children.current("brutal")
    assert brutal.killed and slow.stopped_with is not None and not slow.killed
    scheduler.advance(1.9)
    assert not slow.killed
    scheduler.advance(0.2)
    assert slow.killed


def test_dynamic_supervisor_adds_and_removes_children_at_run_time() -> None:
    children = Children()
    sup = DynamicSupervisor("d", children.spec("w", restart="transient"), scheduler=ManualScheduler()).start()
    first, _ = sup.start_child()
    second, _ = sup.start_child()
    assert [c.id for c in sup.which_children()] == [first, second]
    children.current("w").end(CRASH)  # the most recent one: restarted
    assert sup.which_children()[1].restarts == 1
    assert sup.terminate_child(first)
    assert [c.id for c in sup.which_children()] == [second]
    with pytest.raises(InvalidConfig):
        DynamicSupervisor("x", children.spec("w"), SupervisorPolicy(strategy="one_for_all"), scheduler=ManualScheduler())


@pytest.mark.parametrize(
    ("strategy", "restarted"),
    [("one_for_one", ["b"]), ("one_for_all", ["a", "b", "c"]), ("rest_for_one", ["b", "c"])],
)
def test_each_strategy_restarts_the_right_children(strategy: str, restarted: list[str]) -> None:
    children = Children()
    policy = SupervisorPolicy(strategy=strategy, max_restarts=5)  # type: ignore[arg-type]
    Supervisor("s", [children.spec(c) for c in "abc"], policy, scheduler=ManualScheduler()).start()
    children.log.clear()
    children.current("b").end(CRASH)
    stopped = [c for c in restarted if c != "b"]
    # Siblings are stopped in reverse order, then everything restarts in start order.
    assert children.log == ["end b trap"] + [f"end {c} shutdown" for c in reversed(stopped)] + [
        f"start {c}" for c in restarted
    ]


@pytest.mark.parametrize(
    ("restart", "reason", "restarted"),
    [
        ("permanent", NORMAL, True),
        ("permanent", CRASH, True),
        ("transient", NORMAL, False),
        ("transient", CRASH, True),
        ("temporary", CRASH, False),
    ],
)
def test_restart_types(restart: str, reason: ExitReason, restarted: bool) -> None:
    children = Children()
    sup = Supervisor("s", [children.spec("a", restart=restart)], scheduler=ManualScheduler()).start()
    children.current("a").end(reason)
    assert len(children.started["a"]) == (2 if restarted else 1)
    assert [c.id for c in sup.which_children()] == ([] if restart == "temporary" else ["a"])


def test_a_group_restart_with_backoff_starts_in_order_after_one_delay() -> None:
    scheduler = ManualScheduler()
    children = Children()
    backoff = BackoffPolicy(min_backoff=0.1, max_backoff=1.0, random_factor=0.5)
    policy = SupervisorPolicy(strategy="rest_for_one", max_restarts=5)
    Supervisor("s", [children.spec(c, backoff=backoff) for c in "abc"], policy, scheduler=scheduler).start()
    children.log.clear()
    children.current("a").end(CRASH)
    scheduler.advance(0.2)  # past the failed child's delay (0.1 .. 0.15)
    assert children.log == ["end a trap", "end c shutdown", "end b shutdown", "start a", "start b", "start c"]
