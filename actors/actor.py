"""The WASM actor: one guest instance, a bounded mailbox, one message at a time.

All of an actor's state lives on the event-loop thread.  Guest calls run either
right there (``inline``) or on the actor's own OS thread (``thread``), and only
their outcome comes back to the loop, so there is never a lock around actor
state and a Store is never entered from two threads at once.

Dispatch: when the actor is idle and its mailbox empty, ``ask`` starts the call
at once from the caller's task (inline: the call runs in that very task, with no
task switch).  Otherwise the message waits in the mailbox; when its turn comes
an inline message is handed back to its own caller's task to run, and a thread
message is passed to the actor thread.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Literal, Protocol

import anyio
import msgspec

from .bridge import LoopBridge
from .command import WasiCommand
from .errors import (
    ActorCrashed,
    MailboxFull,
    RuntimeClosed,
    WasmhiveError,
    error_from_info,
)
from .instance import ChunkSink, InstanceSpec, WasmInstance
from .messages import (
    RUNTIME_CLOSING,
    ActorRef,
    ActorState,
    Down,
    ExitReason,
    Failed,
    Invoke,
    Outcome,
    Reply,
)
from .monitor import Monitor
from .sinks import ChunkCollector, ChunkPipe
from .worker import ActorThread, ThreadPark

__all__ = [
    "Actor",
    "ActorPolicy",
    "CallHook",
    "Envelope",
    "ExecutionMode",
    "Overflow",
    "TickDemand",
    "spawn_instance",
]

logger = logging.getLogger("wasmhive.actors")

ExecutionMode = Literal["inline", "thread"]
Overflow = Literal["wait", "reject"]


class ActorPolicy(msgspec.Struct, frozen=True):
    """How an actor takes messages: execution mode and mailbox behaviour."""

    mode: ExecutionMode = "thread"
    mailbox_size: int = 64
    overflow: Overflow = "wait"
    #: How long a sender may wait for mailbox space under ``overflow="wait"`` (seconds).
    mailbox_wait: float = 1.0


def spawn_instance(spec: InstanceSpec, actor_id: int | None = None) -> WasmInstance:
    """A started guest instance of the right kind for ``spec`` (module, WASI command, JavaScript)."""
    if spec.js_source is not None:  # JS actors (actors/js.py)
        from .js import JsInstance

        return JsInstance.spawn(spec, actor_id)
    if spec.command:
        return WasiCommand.spawn(spec, actor_id)
    return WasmInstance.spawn(spec, actor_id)


class TickDemand(Protocol):
    """The epoch ticker, told when guest code starts and stops running.

    It keeps the epoch advancing while any guest code runs, so every call's
    deadline can fire.
    """

    def begin(self) -> None: ...

    def end(self) -> None: ...


class _SpaceWaiter:
    """A sender waiting for mailbox space: woken with a slot handed to it (``granted``)."""

    __slots__ = ("event", "gone", "granted")

    def __init__(self) -> None:
        self.event = anyio.Event()
        #: A freed slot was handed to this waiter (reserved for its message).
        self.granted = False
        #: It gave up, or the actor ended: skipped when it reaches the front.
        self.gone = False


class Envelope:
    """A message in flight: the message, where its chunks go, and its outcome."""

    __slots__ = ("done", "message", "outcome", "sink")

    def __init__(self, message: Invoke, sink: ChunkSink | None) -> None:
        self.message = message
        self.sink = sink
        self.outcome: Outcome | None = None
        #: Set when the outcome is known, or (inline) when it is this message's turn.
        self.done = anyio.Event()


ExitCallback = Callable[["Actor", ExitReason], None]

#: Called with ``(actor, instance, payload)`` on the thread that runs the guest, just
#: before each call enters it.  Only tools set one (the stress harness counts
#: executions at the guest boundary and injects faults through it, docs/stress.md);
#: unset, it costs one ``is not None`` check per call.  An exception it raises fails
#: the call as an internal error, so it must not raise.
CallHook = Callable[["Actor", WasmInstance, bytes], None]

NORMAL_EXIT = ExitReason("normal")

#: Inline fast-path calls between two real checkpoints (see Actor.ask).
YIELD_EVERY = 256


class Actor:
    """A live actor.  Only the runtime holds these; callers hold :attr:`ref`."""

    def __init__(
        self,
        ref: ActorRef,
        spec: InstanceSpec,
        policy: ActorPolicy,
        bridge: LoopBridge,
        ticker: TickDemand,
        starter: ActorThread | None = None,
        *,
        park: ThreadPark | None = None,
    ) -> None:
        self.ref = ref
        self.policy = policy
        self.state = ActorState.STARTING
        self.exit_reason: ExitReason | None = None
        #: Why the guest could not start, if that is how the actor ended.
        self.start_error: WasmhiveError | None = None
        self.calls = 0
        self.failures = 0
        self._spec = spec
        self._bridge = bridge
        self._ticker = ticker
        #: Where a thread actor's guest starts: a thread shared by the runtime (so an
        #: idle actor owns no thread), or the actor's own thread.
        self._starter = starter
        self._inline = policy.mode == "inline"
        self._instance: WasmInstance | None = None
        #: The actor's own thread, taken from ``park`` at the first call and given back when it ends.
        self._thread: ActorThread | None = (
            None if self._inline else ActorThread(f"wasmhive-{ref.function}-{ref.id}", park)
        )
        self._mailbox: deque[Envelope] = deque()
        #: Senders waiting for mailbox space (``overflow="wait"``), first come first served.
        self._space_line: deque[_SpaceWaiter] = deque()
        #: Waiters in the line that have not been handed a slot or given up.
        self._space_waiting = 0
        #: Slots handed to a waiter that has not yet put its message in.
        self._space_reserved = 0
        self._granted: Envelope | None = None
        #: The message running on the actor thread, if any.
        self._running: Envelope | None = None
        self._stop_reason: ExitReason | None = None
        self._stopped = anyio.Event()
        self._ready = anyio.Event()
        self._monitors: list[Monitor] = []
        self._exit_callbacks: list[ExitCallback] = []
        #: See :data:`CallHook` (set by ``Deployment.set_call_hook``).
        self.call_hook: CallHook | None = None

    # --- life cycle -----------------------------------------------------------

    def start(self) -> None:
        """Instantiate the guest.

        An ``inline`` actor starts here, on the loop (raising its typed error).
        A ``thread`` actor starts on its own thread, so a slow or hostile
        start-up never holds the loop: it is STARTING until then, messages
        wait in its mailbox, and if the guest cannot start the actor ends
        with reason ``start_failed`` (its queued messages get ActorCrashed).
        """
        self._ticker.begin()
        if self._thread is None or not (self._spec.starts_guest_code or self._spec.js_source is not None):
            try:
                self._instance = spawn_instance(self._spec, self.ref.id)
            finally:
                self._ticker.end()
            self.state = ActorState.IDLE
            self._ready.set()
            return
        (self._starter or self._thread).submit(self._start_job)

    async def wait_started(self) -> None:
        """Wait until the actor has started (or ended trying)."""
        await self._ready.wait()

    def _start_job(self) -> None:  # on the starter thread (the Store then moves to the actor thread)
        if self.state is not ActorState.STARTING:  # stopped or killed while waiting to start: skip
            self._bridge.call_soon(self._started, None, None)
            return
        try:
            instance: WasmInstance | None = spawn_instance(self._spec, self.ref.id)
            error: WasmhiveError | None = None
        except WasmhiveError as exc:
            instance, error = None, exc
        except Exception as exc:  # a bug on the host side
            logger.exception("starting actor %s failed", self.ref)
            instance, error = None, WasmhiveError(f"internal error: {exc!r}", function=self.ref.function)
        self._bridge.call_soon(self._started, instance, error)

    def _started(self, instance: WasmInstance | None, error: WasmhiveError | None) -> None:
        self._ticker.end()
        self._ready.set()
        if self.state is not ActorState.STARTING:  # stopped or killed while starting
            if instance is not None:
                instance.close()
            return
        if instance is None:
            assert error is not None
            logger.warning("actor %s of %s could not start: %s", self.ref.id, self.ref.function, error)
            self.start_error = error
            self._end(ExitReason("start_failed", f"{type(error).__name__}: {error.message}"))
            return
        self._instance = instance
        self.state = ActorState.IDLE
        self._next()

    @property
    def alive(self) -> bool:
        """Taking messages (a STARTING actor queues them until it is ready)."""
        return self.state in (ActorState.IDLE, ActorState.BUSY, ActorState.STARTING)

    @property
    def queued(self) -> int:
        """Messages waiting in the mailbox, or about to be put in a slot handed to their sender.

        (Not counting the one being handled.)
        """
        return len(self._mailbox) + self._space_reserved

    @property
    def thread_started(self) -> bool:
        return self._thread is not None and self._thread.started

    def monitor(self) -> Monitor:
        """A monitor that receives :class:`Down` when this actor ends (at once if it has)."""
        if self.exit_reason is not None:
            return Monitor(Down(self.ref, self.exit_reason))
        monitor = Monitor()
        self._monitors.append(monitor)
        return monitor

    def on_exit(self, callback: ExitCallback) -> None:
        """Call ``callback(actor, reason)`` on the loop when the actor ends."""
        self._exit_callbacks.append(callback)

    def stop(self, reason: ExitReason = NORMAL_EXIT) -> None:
        """Stop taking messages; end after the call in progress, if any.

        Queued messages fail with :class:`RuntimeClosed` (``shutdown``) or
        :class:`ActorCrashed`.
        """
        if not self.alive:
            return
        self._stop_reason = reason
        busy = self.state is ActorState.BUSY
        running = self._running
        if reason == RUNTIME_CLOSING and running is not None and isinstance(running.sink, ChunkPipe):
            # Nobody will read the rest: a guest blocked on a full pipe must not hang the shutdown.
            running.sink.abandon()
        self.state = ActorState.STOPPING
        self._fail_queued(reason)
        if not busy:
            self._end(reason)

    def kill(self) -> None:
        """Stop now: a running call is interrupted within a few ms and fails with ActorKilled."""
        if not self.alive and self.state is not ActorState.STOPPING:
            return
        if self.alive:
            self.stop(ExitReason("killed", "killed"))
        running = self._running
        if running is not None and isinstance(running.sink, ChunkPipe):
            running.sink.abandon()
        if self._instance is not None:
            self._instance.kill()

    async def shutdown(self, grace: float, reason: ExitReason = NORMAL_EXIT) -> None:
        """Stop; give a call in flight ``grace`` seconds to finish, then kill it; wait for the end."""
        self.stop(reason)
        with anyio.move_on_after(grace):
            await self._stopped.wait()
        self.kill()
        await self._stopped.wait()

    async def wait_stopped(self) -> None:
        """Wait until the actor has ended (stopped or crashed)."""
        await self._stopped.wait()

    def release_thread(self) -> None:
        """Give the actor's thread up once its queued jobs are done (the runtime, closing).

        An actor that ended has already done this.  One still stuck in a guest
        call when the runtime closes does it here, so that its thread exits
        when the call ends instead of waiting for a job forever.
        """
        if self._thread is not None:
            self._thread.stop()

    def join_thread(self, timeout: float | None = None) -> bool:
        """Wait until the actor's thread has finished its jobs and been given up (True if so)."""
        return self._thread.join(timeout) if self._thread is not None else True

    # --- sending --------------------------------------------------------------

    async def ask(self, payload: bytes) -> bytes:
        """Send ``Invoke(payload)`` and return the emitted chunks joined with the reply."""
        collector = ChunkCollector()
        message = Invoke(payload)
        # (A slot handed to a waiting sender counts as queued: that sender goes first.)
        if self._inline and self.state is ActorState.IDLE and not self._mailbox and not self._space_reserved:
            # No task switch on this path: honour cancellation without yielding.  Only
            # one call in YIELD_EVERY yields for real, so that a tight loop of inline
            # calls still lets deadlines fire and other tasks run.
            bridge = self._bridge
            bridge.calls_without_yield += 1
            if bridge.calls_without_yield >= YIELD_EVERY:
                bridge.calls_without_yield = 0
                await bridge.checkpoint()
                # Other tasks ran meanwhile: the actor may have crashed, been killed or
                # taken other messages, so the checks below are made again.
            else:
                await bridge.checkpoint_if_cancelled()
        if self.state is ActorState.IDLE and not self._mailbox and not self._space_reserved:
            if self._inline:
                outcome = self._run_inline(message, collector)
            else:
                await self._bridge.checkpoint_if_cancelled()  # never start work for a cancelled caller
                outcome = await self._wait(self._run_on_thread(Envelope(message, collector)))
        else:
            outcome = await self._wait(await self._enqueue(message, collector))
        if type(outcome) is Reply:
            if collector.chunks:
                collector.chunks.append(outcome.data)
                return b"".join(collector.chunks)
            return outcome.data
        assert isinstance(outcome, Failed)
        raise error_from_info(outcome.error)

    async def submit(self, payload: bytes, pipe: ChunkPipe) -> Envelope:
        """Send ``Invoke(payload)`` with chunks going to ``pipe``; finish with :meth:`outcome`.

        The pipe is closed when the call ends.  For an inline actor the call
        runs when :meth:`outcome` is awaited.
        """
        message = Invoke(payload)
        if self.state is ActorState.IDLE and not self._mailbox and not self._space_reserved and not self._inline:
            return self._run_on_thread(Envelope(message, pipe))
        return await self._enqueue(message, pipe)

    def forget(self, envelope: Envelope) -> None:
        """The sender no longer wants a submitted message: drop it if it has not started."""
        self._abandon(envelope)

    async def outcome(self, envelope: Envelope) -> bytes:
        """Wait for a submitted message; return its reply or raise its typed error."""
        outcome = await self._wait(envelope)
        if type(outcome) is Reply:
            return outcome.data
        assert isinstance(outcome, Failed)
        raise error_from_info(outcome.error)

    # --- mailbox --------------------------------------------------------------

    async def _enqueue(self, message: Invoke, sink: ChunkSink | None) -> Envelope:
        self._check_alive()
        policy = self.policy
        # A slot freed while senders wait is handed to the first of them (reserved), so
        # a newcomer finds no space while anyone waits: first come, first served.
        if len(self._mailbox) + self._space_reserved >= policy.mailbox_size or self._space_waiting:
            if policy.overflow == "reject":
                raise MailboxFull(
                    f"mailbox of actor {self.ref.id} is full ({policy.mailbox_size} queued)",
                    function=self.ref.function,
                )
            await self._wait_for_space(policy)
        envelope = Envelope(message, sink)
        self._mailbox.append(envelope)
        if self.state is ActorState.IDLE:
            self._next()
        return envelope

    def _check_alive(self) -> None:
        if self.alive:
            return
        reason = self.exit_reason or self._stop_reason or ExitReason("normal")
        if reason == RUNTIME_CLOSING:
            raise RuntimeClosed("the runtime is closing", function=self.ref.function)
        raise ActorCrashed(
            f"actor {self.ref.id} is gone ({reason.kind}: {reason.message})",
            function=self.ref.function,
            reason=reason.kind,
        )

    async def _wait_for_space(self, policy: ActorPolicy) -> None:
        """Wait in line until a slot is handed over; MailboxFull after ``mailbox_wait``.

        Each freed slot wakes one waiter, not all of them: under overload
        thousands of senders may wait, and waking every one on every freed
        slot made the loop's work grow with the square of the queue.
        """
        waiter = _SpaceWaiter()
        self._space_line.append(waiter)
        self._space_waiting += 1
        try:
            with anyio.move_on_after(policy.mailbox_wait):
                await waiter.event.wait()
        except BaseException:
            self._leave_space_line(waiter)
            raise
        if not waiter.granted:
            self._leave_space_line(waiter)
            self._check_alive()  # (woken because the actor ended)
            raise MailboxFull(
                f"mailbox of actor {self.ref.id} stayed full for {policy.mailbox_wait:g}s",
                function=self.ref.function,
            )
        self._space_reserved -= 1  # the slot is ours: the caller puts its message in now
        self._check_alive()

    def _leave_space_line(self, waiter: _SpaceWaiter) -> None:
        """A waiter gives up (timeout, cancellation): pass on a slot it was handed, or leave the line."""
        if waiter.granted:
            waiter.granted = False
            self._space_reserved -= 1
            self._space_freed()
        elif not waiter.gone:
            waiter.gone = True
            self._space_waiting -= 1
            # Leavers are dropped from the front at once (timeouts leave in arrival order);
            # others are skipped when they reach it, or swept if they pile up behind a
            # long call (or forever, with mailbox_size=0, where no slot ever comes free).
            line = self._space_line
            while line and line[0].gone:
                line.popleft()
            if len(line) > 2 * self._space_waiting + 64:
                self._space_line = deque(w for w in line if not w.gone)

    def _space_freed(self) -> None:
        """One mailbox slot came free: hand it to the first waiter still waiting, if any."""
        line = self._space_line
        while line:
            waiter = line.popleft()
            if waiter.gone:
                continue
            waiter.granted = True
            self._space_waiting -= 1
            self._space_reserved += 1
            waiter.event.set()
            return

    def _wake_every_space_waiter(self) -> None:
        """The actor stops taking messages: every waiter wakes (and finds it gone)."""
        line, self._space_line = self._space_line, deque()
        for waiter in line:
            if not waiter.gone:  # (granted waiters are no longer in the line)
                waiter.gone = True
                waiter.event.set()
        self._space_waiting = 0

    def _next(self) -> None:
        """Start the next queued message, if the actor is idle."""
        if self.state is not ActorState.IDLE or not self._mailbox:
            return
        envelope = self._mailbox.popleft()
        self._space_freed()
        if self._inline:
            # Hand the turn to the sender's own task: it runs the call in _wait.
            self.state = ActorState.BUSY
            self._granted = envelope
            envelope.done.set()
        else:
            self._run_on_thread(envelope)

    async def _wait(self, envelope: Envelope) -> Outcome:
        try:
            await envelope.done.wait()
        except BaseException:
            self._abandon(envelope)
            raise
        if envelope.outcome is None:  # inline: our turn
            self._granted = None
            envelope.outcome = self._run_inline(envelope.message, envelope.sink)
            self._close_sink(envelope)
        return envelope.outcome

    def _abandon(self, envelope: Envelope) -> None:
        """The sender was cancelled while waiting: forget a message that has not started."""
        if envelope.outcome is not None:
            return
        if self._granted is envelope:
            self._granted = None
            envelope.outcome = Failed(RuntimeClosed("sender cancelled", function=self.ref.function).to_info())
            self._close_sink(envelope)
            if self.state is ActorState.STOPPING:
                self._end(self._stop_reason or ExitReason("normal"))
            else:
                self.state = ActorState.IDLE
                self._next()
        else:
            try:
                self._mailbox.remove(envelope)
            except ValueError:
                return  # already running on the actor thread; its outcome is dropped
            self._space_freed()

    # --- running calls ------------------------------------------------------------

    def _execute(self, message: Invoke, sink: ChunkSink | None) -> tuple[Outcome, ExitReason | None]:
        """Run one call on the current thread.  Never raises."""
        instance = self._instance
        assert instance is not None
        try:
            hook = self.call_hook
            if hook is not None:
                hook(self, instance, message.payload)
            return Reply(instance.handle(message.payload, sink)), None
        except WasmhiveError as exc:
            reason = ExitReason(getattr(exc, "exit_kind", "fault"), str(exc)) if exc.fatal else None
            return Failed(exc.to_info()), reason
        except Exception as exc:  # a bug on the host side; the instance state is unknown
            logger.exception("unexpected error in actor %s", self.ref)
            error = WasmhiveError(f"internal error: {exc!r}", function=self.ref.function)
            return Failed(error.to_info()), ExitReason("internal", str(error))

    def _run_inline(self, message: Invoke, sink: ChunkSink | None) -> Outcome:
        if self.state is not ActorState.STOPPING:  # a stop() after the turn was granted must stick
            self.state = ActorState.BUSY
        self._ticker.begin()
        outcome, crash = self._execute(message, sink)
        self._finish(crash, outcome)
        return outcome

    def _run_on_thread(self, envelope: Envelope) -> Envelope:
        self.state = ActorState.BUSY
        self._ticker.begin()
        self._running = envelope
        assert self._thread is not None
        self._thread.submit(lambda: self._thread_job(envelope))
        return envelope

    def _thread_job(self, envelope: Envelope) -> None:  # on the actor thread
        outcome, crash = self._execute(envelope.message, envelope.sink)
        self._bridge.call_soon(self._thread_done, envelope, outcome, crash)

    def _thread_done(self, envelope: Envelope, outcome: Outcome, crash: ExitReason | None) -> None:
        self._running = None
        envelope.outcome = outcome
        self._close_sink(envelope)
        envelope.done.set()
        self._finish(crash, outcome)

    @staticmethod
    def _close_sink(envelope: Envelope) -> None:
        if isinstance(envelope.sink, ChunkPipe):
            envelope.sink.close()

    def _finish(self, crash: ExitReason | None, outcome: Outcome | None = None) -> None:
        """A call ended (on the loop thread): crash, stop, or take the next message."""
        self._ticker.end()
        self.calls += 1
        if type(outcome) is Failed:
            self.failures += 1
        if crash is not None:
            self._end(crash)
        elif self.state is ActorState.STOPPING:
            self._end(self._stop_reason or ExitReason("normal"))
        else:
            self.state = ActorState.IDLE
            if self._mailbox:
                self._next()

    # --- ending -------------------------------------------------------------------

    def _fail_queued(self, reason: ExitReason) -> None:
        pending = list(self._mailbox)
        self._mailbox.clear()
        for envelope in pending:
            if reason == RUNTIME_CLOSING:
                error: WasmhiveError = RuntimeClosed(
                    "the runtime closed before this message was handled", function=self.ref.function
                )
            else:
                error = ActorCrashed(
                    f"actor {self.ref.id} ended ({reason.kind}) before handling this message: {reason.message}",
                    function=self.ref.function,
                    reason=reason.kind,
                    queued=True,  # a bystander of whatever ended the actor (see Deployment._attempt)
                )
            envelope.outcome = Failed(error.to_info())
            self._close_sink(envelope)
            envelope.done.set()
        self._wake_every_space_waiter()

    def _end(self, reason: ExitReason) -> None:
        self._ready.set()
        self.state = ActorState.CRASHED if reason.abnormal else ActorState.STOPPED
        self.exit_reason = reason
        self._fail_queued(reason)
        if self._instance is not None:
            self._instance.close()
            self._instance = None
        self.release_thread()
        down = Down(self.ref, reason)
        monitors, self._monitors = self._monitors, []
        for monitor in monitors:
            monitor.deliver(down)
        callbacks, self._exit_callbacks = self._exit_callbacks, []
        for callback in callbacks:
            try:
                callback(self, reason)
            except Exception:
                logger.exception("exit callback of actor %s failed", self.ref)
        self._stopped.set()
