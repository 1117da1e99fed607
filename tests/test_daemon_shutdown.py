"""The daemon's life cycle: graceful shutdown on SIGTERM/SIGINT, and restarts that keep everything.

Each test runs its own ``wasmhive serve`` subprocess (tests/daemon.py).
"""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import guests
import httpx
import pytest
from daemon import Daemon, reply_with, sleeper
from prometheus_client.parser import text_string_to_metric_families

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TOKEN = "shutdown-test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

#: Client-side failures that mean "the server never read this request".
NOT_READ = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


def deploy(http: httpx.Client, name: str, module: str, content_type: str = "text/wat", **params: Any) -> int:
    headers = {**AUTH, "Content-Type": content_type}
    r = http.post(f"/v1/functions/{name}", content=module, params=params, headers=headers)
    assert r.status_code == 201, r.text
    version: int = r.json()["version"]
    return version


def samples(http: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = http.get("/metrics").text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_sigterm_under_load_answers_every_accepted_request(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, {"server": {"admin_token": TOKEN, "shutdown_grace": 10.0}})
    clients, warmup = 20, 24
    with daemon:
        with daemon.client() as http:
            # ~150 ms a call, 4 actors: 20 clients keep 4 calls running and ~16 waiting.
            deploy(http, "work", sleeper(150), instances=4)
        results: dict[str, tuple[int | type[Exception], bytes, float, float]] = {}
        lock = threading.Lock()
        answered = threading.Semaphore(0)

        def client(i: int) -> None:
            with daemon.client(timeout=30) as c:
                for n in range(10_000):
                    rid = f"load-{i}-{n}"
                    started = time.monotonic()
                    try:
                        r = c.post("/v1/invoke/work", content=rid.encode(), headers={"X-Request-Id": rid})
                    except httpx.HTTPError as exc:
                        with lock:
                            results[rid] = (type(exc), str(exc).encode(), started, time.monotonic())
                        return  # the daemon is going away
                    with lock:
                        results[rid] = (r.status_code, r.content, started, time.monotonic())
                    answered.release()

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for _ in range(warmup):  # under load: some calls answered, the others queued
            assert answered.acquire(timeout=30)
        sigterm_at = time.monotonic()
        daemon.signal(signal.SIGTERM)
        for t in threads:
            t.join(60)
            assert not t.is_alive()
        last_answer = time.monotonic()
        assert daemon.wait() == 0
        # Once every answer is out it stops: no waiting on keep-alive connections.
        assert time.monotonic() - last_answer < 4.0
    logged = {line["request_id"]: line for line in daemon.stderr_lines() if line["request_id"].startswith("load-")}
    # A known race, left open (issue notes): a request that reaches Hypercorn within a moment
    # of the SIGTERM can be read and run while its connection is closed as idle, so the client
    # sees the connection close with no answer although the daemon ran the call and logged a
    # 200.  Seen in about 1 run in 30 under CPU load, always for a request sent within a few ms
    # of the signal; every other request must meet the rules below.
    raced = {
        rid
        for rid, (kind, _, started, _) in results.items()
        if not isinstance(kind, int) and rid in logged and abs(started - sigterm_at) < 0.05
    }
    assert len(raced) <= 2, raced
    logged = {rid: line for rid, line in logged.items() if rid not in raced}

    # Every request the daemon accepted (and logged) got its answer, and it was a success.
    for rid, line in logged.items():
        assert rid in results, f"{rid} was logged but the client has no answer"
        status, body, _, _ = results[rid]
        assert status == 200, (rid, status, body, line)
        assert body == rid.encode()
        assert (line["status"], line["outcome"]) == (200, "ok")
    # Every request the client saw fail was never read by the daemon, and failed to connect or
    # found its connection closed; it is not a timeout or a cut answer.
    failures = {rid: r for rid, r in results.items() if not isinstance(r[0], int)}
    for rid, (kind, message, _, _) in failures.items():
        assert rid not in logged, (rid, kind, message)
        assert isinstance(kind, type) and issubclass(kind, NOT_READ), (rid, kind, message)
        assert "incomplete" not in message.decode(), (rid, message)
    assert len(failures) == clients  # each client stops at its first refusal
    answers = {rid: r for rid, r in results.items() if isinstance(r[0], int)}
    assert set(answers) == set(logged)
    # The shutdown happened under load: calls in flight at SIGTERM were answered after it.
    finished_after = [rid for rid, (_, _, started, ended) in answers.items() if started < sigterm_at < ended]
    assert len(finished_after) >= 4, finished_after
    assert Counter(r[0] for r in answers.values()) == {200: len(answers)}
    assert "Traceback" not in daemon.stderr_text()


def test_grace_expiry_answers_503_shutting_down(tmp_path: Path) -> None:
    daemon = Daemon(tmp_path, {"server": {"admin_token": TOKEN, "shutdown_grace": 0.5}})
    with daemon:
        with daemon.client() as http:
            deploy(http, "long", guests.INFINITE_LOOP, timeout=5)  # a call that takes 5 s
            deploy(http, "quick", guests.ECHO)
            result: list[httpx.Response | Exception] = []

            def call() -> None:
                try:
                    result.append(http.post("/v1/invoke/long", content=b"x", headers={"X-Request-Id": "grace-1"}))
                except httpx.HTTPError as exc:
                    result.append(exc)

            thread = threading.Thread(target=call)
            thread.start()
            # The call is running once the actor is busy with it.
            deadline = time.monotonic() + 10
            with daemon.client() as probe:
                while True:
                    busy = samples(probe).get(("wasmhive_in_flight_requests", frozenset({("function", "long")})))
                    if busy == 1:
                        break
                    assert time.monotonic() < deadline, "the call never started"
                    time.sleep(0.01)
            sigterm_at = time.monotonic()
            daemon.signal(signal.SIGTERM)
            thread.join(30)
            answered_after = time.monotonic() - sigterm_at
        [r] = result
        assert isinstance(r, httpx.Response), r
        assert r.status_code == 503, r.text
        body = r.json()
        assert (body["error"], body["function"], body["request_id"]) == ("ShuttingDown", "long", "grace-1")
        assert r.headers["retry-after"] == "1"
        assert r.headers["x-request-id"] == "grace-1"
        assert 0.4 <= answered_after < 4.5, answered_after  # after the grace period, well before the 5 s call
        assert daemon.wait() == 0
    line = daemon.wait_for_log(lambda x: x.get("request_id") == "grace-1")
    assert (line["outcome"], line["status"]) == ("ShuttingDown", 503)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_idle_daemon_stops_at_once(tmp_path: Path, stop: signal.Signals) -> None:
    with Daemon(tmp_path) as daemon:
        with daemon.client() as http:  # an idle keep-alive connection does not hold it up
            assert http.get("/healthz").status_code == 200
            started = time.monotonic()
            daemon.signal(stop)
            assert daemon.wait() == 0
            assert time.monotonic() - started < 3.0
        with pytest.raises(httpx.ConnectError):
            httpx.get(daemon.url + "/healthz")


def test_restart_keeps_versions_aliases_and_is_warm(tmp_path: Path) -> None:
    (tmp_path / "hello.js").write_text((EXAMPLES / "hello.js").read_text())
    config = {
        "server": {"admin_token": TOKEN},
        "deploy": [{"name": "bundled", "path": str(EXAMPLES / "echo.wat"), "aliases": ["prod"]}],
    }
    with Daemon(tmp_path, config) as daemon:
        with daemon.client() as http:
            assert http.get("/readyz").json() == {"status": "ready", "functions": 1}
            for i in (1, 2, 3):
                assert deploy(http, "kept", reply_with(f"v{i}")) == i
            assert http.delete("/v1/functions/kept/versions/1", headers=AUTH).status_code == 200
            assert http.put("/v1/functions/kept/aliases/prod", json={"2": 50, "3": 50}, headers=AUTH).status_code == 200
            assert http.put("/v1/functions/kept/aliases/stable", json=2, headers=AUTH).status_code == 200
            assert deploy(http, "greet", (tmp_path / "hello.js").read_text(), "application/javascript") == 1
            assert http.post("/v1/invoke/greet", content=b'{"name": "a"}').json()["greeting"] == "hello a"
            before = http.get("/v1/functions").json()
            first_run = samples(http)
        assert first_run[("wasmhive_compile_cache_misses_total", frozenset())] >= 1

        # Stop with SIGINT this time, start again on the same data dir.
        daemon.signal(signal.SIGINT)
        assert daemon.wait() == 0
        daemon.start()
        with daemon.client() as http:
            assert http.get("/readyz").json() == {"status": "ready", "functions": 3}
            assert http.get("/v1/functions").json() == before  # the bundled function has no new version
            shown = http.get("/v1/functions/kept").json()
            assert [(v["version"], v["status"]) for v in shown["versions"]] == [(2, "running"), (3, "running")]
            assert shown["aliases"] == {"latest": {"3": 100}, "prod": {"2": 50, "3": 50}, "stable": {"2": 100}}
            assert http.post("/v1/invoke/kept").content == b"v3"
            assert http.post("/v1/invoke/kept@stable").content == b"v2"
            assert http.post("/v1/invoke/kept@2").content == b"v2"
            assert {http.post("/v1/invoke/kept@prod").content for _ in range(60)} == {b"v2", b"v3"}
            assert http.post("/v1/invoke/bundled@prod", content=b"b").content == b"b"
            assert http.post("/v1/invoke/greet", content=b'{"name": "b"}').json()["greeting"] == "hello b"
            warm = samples(http)
            # Every module came from the compile cache on disk: nothing was compiled again.
            assert warm[("wasmhive_compile_cache_misses_total", frozenset())] == 0
            assert warm[("wasmhive_compile_cache_hits_total", frozenset({("tier", "disk")}))] >= 4
            # Version numbers go on from where they were.
            assert deploy(http, "kept", reply_with("v4")) == 4
        assert daemon.terminate() == 0
