"""The daemon's HTTP API, end to end: ``wasmhive serve`` as a real subprocess, driven with httpx.

One daemon serves the whole module (every test uses its own function names).
Shutdown, restart and config tests are in test_daemon_shutdown.py and
test_daemon_config.py; the harness is tests/daemon.py.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import guests
import httpx
import pytest
import wasmtime
from daemon import STREAM_GATE, WASI_ENVIRON, Daemon, reply_with, sleeper
from prometheus_client.parser import text_string_to_metric_families

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TOKEN = "test-admin-token-0123456789"
MAX_BODY = 64 * 1024
MAX_PAYLOAD = 4096
REQUEST_TIMEOUT = 3.0
#: In the daemon's environment: no guest may see it (nor the admin token).
PROBE = "WASMHIVE_TEST_PROBE"


@pytest.fixture(scope="module")
def hive(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[Daemon]:
    config = {
        "server": {"max_body_bytes": MAX_BODY, "request_timeout": REQUEST_TIMEOUT},
        # The test session's compile cache (QuickJS compiles once); test_daemon_shutdown.py
        # checks the default, DATA_DIR/cache.
        "runtime": {"max_payload_bytes": MAX_PAYLOAD, "cache_dir": str(cache_dir)},
    }
    # The token comes from the environment here (test_daemon_config.py sets it in the file).
    env = {"WASMHIVE_ADMIN_TOKEN": TOKEN, PROBE: "host-secret-value"}
    with Daemon(tmp_path_factory.mktemp("hive"), config, env=env) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def http(hive: Daemon) -> Iterator[httpx.Client]:
    with hive.client() as client:
        yield client


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def deploy(
    http: httpx.Client,
    name: str,
    module: str | bytes,
    *,
    content_type: str = "text/wat",
    params: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    headers = {**AUTH, "Content-Type": content_type}
    if options is not None:
        headers["X-Wasmhive-Options"] = json.dumps(options)
    r = http.post(f"/v1/functions/{name}", content=module, params=params, headers=headers)
    assert r.status_code == 201, r.text
    record: dict[str, Any] = r.json()
    assert record["name"] == name
    return record


def error_of(r: httpx.Response, status: int, kind: str, function: str | None = None) -> dict[str, Any]:
    """Check an error response: exact status, JSON ``{"error": kind, "message": ...}``; return the body."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["content-type"].split(";")[0] == "application/json", r.headers
    body: dict[str, Any] = r.json()
    assert body["error"] == kind, body
    assert isinstance(body["message"], str) and body["message"], body
    assert body["request_id"] == r.headers["x-request-id"]
    if function is not None:
        assert body["function"] == function, body
    return body


def scrape(http: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    r = http.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def metric(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def sse_events(text: str) -> list[tuple[str, str]]:
    """(event, data) of each Server-Sent Event, data lines joined with newlines."""
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        event, data = "message", []
        for line in block.split("\n"):
            field, _, value = line.partition(": ")
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
        events.append((event, "\n".join(data)))
    return events


# --- probes -------------------------------------------------------------------------------


def test_healthz_and_readyz(http: httpx.Client) -> None:
    r = http.get("/healthz")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})
    r = http.get("/readyz")
    assert r.status_code == 200
    assert r.json()["status"] == "ready"
    assert isinstance(r.json()["functions"], int)


# --- deploy, versions, delete -------------------------------------------------------------


def test_deploy_wasm_binary_wat_and_javascript(http: httpx.Client) -> None:
    binary = bytes(wasmtime.wat2wasm(guests.ECHO))
    record = deploy(http, "dep-bin", binary, content_type="application/wasm")
    assert (record["version"], record["kind"], record["size"]) == (1, "wasm", len(binary))
    assert http.post("/v1/invoke/dep-bin", content=b"binary").content == b"binary"

    record = deploy(http, "dep-wat", guests.ECHO, content_type="text/wat")
    assert (record["version"], record["kind"]) == (1, "wasm")
    assert http.post("/v1/invoke/dep-wat", content=b"text").content == b"text"

    js = "function handler(request) { return 'js:' + request.text(); }"
    record = deploy(http, "dep-js", js, content_type="application/javascript")
    assert (record["version"], record["kind"]) == (1, "js")
    assert http.post("/v1/invoke/dep-js", content=b"hi").content == b"js:hi"

    # Without a content type, wasm (and WAT) is recognized from the bytes; JavaScript is not.
    r = http.post("/v1/functions/dep-guess", content=binary, headers={**AUTH, "Content-Type": ""})
    assert r.status_code == 201, r.text
    r = http.post("/v1/functions/dep-guess", content=js, headers={**AUTH, "Content-Type": ""})
    error_of(r, 400, "BadRequest")
    r = http.post("/v1/functions/dep-guess", content=js, params={"kind": "js"}, headers=AUTH)
    assert (r.status_code, r.json()["kind"], r.json()["version"]) == (201, "js", 2)


