"""The access log never holds up requests: lines are written by a thread of their own."""

from __future__ import annotations

import io
import json
import threading

from wasmhive.runtime.daemon.app import AccessLog


class StalledStream(io.StringIO):
    """stderr whose reader stopped reading: every write blocks until released."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def write(self, text: str) -> int:
        self.release.wait()
        return super().write(text)


def test_lines_arrive_in_order_and_close_flushes_them() -> None:
    stream = io.StringIO()
    log = AccessLog(True, stream)
    for i in range(100):
        log.write(request_id=str(i), outcome="ok")
    log.close()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["request_id"] for line in lines] == [str(i) for i in range(100)]
    assert log.dropped == 0


def test_a_stalled_reader_drops_lines_instead_of_blocking() -> None:
    stream = StalledStream()
    log = AccessLog(True, stream, buffer=10)
    for i in range(50):  # returns at once although nothing can be written
        log.write(request_id=str(i))
    assert log.dropped >= 50 - 10 - 1  # (the writer may hold one batch)
    stream.release.set()
    log.close()
    written = stream.getvalue().splitlines()
    assert len(written) + log.dropped == 50
    assert json.loads(written[0])["request_id"] == "0"


def test_disabled_writes_nothing_and_starts_no_thread() -> None:
    stream = io.StringIO()
    log = AccessLog(False, stream)
    log.write(request_id="x")
    log.close()
    assert stream.getvalue() == ""
    assert not any(t.name == "wasmhive-access-log" for t in threading.enumerate())
