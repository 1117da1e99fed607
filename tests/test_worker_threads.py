"""Actor threads: jobs in order on one OS thread, and threads reused across actors through the park."""

from __future__ import annotations

import logging
import threading

import guests
import pytest
import trio
from helpers import settled

from wasmhive.actors.worker import ActorThread, ThreadPark
from wasmhive.runtime import GuestTrap, Runtime, RuntimeConfig
from wasmhive.supervisors import BackoffPolicy, PoolPolicy


def run_all(thread: ActorThread, jobs: int) -> list[tuple[int, int]]:
    """Submit ``jobs`` jobs, stop, join; return (job number, thread ident) in the order they ran."""
    ran: list[tuple[int, int]] = []
    for i in range(jobs):
        thread.submit(lambda i=i: ran.append((i, threading.get_ident())))
    thread.stop()
    assert thread.join(5.0)
    return ran


def test_jobs_run_in_order_on_one_thread_that_is_not_the_callers() -> None:
    ran = run_all(ActorThread("t"), 50)
    assert [i for i, _ in ran] == list(range(50))
    assert len({ident for _, ident in ran}) == 1
    assert ran[0][1] != threading.get_ident()


def test_a_thread_given_up_to_the_park_serves_the_next_actor() -> None:
    park = ThreadPark()
    first = run_all(ActorThread("a", park), 3)
    second = run_all(ActorThread("b", park), 3)
    assert first[0][1] == second[0][1]  # the same OS thread
    assert park.threads_started == 1
    for thread in park.close():
        thread.join(5.0)
        assert not thread.is_alive()


def test_without_room_in_the_park_a_released_thread_exits() -> None:
    park = ThreadPark(max_parked=0)
    worker_threads: list[threading.Thread] = []
    thread = ActorThread("a", park)
    thread.submit(lambda: worker_threads.append(threading.current_thread()))
    thread.stop()
    assert thread.join(5.0)
    worker_threads[0].join(5.0)
    assert not worker_threads[0].is_alive() and park.parked == 0
    run_all(ActorThread("b", park), 1)
    assert park.threads_started == 2


def test_a_failing_job_is_logged_and_the_thread_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="wasmhive.actors")  # (another test may have raised the level)
    thread = ActorThread("t")
    ran: list[int] = []

    def boom() -> None:
        raise RuntimeError("boom")

    thread.submit(boom)
    thread.submit(lambda: ran.append(1))
    thread.stop()
    assert thread.join(5.0)
    assert ran == [1]
    assert "boom" in caplog.text


def test_join_before_stop_or_start() -> None:
    assert ActorThread("never-used").join(0.01)  # never started: nothing to wait for
    thread = ActorThread("busy")
    thread.submit(lambda: None)
    assert not thread.join(0.01)  # not given up yet
    thread.stop()
    assert thread.join(5.0)


def test_nothing_can_be_submitted_after_stop() -> None:
    # The thread may already serve another actor: a late job must not run there.
    park = ThreadPark()
    thread = ActorThread("a", park)
    run_all(thread, 1)
    with pytest.raises(RuntimeError, match="after stop"):
        thread.submit(lambda: None)
    never_started = ActorThread("b", park)
    never_started.stop()
    with pytest.raises(RuntimeError, match="after stop"):
        never_started.submit(lambda: None)
    assert park.threads_started == 1
    for t in park.close():
        t.join(5.0)


def test_closing_the_park_ends_parked_threads_and_later_releases() -> None:
    park = ThreadPark()
    run_all(ActorThread("a", park), 1)
    (parked,) = park.close()
    parked.join(5.0)
    assert not parked.is_alive()
    # Released after the close: the thread exits instead of parking.
    late = ActorThread("b", park)
    seen: list[threading.Thread] = []
    late.submit(lambda: seen.append(threading.current_thread()))
    late.stop()
    assert late.join(5.0)
    seen[0].join(5.0)
    assert not seen[0].is_alive() and park.parked == 0


@pytest.mark.trio
async def test_a_pool_restarting_crashed_actors_creates_no_new_threads(rt: Runtime) -> None:
    faulty = (guests.EXAMPLES / "faulty.wat").read_text()
    quick = BackoffPolicy(min_backoff=0.001, max_backoff=0.002)
    await rt.deploy("f", faulty.encode(), pool=PoolPolicy(min_size=2, max_size=2, backoff=quick), mode="thread")
    for _ in range(4):
        assert await rt.invoke("f", b"warm") == b"warm"
    warm = rt.thread_park.threads_started
    assert 1 <= warm <= 2
    for _ in range(20):
        with pytest.raises(GuestTrap):
            await rt.invoke("f", b"!crash")
        await settled(rt, "f")
        assert await rt.invoke("f", b"ok") == b"ok"
    assert rt.stats().functions["f"].crashes == 20
    # Each replacement took a parked thread; none was started for it.  (One more than
    # the warm count is allowed: a replacement may ask before the old thread parked.)
    assert rt.thread_park.threads_started <= warm + 1


@pytest.mark.trio
async def test_closing_the_runtime_ends_every_actor_thread(config: RuntimeConfig) -> None:
    before = set(threading.enumerate())

    def runtime_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t not in before and t.name.startswith("wasmhive")]

    async with Runtime(config) as rt:
        faulty = (guests.EXAMPLES / "faulty.wat").read_text()
        await rt.deploy("t", faulty.encode(), instances=3, mode="thread")
        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(rt.invoke, "t", b"x")
        with pytest.raises(GuestTrap):
            await rt.invoke("t", b"!")
        await settled(rt, "t")
        assert await rt.invoke("t", b"y") == b"y"
        names = {t.name for t in runtime_threads()}
        assert any(n.startswith("wasmhive-t-") for n in names)  # live actors' threads
        assert "wasmhive-parked" in names  # the crashed actor's thread, parked
    # Joined by aclose: none is left, not even for a moment.
    assert runtime_threads() == []