def test_versions_list_show_and_delete(http: httpx.Client) -> None:
    digests = {}
    for i in (1, 2, 3):
        record = deploy(http, "ver", reply_with(f"v{i}"))
        assert record["version"] == i
        digests[i] = record["digest"]
    assert len(set(digests.values())) == 3

    r = http.get("/v1/functions/ver")
    assert r.status_code == 200
    info = r.json()
    assert [v["version"] for v in info["versions"]] == [1, 2, 3]
    assert [v["digest"] for v in info["versions"]] == [digests[1], digests[2], digests[3]]
    assert all(v["status"] == "running" for v in info["versions"])
    assert info["aliases"] == {"latest": {"3": 100}}

    listed = {f["name"]: f for f in http.get("/v1/functions").json()["functions"]}
    assert listed["ver"] == {"name": "ver", "versions": [1, 2, 3], "aliases": {"latest": {"3": 100}}}

    r = http.get("/v1/functions/ver/versions/2")
    assert r.status_code == 200
    shown = r.json()
    assert (shown["name"], shown["version"], shown["digest"], shown["kind"]) == ("ver", 2, digests[2], "wasm")
    error_of(http.get("/v1/functions/ver/versions/9"), 404, "UnknownFunction")

    assert http.post("/v1/invoke/ver").content == b"v3"  # plain name: latest
    assert http.post("/v1/invoke/ver@1").content == b"v1"

    r = http.delete("/v1/functions/ver/versions/1", headers=AUTH)
    assert (r.status_code, r.json()) == (200, {"deleted": [1]})
    error_of(http.get("/v1/functions/ver/versions/1"), 404, "UnknownFunction")
    error_of(http.post("/v1/invoke/ver@1"), 404, "UnknownFunction", "ver")
    assert [v["version"] for v in http.get("/v1/functions/ver").json()["versions"]] == [2, 3]

    # Deleting the version `latest` points at moves it back.
    r = http.delete("/v1/functions/ver/versions/3", headers=AUTH)
    assert r.status_code == 200, r.text
    assert http.get("/v1/functions/ver").json()["aliases"] == {"latest": {"2": 100}}
    assert http.post("/v1/invoke/ver").content == b"v2"

    # Version numbers are never reused.
    assert deploy(http, "ver", reply_with("v4"))["version"] == 4

    r = http.delete("/v1/functions/ver", headers=AUTH)
    assert (r.status_code, r.json()) == (200, {"deleted": [2, 4]})
    error_of(http.get("/v1/functions/ver"), 404, "UnknownFunction", "ver")
    error_of(http.post("/v1/invoke/ver"), 404, "UnknownFunction", "ver")
    assert "ver" not in {f["name"] for f in http.get("/v1/functions").json()["functions"]}
    error_of(http.delete("/v1/functions/ver", headers=AUTH), 404, "UnknownFunction")


def test_deploy_options_from_query_and_header(http: httpx.Client) -> None:
    # Query parameters win over the header's options.
    record = deploy(
        http,
        "opts",
        guests.ECHO,
        params={"timeout": "0.25", "instances": "2"},
        options={"timeout": 9.0, "mailbox_size": 7, "breaker": {"failure_threshold": 4}},
    )
    options = record["options"]
    assert (options["timeout"], options["instances"], options["mailbox_size"]) == (0.25, 2, 7)
    assert options["breaker"]["failure_threshold"] == 4
    assert http.get("/v1/functions/opts/versions/1").json()["options"] == options
    samples = scrape(http)
    assert metric(samples, "wasmhive_pool_size", function="opts", version="1") == 2
    assert metric(samples, "wasmhive_breaker_state", function="opts", version="1", state="CLOSED") == 1

    # The options take effect: a timeout of 0.25 s ends a guest that never returns.
    deploy(http, "opts-loop", guests.INFINITE_LOOP, options={"timeout": 0.25})
    body = error_of(http.post("/v1/invoke/opts-loop"), 504, "CallTimeout", "opts-loop")
    assert "0.25" in body["message"]


@pytest.mark.parametrize(
    ("params", "headers", "kind", "needle"),
    [
        ({"instances": "many"}, {}, "BadRequest", "instances"),
        ({"speed": "fast"}, {}, "BadRequest", "speed"),
        ({}, {"X-Wasmhive-Options": "{not json"}, "BadRequest", "X-Wasmhive-Options"),
        ({}, {"X-Wasmhive-Options": "[1, 2]"}, "BadRequest", "X-Wasmhive-Options"),
        ({}, {"X-Wasmhive-Options": '{"timeout": -1}'}, "InvalidConfig", "timeout"),
        ({}, {"X-Wasmhive-Options": '{"colour": "red"}'}, "InvalidConfig", "colour"),
        ({"mode": "sideways"}, {}, "InvalidConfig", "mode"),
        ({}, {"X-Wasmhive-Options": '{"pool": {"min_size": 3, "max_size": 1}}'}, "InvalidConfig", "min_size"),
    ],
)
def test_bad_deploy_options_are_400(
    http: httpx.Client, params: dict[str, str], headers: dict[str, str], kind: str, needle: str
) -> None:
    r = http.post("/v1/functions/badopts", content=guests.ECHO, params=params, headers={**AUTH, **headers})
    body = error_of(r, 400, kind)
    assert needle in body["message"]
    error_of(http.get("/v1/functions/badopts"), 404, "UnknownFunction")  # nothing was deployed


@pytest.mark.parametrize(
    ("module", "needle"),
    [
        (b"\0asm\x01\0\0\0\xff\xff", "does not validate"),
        ("(module (func $oops", "WAT"),
        (guests.NO_HANDLE, "wh_handle"),
        (guests.FOREIGN_IMPORT, "env.abort"),
    ],
)
def test_invalid_module_is_400(http: httpx.Client, module: str | bytes, needle: str) -> None:
    r = http.post("/v1/functions/invalid", content=module, headers={**AUTH, "Content-Type": "application/wasm"})
    body = error_of(r, 400, "InvalidModule", "invalid")
    assert needle in body["message"]
    error_of(http.get("/v1/functions/invalid"), 404, "UnknownFunction")


def test_javascript_that_does_not_compile_is_400(http: httpx.Client) -> None:
    r = http.post(
        "/v1/functions/badjs",
        content="function handler( {",
        headers={**AUTH, "Content-Type": "application/javascript"},
    )
    error_of(r, 400, "InvalidModule", "badjs")


@pytest.mark.parametrize("name", ["bad.name", "-dash", "x" * 49, "sp ace", "_under"])
def test_bad_function_name_is_400(http: httpx.Client, name: str) -> None:
    r = http.post(f"/v1/functions/{name}", content=guests.ECHO, headers=AUTH)
    body = error_of(r, 400, "InvalidConfig")
    assert "function name" in body["message"]


# --- aliases ------------------------------------------------------------------------------


def test_alias_weights_rollback_and_targets(hive: Daemon, http: httpx.Client) -> None:
    for i in (1, 2, 3):
        assert deploy(http, "canary", reply_with(f"v{i}"))["version"] == i
    r = http.put("/v1/functions/canary/aliases/prod", json={"2": 90, "3": 10}, headers=AUTH)
    assert (r.status_code, r.json()) == (200, {"name": "canary", "alias": "prod", "weights": {"2": 90, "3": 10}})
    r = http.get("/v1/functions/canary/aliases")
    assert r.json() == {"aliases": {"latest": {"3": 100}, "prod": {"2": 90, "3": 10}}}

    # A 90/10 split over n calls: the canary's count is Binomial(n, 0.1); allow 5 sigma
    # (a false failure about once in 1.7 million runs).
    n, p, clients = 3000, 0.10, 4
    seen: Counter[str] = Counter()
    lock = threading.Lock()

    def calls(count: int) -> None:
        with hive.client() as client:
            for _ in range(count):
                r = client.post("/v1/invoke/canary@prod")
                assert r.status_code == 200
                version = r.headers["x-wasmhive-version"]
                assert r.content == f"v{version}".encode()  # the header names the version that answered
                with lock:
                    seen[version] += 1

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(calls, n // clients) for _ in range(clients)]:
            future.result()
    assert sum(seen.values()) == n
    assert set(seen) == {"2", "3"}
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(seen["3"] - n * p) <= 5 * sigma, seen

    # Rollback: point prod back at 2 alone; every call goes there at once.
    r = http.put("/v1/functions/canary/aliases/prod", json=2, headers=AUTH)
    assert (r.status_code, r.json()["weights"]) == (200, {"2": 100})
    versions = {http.post("/v1/invoke/canary@prod").headers["x-wasmhive-version"] for _ in range(200)}
    assert versions == {"2"}

    # name@version, name@alias, plain name (latest)
    r = http.post("/v1/invoke/canary@1")
    assert (r.content, r.headers["x-wasmhive-version"]) == (b"v1", "1")
    assert http.post("/v1/invoke/canary@prod").content == b"v2"
    r = http.post("/v1/invoke/canary")
    assert (r.content, r.headers["x-wasmhive-version"]) == (b"v3", "3")
    r = http.put("/v1/functions/canary/aliases/stable", json={"version": 1}, headers=AUTH)
    assert r.status_code == 200
    assert http.post("/v1/invoke/canary@stable").content == b"v1"
    # latest can be moved like any alias
    r = http.put("/v1/functions/canary/aliases/latest", json=1, headers=AUTH)
    assert r.status_code == 200
    assert http.post("/v1/invoke/canary").content == b"v1"

    # A version an alias uses cannot go; once the alias moves away, it can.
    body = error_of(http.delete("/v1/functions/canary/versions/2", headers=AUTH), 409, "VersionInUse", "canary")
    assert "prod" in body["message"]
    assert http.post("/v1/invoke/canary@2").content == b"v2"  # still there
    r = http.put("/v1/functions/canary/aliases/prod", json=3, headers=AUTH)
    assert r.status_code == 200
    r = http.delete("/v1/functions/canary/versions/2", headers=AUTH)
    assert (r.status_code, r.json()) == (200, {"deleted": [2]})

    r = http.delete("/v1/functions/canary/aliases/stable", headers=AUTH)
    assert r.status_code == 204
    error_of(http.post("/v1/invoke/canary@stable"), 404, "UnknownFunction", "canary")


@pytest.mark.parametrize(
    ("body", "status", "kind"),
    [
        (b"not json", 400, "BadRequest"),
        (b'{"2": "ninety"}', 400, "BadRequest"),
        (b'{"x": 10}', 400, "BadRequest"),
        (b"[]", 400, "BadRequest"),
        (b"99", 404, "UnknownFunction"),  # no such version
        (b'{"1": 0}', 400, "InvalidConfig"),  # weights must be positive
    ],
)
def test_bad_alias_requests(http: httpx.Client, body: bytes, status: int, kind: str) -> None:
    deploy(http, "badalias", guests.ECHO)
    r = http.put("/v1/functions/badalias/aliases/prod", content=body, headers=AUTH)
    error_of(r, status, kind)
    r = http.put("/v1/functions/badalias/aliases/1bad", json=1, headers=AUTH)
    error_of(r, 400, "InvalidConfig")
    r = http.put("/v1/functions/nosuchfn/aliases/prod", json=1, headers=AUTH)
    error_of(r, 404, "UnknownFunction")


# --- auth ---------------------------------------------------------------------------------


def test_admin_requests_need_the_token(http: httpx.Client) -> None:
    deploy(http, "guarded", guests.ECHO)
    admin = [
        ("POST", "/v1/functions/guarded", guests.ECHO),
        ("PUT", "/v1/functions/guarded/aliases/prod", b"1"),
        ("DELETE", "/v1/functions/guarded/aliases/prod", None),
        ("DELETE", "/v1/functions/guarded/versions/1", None),
        ("DELETE", "/v1/functions/guarded", None),
    ]
    for method, url, content in admin:
        r = http.request(method, url, content=content)
        error_of(r, 401, "Unauthorized")
        assert r.headers["www-authenticate"].startswith("Bearer")
        # Refused before its body was read: the connection cannot carry another request.
        assert r.headers.get("connection") == ("close" if content else None)
        r = http.request(method, url, content=content, headers={"Authorization": "Basic dXNlcjpwdw=="})
        error_of(r, 401, "Unauthorized")
        r = http.request(method, url, content=content, headers={"Authorization": "Bearer wrong-token-000000000"})
        error_of(r, 403, "Forbidden")
        r = http.request(method, url, content=content, headers={"Authorization": f"Bearer {TOKEN}x"})
        error_of(r, 403, "Forbidden")
    # Nothing changed.
    assert [v["version"] for v in http.get("/v1/functions/guarded").json()["versions"]] == [1]

    # Reading and invoking need no token.
    assert http.get("/v1/functions/guarded").status_code == 200
    assert http.get("/v1/functions").status_code == 200
    assert http.post("/v1/invoke/guarded", content=b"open").content == b"open"
    assert http.post("/v1/stream/guarded", content=b"open").content == b"open"

    # The right token (scheme case-insensitive) does it all.
    statuses = [
        http.request(method, url, content=content, headers={"Authorization": f"bearer {TOKEN}"}).status_code
        for method, url, content in admin
    ]
    assert statuses == [201, 200, 204, 200, 200]


def test_refused_uploads_do_not_break_kept_alive_connections(http: httpx.Client) -> None:
    """Each refusal (body unread) says Connection: close, so the client never reuses a dead connection."""
    for _ in range(200):
        r = http.post("/v1/functions/refused", content=guests.ECHO)
        assert (r.status_code, r.headers["connection"]) == (401, "close")
    r = http.post("/v1/invoke/refused", content=b"x" * (MAX_BODY + 1))
    assert (r.status_code, r.headers["connection"]) == (413, "close")
    # Answers to requests whose body was read keep the connection.
    r = http.post("/v1/invoke/refused", content=b"x")
    assert r.status_code == 404
    assert "connection" not in r.headers


# --- errors -------------------------------------------------------------------------------


def test_unknown_function_alias_or_version_is_404(http: httpx.Client) -> None:
    deploy(http, "known", guests.ECHO)
    error_of(http.post("/v1/invoke/unknown-fn", content=b"x"), 404, "UnknownFunction", "unknown-fn")
    error_of(http.post("/v1/invoke/known@nope", content=b"x"), 404, "UnknownFunction", "known")
    error_of(http.post("/v1/invoke/known@99", content=b"x"), 404, "UnknownFunction", "known")
    error_of(http.post("/v1/stream/unknown-fn", content=b"x"), 404, "UnknownFunction", "unknown-fn")
    assert http.post("/v1/invoke/nothing/here").status_code == 404  # no such route


def test_odd_numbers_are_client_errors_not_500s(http: httpx.Client) -> None:
    deploy(http, "odd", guests.ECHO)
    # Unicode digits and numbers past SQLite's integers name no version.
    error_of(http.post("/v1/invoke/odd@\u00b2", content=b"x"), 404, "UnknownFunction", "odd")
    error_of(http.post("/v1/invoke/odd@" + "9" * 30, content=b"x"), 404, "UnknownFunction", "odd")
    error_of(http.get("/v1/functions/odd/versions/" + "9" * 30), 404, "UnknownFunction", "odd")
    r = http.put("/v1/functions/odd/aliases/prod", json={"\u00b2": 100}, headers=AUTH)
    error_of(r, 400, "BadRequest")
    # Non-finite limits are refused before anything is stored.
    versions = len(http.get("/v1/functions/odd").json()["versions"])
    for params in ({"timeout": "inf"}, {"mailbox_wait": "nan"}):
        r = http.post("/v1/functions/odd", content=guests.ECHO, params=params, headers={**AUTH, "Content-Type": "text/wat"})
        error_of(r, 400, "InvalidConfig")
    assert len(http.get("/v1/functions/odd").json()["versions"]) == versions


def test_invoke_target_is_one_decoded_path_segment(http: httpx.Client) -> None:
    """``{target}`` is one segment of the percent-decoded path; any other shape is not the invoke route."""
    for i in (1, 2):
        deploy(http, "seg", reply_with(f"s{i}"))
    assert http.put("/v1/functions/seg/aliases/prod", json=1, headers=AUTH).status_code == 200
    for url, version in [
        ("/v1/invoke/seg%40prod", 1),
        ("/v1/invoke/seg%401", 1),
        ("/v1/invoke/%73eg", 2),
        ("/v1/invoke/seg?x=%2F", 2),  # the query string is not looked at
    ]:
        r = http.post(url, content=b"x")
        assert (r.status_code, r.content, r.headers["x-wasmhive-version"]) == (200, b"s%d" % version, str(version))
    error_of(http.post("/v1/invoke/seg%40nope"), 404, "UnknownFunction", "seg")
    # A "/" in the target, even encoded, an empty target, another method: Starlette's plain answers.
    for url in ("/v1/invoke/seg%2Fx", "/v1/invoke/seg/x", "/v1/invoke/"):
        r = http.post(url, content=b"x")
        assert (r.status_code, r.text) == (404, "Not Found"), url
    r = http.post("/v1/invoke/seg/", content=b"x")
    assert (r.status_code, httpx.URL(r.headers["location"]).path) == (307, "/v1/invoke/seg")
    r = http.get("/v1/invoke/seg")
    assert (r.status_code, r.headers["allow"]) == (405, "POST")


def test_invoke_headers(http: httpx.Client) -> None:
    """The reply has no Content-Type (docs/api.md); request headers are read as Starlette reads them."""
    deploy(http, "hdr", guests.ECHO)
    r = http.post("/v1/invoke/hdr", content=b"abc", headers={"Content-Type": "text/plain"})
    assert (r.status_code, r.content, r.headers["content-length"]) == (200, b"abc", "3")
    assert "content-type" not in r.headers
    # Of a repeated header, the first counts.
    r = http.post("/v1/invoke/hdr", headers=[("X-Request-Id", "first-1"), ("X-Request-Id", "second-1")])
    assert r.headers["x-request-id"] == "first-1"
    # SSE whenever the Accept header names text/event-stream, among others too.
    r = http.post("/v1/invoke/hdr", content=b"e", headers={"Accept": "application/json, text/event-stream"})
    assert r.headers["content-type"].startswith("text/event-stream")
    assert [e for e, _ in sse_events(r.text)] == ["chunk", "done"]


def test_payload_too_large_is_413(http: httpx.Client) -> None:
    deploy(http, "big", guests.ECHO)
    assert http.post("/v1/invoke/big", content=b"x" * MAX_PAYLOAD).status_code == 200
    # Over the runtime's max_payload_bytes, under the server's body limit.
    body = error_of(http.post("/v1/invoke/big", content=b"x" * (MAX_PAYLOAD + 1)), 413, "PayloadTooLarge", "big")
    assert str(MAX_PAYLOAD) in body["message"]
    # Over server.max_body_bytes: refused from Content-Length ...
    body = error_of(http.post("/v1/invoke/big", content=b"x" * (MAX_BODY + 1)), 413, "PayloadTooLarge")
    assert "max_body_bytes" in body["message"]

    # ... and while reading a chunked body that has none.
    def chunks() -> Iterator[bytes]:
        for _ in range(MAX_BODY // 1024 + 1):
            yield b"y" * 1024

    body = error_of(http.post("/v1/invoke/big", content=chunks()), 413, "PayloadTooLarge")
    assert "max_body_bytes" in body["message"]
    # A module upload is a body too.
    r = http.post("/v1/functions/big", content=b"(module)" + b" " * MAX_BODY, headers=AUTH)
    error_of(r, 413, "PayloadTooLarge")
    # The connection and the daemon carry on.
    assert http.post("/v1/invoke/big", content=b"after").content == b"after"


def test_mailbox_full_is_429(http: httpx.Client) -> None:
    # One actor, room for one waiting message, overflow rejected; each call takes 0.7 s.
    deploy(http, "jam", sleeper(700), options={"instances": 1, "mailbox_size": 1, "overflow": "reject"})
    n = 6
    barrier = threading.Barrier(n)
    results: list[httpx.Response] = []
    lock = threading.Lock()
    hive_url = str(http.base_url)

    def call() -> None:
        with httpx.Client(base_url=hive_url, timeout=30) as client:
            barrier.wait()
            r = client.post("/v1/invoke/jam", content=b"x")
            with lock:
                results.append(r)

    threads = [threading.Thread(target=call) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = Counter(r.status_code for r in results)
    assert set(statuses) <= {200, 429}, [(r.status_code, r.text) for r in results]
    assert 1 <= statuses[200] <= 2 and statuses[429] >= n - 2, statuses
    for r in results:
        if r.status_code == 429:
            body = error_of(r, 429, r.json()["error"], "jam")
            assert body["error"] in ("MailboxFull", "Overloaded")
            assert r.headers["retry-after"] == "1"
        else:
            assert r.content == b"x"


def test_circuit_open_is_503_with_retry_after(http: httpx.Client) -> None:
    faulty = (EXAMPLES / "faulty.wat").read_text()
    deploy(http, "flaky", faulty, options={"breaker": {"failure_threshold": 1, "wait_in_open": 30}})
    assert http.post("/v1/invoke/flaky", content=b"fine").content == b"fine"
    body = error_of(http.post("/v1/invoke/flaky", content=b"!boom"), 502, "GuestTrap", "flaky")
    assert "unreachable" in body["message"]
    r = http.post("/v1/invoke/flaky", content=b"fine")
    error_of(r, 503, "CircuitOpen", "flaky")
    assert 25 <= int(r.headers["retry-after"]) <= 30
    samples = scrape(http)
    assert metric(samples, "wasmhive_breaker_state", function="flaky", version="1", state="OPEN") == 1
    assert metric(samples, "wasmhive_breaker_state", function="flaky", version="1", state="CLOSED") == 0
    assert metric(samples, "wasmhive_requests_total", function="flaky", version="1", outcome="CircuitOpen") == 1


def test_guest_timeout_is_504(http: httpx.Client) -> None:
    deploy(http, "spin", guests.INFINITE_LOOP, params={"timeout": "0.2"})
    started = time.monotonic()
    body = error_of(http.post("/v1/invoke/spin", content=b"x"), 504, "CallTimeout", "spin")
    assert time.monotonic() - started < REQUEST_TIMEOUT
    assert "timeout" in body["message"]


def test_request_timeout_is_504(http: httpx.Client) -> None:
    # The guest takes 8 s (asleep, no CPU) within its own timeout; the server answers after
    # server.request_timeout.
    deploy(http, "slow-long", sleeper(8000), params={"timeout": "20"})
    started = time.monotonic()
    body = error_of(http.post("/v1/invoke/slow-long", content=b"x"), 504, "RequestTimeout", "slow-long")
    elapsed = time.monotonic() - started
    assert REQUEST_TIMEOUT - 0.1 <= elapsed < REQUEST_TIMEOUT + 5, elapsed
    assert "request_timeout" in body["message"]


def test_guest_trap_is_502(http: httpx.Client) -> None:
    deploy(http, "trap", guests.TRAP)
    body = error_of(http.post("/v1/invoke/trap", content=b"x"), 502, "GuestTrap", "trap")
    assert "unreachable" in body["message"]
    deploy(http, "badreply", guests.BAD_REPLY)
    error_of(http.post("/v1/invoke/badreply", content=b"x"), 502, "AbiError", "badreply")


def test_guest_error_is_422(http: httpx.Client) -> None:
    deploy(http, "refuse", guests.FAIL_WITH_PAYLOAD)
    body = error_of(http.post("/v1/invoke/refuse", content=b"no thanks"), 422, "GuestError", "refuse")
    assert body["message"] == "no thanks"
    assert body["version"] == 1
    # A JavaScript exception is a GuestError too.
    deploy(http, "js-throw", "function handler() { throw new Error('nope'); }", content_type="application/javascript")
    body = error_of(http.post("/v1/invoke/js-throw"), 422, "GuestError", "js-throw")
    assert "nope" in body["message"]


# --- streaming ----------------------------------------------------------------------------


def test_chunks_arrive_while_the_call_runs(hive: Daemon, http: httpx.Client) -> None:
    deploy(http, "gate", STREAM_GATE, options={"instances": 2, "timeout": 10})
    with hive.client() as other:
        with http.stream("POST", "/v1/stream/gate", content=b"w", headers={"X-Request-Id": "gate-1"}) as r:
            assert r.status_code == 200
            assert r.headers["transfer-encoding"] == "chunked"
            assert r.headers["x-wasmhive-version"] == "1"
            parts = r.iter_raw()
            first = next(parts)
            first_at = time.monotonic()
            # The guest cannot finish before the gate opens: chunk 1 came from a call still running.
            assert first == b"first\n"
            assert not r.is_closed
            assert not any(x.get("request_id") == "gate-1" for x in hive.stderr_lines())  # not logged yet
            assert other.post("/v1/invoke/gate", content=b"g").content == b"set"
            rest = b"".join(parts)
            rest_at = time.monotonic()
        assert rest == b"second\ndone\n"
        assert first_at < rest_at
    line = hive.wait_for_log(lambda x: x.get("request_id") == "gate-1")
    assert (line["outcome"], line["status"]) == ("ok", 200)
    assert (line["bytes_in"], line["bytes_out"]) == (1, len(b"first\nsecond\ndone\n"))
    assert (line["function"], line["version"], type(line["actor"])) == ("gate", 1, int)


def test_invoke_of_a_streaming_guest_returns_every_chunk(http: httpx.Client) -> None:
    deploy(http, "lines", (EXAMPLES / "stream.wat").read_text())
    r = http.post("/v1/invoke/lines", content=b"a\nb\nc")
    assert (r.status_code, r.content) == (200, b"a\nb\nc")
    with http.stream("POST", "/v1/stream/lines", content=b"a\nb\nc") as s:
        assert list(s.iter_raw()) == [b"a\n", b"b\n", b"c"]


def test_sse_chunks_then_done(http: httpx.Client) -> None:
    deploy(http, "sse-lines", (EXAMPLES / "stream.wat").read_text())
    headers = {"Accept": "text/event-stream", "X-Request-Id": "sse-1"}
    for url in ("/v1/invoke/sse-lines", "/v1/stream/sse-lines"):
        r = http.post(url, content=b"alpha\nbeta", headers=headers)
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        events = sse_events(r.text)
        assert events[:2] == [("chunk", "alpha\n"), ("chunk", "beta")]
        assert events[2][0] == "done"
        assert json.loads(events[2][1]) == {"version": 1, "request_id": "sse-1"}
        assert len(events) == 3


def test_sse_arrives_incrementally(hive: Daemon, http: httpx.Client) -> None:
    deploy(http, "sse-gate", STREAM_GATE, options={"instances": 2, "timeout": 10})
    with hive.client() as other:
        headers = {"Accept": "text/event-stream"}
        with http.stream("POST", "/v1/invoke/sse-gate", content=b"w", headers=headers) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            assert [next(lines), next(lines), next(lines), next(lines)] == [
                "event: chunk",
                "data: first",
                "data: ",
                "",
            ]
            assert other.post("/v1/invoke/sse-gate", content=b"g").content == b"set"
            events = sse_events("\n".join(lines))
        assert [e for e, _ in events] == ["chunk", "chunk", "done"]
        assert [d for _, d in events[:2]] == ["second\n", "done\n"]


def test_sse_error_before_the_first_chunk(http: httpx.Client) -> None:
    deploy(http, "sse-refuse", guests.FAIL_WITH_PAYLOAD)
    r = http.post("/v1/invoke/sse-refuse", content=b"bad input", headers={"Accept": "text/event-stream"})
    # Nothing was sent yet: the status is the error's, the body still an event stream.
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("text/event-stream")
    [(event, data)] = sse_events(r.text)
    assert event == "error"
    body = json.loads(data)
    assert (body["error"], body["message"], body["function"]) == ("GuestError", "bad input", "sse-refuse")
    assert body["request_id"] == r.headers["x-request-id"]


def test_sse_error_after_the_first_chunk(http: httpx.Client) -> None:
    deploy(http, "sse-break", STREAM_GATE, options={"instances": 2})
    r = http.post("/v1/stream/sse-break", content=b"!", headers={"Accept": "text/event-stream"})
    assert r.status_code == 200  # sent with the first chunk
    events = sse_events(r.text)
    assert [e for e, _ in events] == ["chunk", "error"]
    assert events[0][1] == "first\n"
    body = json.loads(events[1][1])
    assert (body["error"], body["message"], body["function"], body["version"]) == (
        "GuestError",
        "broke",
        "sse-break",
        1,
    )


def test_failure_mid_stream_cuts_the_chunked_body(hive: Daemon, http: httpx.Client) -> None:
    deploy(http, "cut", STREAM_GATE, options={"instances": 2})
    received = []
    with pytest.raises(httpx.RemoteProtocolError):
        with http.stream("POST", "/v1/stream/cut", content=b"!", headers={"X-Request-Id": "cut-1"}) as r:
            assert r.status_code == 200
            for part in r.iter_raw():
                received.append(part)
    assert received == [b"first\n"]
    line = hive.wait_for_log(lambda x: x.get("request_id") == "cut-1")
    assert (line["outcome"], line["status"]) == ("GuestError", 422)
    # The daemon is fine, and so is the function.
    with hive.client() as fresh:
        assert fresh.post("/v1/invoke/cut", content=b"g").content == b"set"


def test_client_leaving_a_stream_ends_the_call(hive: Daemon, http: httpx.Client) -> None:
    """A client that goes away mid-stream: the call is cleaned up, nothing stays in flight."""
    deploy(http, "leave", STREAM_GATE, options={"instances": 2, "timeout": 10})
    for rid, payload in (("leave-early", b"l"), ("leave-mid", b"w")):
        with socket.create_connection(("127.0.0.1", hive.port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/stream/leave HTTP/1.1\r\nHost: hive\r\nContent-Length: 1\r\n"
                b"X-Request-Id: " + rid.encode() + b"\r\n\r\n" + payload
            )
            if payload == b"w":  # wait for the first chunk, then leave
                received = b""
                while b"first" not in received:
                    part = sock.recv(4096)
                    assert part, received
                    received += part
                assert received.startswith(b"HTTP/1.1 200")
        if payload == b"l":  # the guest is waiting for the gate: open it, the first chunk finds no one
            assert http.post("/v1/invoke/leave", content=b"g").content == b"set"
        line = hive.wait_for_log(lambda x, rid=rid: x.get("request_id") == rid)
        assert line["outcome"] == "ClientDisconnected"
        if payload == b"l":  # the guest now waits for the gate again: release it
            assert http.post("/v1/invoke/leave", content=b"g").content == b"set"
    samples = scrape(http)
    assert metric(samples, "wasmhive_in_flight_requests", function="leave") == 0
    assert metric(samples, "wasmhive_requests_total", function="leave", version="1", outcome="ClientDisconnected") == 2
    assert "Cancel scope stack corrupted" not in hive.stderr_text()
    assert "Traceback" not in hive.stderr_text()


# --- metrics ------------------------------------------------------------------------------


def test_metrics_move(http: httpx.Client) -> None:
    deploy(http, "metered", guests.ECHO, params={"instances": "2"})
    assert http.post("/v1/invoke/metered", content=b"warm").status_code == 200
    before = scrape(http)
    for _ in range(5):
        assert http.post("/v1/invoke/metered", content=b"x").status_code == 200
    deploy(http, "metered-trap", guests.TRAP)
    error_of(http.post("/v1/invoke/metered-trap"), 502, "GuestTrap")
    error_of(http.post("/v1/invoke/metered-unknown"), 404, "UnknownFunction")
    after = scrape(http)

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    fn = {"function": "metered", "version": "1"}
    assert delta("wasmhive_requests_total", outcome="ok", **fn) == 5
    assert delta("wasmhive_request_duration_seconds_count", **fn) == 5
    assert delta("wasmhive_request_duration_seconds_sum", **fn) > 0
    assert delta("wasmhive_calls_total", **fn) == 5
    assert metric(after, "wasmhive_pool_size", **fn) == 2
    assert metric(after, "wasmhive_instances", **fn) == 2
    assert metric(after, "wasmhive_mailbox_depth", **fn) == 0
    assert metric(after, "wasmhive_requests_total", function="metered-trap", version="1", outcome="GuestTrap") == 1
    assert metric(after, "wasmhive_crashes_total", function="metered-trap", version="1") == 1
    # Unknown names share one label, so clients cannot add series; nothing stays in flight.
    assert delta("wasmhive_requests_total", function="_unresolved", version="", outcome="UnknownFunction") == 1
    assert not any(dict(labels).get("function") == "metered-unknown" for _, labels in after)
    in_flight = {
        dict(labels)["function"]: v for (name, labels), v in after.items() if name == "wasmhive_in_flight_requests"
    }
    assert in_flight and all(v == 0 for v in in_flight.values()), in_flight

    # A module no one compiled before is a miss; the same module again is a hit.
    fresh = reply_with(f"m{time.time_ns()}")
    deploy(http, "metered-new", fresh)
    deploy(http, "metered-new", fresh, params={"timeout": "2"})
    compiled = scrape(http)
    assert (
        metric(compiled, "wasmhive_compile_cache_misses_total") - metric(after, "wasmhive_compile_cache_misses_total")
        == 1
    )
    hits = metric(compiled, "wasmhive_compile_cache_hits_total", tier="memory") - metric(
        after, "wasmhive_compile_cache_hits_total", tier="memory"
    )
    assert hits == 1
    assert ("wasmhive_compile_cache_hits_total", frozenset({("tier", "disk")})) in compiled


# --- request ids and the access log -------------------------------------------------------


def test_request_id_comes_back_and_is_logged(hive: Daemon, http: httpx.Client) -> None:
    deploy(http, "traced", guests.ECHO)
    r = http.post("/v1/invoke/traced", content=b"abc", headers={"X-Request-Id": "trace-abc.123:x"})
    assert r.headers["x-request-id"] == "trace-abc.123:x"
    line = hive.wait_for_log(lambda x: x.get("request_id") == "trace-abc.123:x")
    assert line["function"] == "traced"
    assert line["version"] == 1
    assert isinstance(line["actor"], int)
    assert line["outcome"] == "ok"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert (line["bytes_in"], line["bytes_out"]) == (3, 3)

    # Errors are logged with their kind; the id is in the error body too.
    r = http.post("/v1/invoke/traced@7", headers={"X-Request-Id": "trace-404"})
    assert error_of(r, 404, "UnknownFunction")["request_id"] == "trace-404"
    line = hive.wait_for_log(lambda x: x.get("request_id") == "trace-404")
    assert (line["function"], line["version"], line["outcome"], line["status"]) == (
        "traced",
        None,
        "UnknownFunction",
        404,
    )

    # Without one (or with one that is not a plain token) the daemon makes one up.
    generated = {http.post("/v1/invoke/traced").headers["x-request-id"] for _ in range(3)}
    assert len(generated) == 3
    r = http.post("/v1/invoke/traced", headers={"X-Request-Id": "bad id\twith spaces"})
    assert r.headers["x-request-id"] != "bad id\twith spaces"
    hive.wait_for_log(lambda x: x.get("request_id") == r.headers["x-request-id"])


# --- isolation ------------------------------------------------------------------------------


def test_guests_see_no_environment_and_no_token(hive: Daemon, http: httpx.Client) -> None:
    assert hive.env[PROBE] and hive.env["WASMHIVE_ADMIN_TOKEN"] == TOKEN  # the daemon has both

    deploy(http, "env-cmd", WASI_ENVIRON)
    r = http.post("/v1/invoke/env-cmd")
    assert r.status_code == 200, r.text
    environ, _, args = r.content.partition(b"--\n")
    assert environ == b""
    assert args.split(b"\0")[0] == b"env-cmd.1"  # only the program name
    assert TOKEN.encode() not in r.content

    js = """function handler() {
      const get = (name) => std.getenv(name) ?? null;
      return JSON.stringify({env: std.getenviron(), token: get('WASMHIVE_ADMIN_TOKEN'), probe: get('PROBE'),
                             home: get('HOME'), file: std.loadFile('/proc/self/environ')});
    }""".replace("PROBE", PROBE)
    deploy(http, "env-js", js, content_type="application/javascript")
    r = http.post("/v1/invoke/env-js")
    assert r.status_code == 200, r.text
    assert r.json() == {"env": {}, "token": None, "probe": None, "home": None, "file": None}

    # An ABI v1 guest that imports WASI gets an empty environment too.
    reactor = guests.module(
        """(drop (call $sizes (i32.const 8) (i32.const 12)))
           (call $pack (i32.const 8) (i32.const 8))""",
        imports='(import "wasi_snapshot_preview1" "environ_sizes_get" (func $sizes (param i32 i32) (result i32)))',
    )
    deploy(http, "env-reactor", reactor)
    assert http.post("/v1/invoke/env-reactor").content == b"\0" * 8  # 0 variables, 0 bytes
