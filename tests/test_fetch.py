"""``http.fetch``: safe by default, allow-lists, limits, relay, and the capability model."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import guests
import msgspec
import pytest

from wasmhive.runtime import FetchPolicy, InvalidConfig, Runtime, RuntimeConfig

pytestmark = pytest.mark.trio

LOCAL = FetchPolicy(allow_networks=("127.0.0.0/8",))


class Handler(BaseHTTPRequestHandler):
    requests = 0  # requests served, over the module
    release = threading.Event()
    released_by_reader = False
    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        if self.path == "/hello":
            self._send(200, b"hello " + self.headers.get("Host", "").encode())
        elif self.path == "/big":
            self._send(200, b"x" * 200_000)
        elif self.path in ("/redirect", "/redirect-to-metadata"):
            self.send_response(302)
            location = "/hello" if self.path == "/redirect" else "http://169.254.169.254/latest/meta-data/"
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/slow":
            time.sleep(1.0)
            self._send(200, b"late")
        elif self.path == "/held":
            # First part, then wait until the test has received it, then the rest.
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"5\r\nfirst\r\n")
            self.wfile.flush()
            Handler.released_by_reader = Handler.release.wait(5.0)
            self.wfile.write(b"4\r\nrest\r\n0\r\n\r\n")
        elif self.path == "/stream":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (b"one ", b"two ", b"three"):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.flush()
                time.sleep(0.05)
            self.wfile.write(b"0\r\n\r\n")
        else:
            self._send(404, b"no")
        Handler.requests += 1

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self._send(201, body[::-1])

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a fetch that stops reading (size cap, timeout) breaks the pipe: expected here


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = QuietServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


async def fetch(rt: Runtime, function: str, **request: Any) -> dict[str, Any]:
    reply = await rt.invoke(function, msgspec.msgpack.encode({"op": "http.fetch", **request}))
    return msgspec.msgpack.decode(reply)  # type: ignore[no-any-return]


async def test_loopback_is_refused_by_default(rt: Runtime, server: str) -> None:
    await rt.deploy("f", guests.HOST_PROXY.encode(), fetch=FetchPolicy())
    for url in (f"http://{server}/hello", "http://localhost:1/", "http://[::1]:1/", "http://[::ffff:127.0.0.1]:1/"):
        result = await fetch(rt, "f", url=url)
        assert result["ok"] is False, url
        assert result["error"]["code"] == "fetch_refused", result
        assert "loopback" in result["error"]["message"]


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://10.1.2.3/", "private"),
        ("http://192.168.0.1/", "private"),
        ("http://0.0.0.0:80/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[::ffff:169.254.169.254]/", "link-local"),
        ("http://[::ffff:10.0.0.1]/", "private"),
    ],
)
async def test_internal_addresses_are_refused_before_any_connection(rt: Runtime, url: str, kind: str) -> None:
    await rt.deploy("f", guests.HOST_PROXY.encode(), fetch=FetchPolicy())
    result = await fetch(rt, "f", url=url)
    assert result["error"]["code"] == "fetch_refused"
    assert kind in result["error"]["message"]


async def test_allow_listed_network_is_fetched_with_the_original_host(rt: Runtime, server: str) -> None:
    await rt.deploy("f", guests.HOST_PROXY.encode(), fetch=LOCAL)
    result = await fetch(rt, "f", url=f"http://{server}/hello")
    assert result["ok"] is True
    assert result["value"]["status"] == 200
    assert result["value"]["body"] == b"hello " + server.encode()
    posted = await fetch(rt, "f", url=f"http://{server}/echo", method="POST", body=b"abc")
    assert (posted["value"]["status"], posted["value"]["body"]) == (201, b"cba")


async def test_allow_listed_host_name(rt: Runtime, server: str) -> None:
    port = server.rsplit(":", 1)[1]
    await rt.deploy("f", guests.HOST_PROXY.encode(), fetch=FetchPolicy(allow_hosts=("localhost",)))
    result = await fetch(rt, "f", url=f"http://localhost:{port}/hello")
    assert result["value"]["status"] == 200


async def test_redirects_are_not_followed(rt: Runtime, server: str) -> None:
    await rt.deploy("f", guests.HOST_PROXY.encode(), fetch=LOCAL)
    result = await fetch(rt, "f", url=f"http://{server}/redirect")
    assert result["value"]["status"] == 302
    assert result["value"]["headers"]["location"] == "/hello"


async def test_response_size_cap_and_timeouts(rt: Runtime, server: str) -> None:
    await rt.deploy("small", guests.HOST_PROXY.encode(), fetch=FetchPolicy(
        allow_networks=("127.0.0.0/8",), max_response_bytes=1000))
    result = await fetch(rt, "small", url=f"http://{server}/big")
    assert result["error"]["code"] == "fetch_too_large"
    await rt.deploy("impatient", guests.HOST_PROXY.encode(), fetch=FetchPolicy(
        allow_networks=("127.0.0.0/8",), read_timeout=0.1))
    result = await fetch(rt, "impatient", url=f"http://{server}/slow")
    assert result["error"]["code"] == "fetch_timeout"
    # The actor survived both: it serves the next request.
    result = await fetch(rt, "impatient", url=f"http://{server}/hello")
    assert result["value"]["status"] == 200


async def test_relay_streams_the_upstream_body_to_the_caller(rt: Runtime, server: str) -> None:
    await rt.deploy("f", guests.HOST_PROXY.encode(), fetch=LOCAL)
    request = msgspec.msgpack.encode({"op": "http.fetch", "url": f"http://{server}/stream", "relay": True})
    chunks = [chunk async for chunk in rt.stream("f", request)]
    *relayed, reply = chunks
    assert b"".join(relayed) == b"one two three"
    result = msgspec.msgpack.decode(reply)
    assert result["value"]["status"] == 200 and result["value"]["body"] == b""


async def test_fetch_needs_a_grant_and_thread_mode(rt: Runtime, server: str) -> None:
    await rt.deploy("nogrant", guests.HOST_PROXY.encode())
    result = await fetch(rt, "nogrant", url=f"http://{server}/hello")
    assert result["error"]["code"] == "not_granted"
    with pytest.raises(InvalidConfig, match="thread"):
        await rt.deploy("inline", guests.HOST_PROXY.encode(), mode="inline", fetch=LOCAL)


async def test_bad_urls_are_bad_requests(rt: Runtime) -> None:
    await rt.deploy("f", guests.HOST_PROXY.encode(), fetch=LOCAL)
    for url in ("ftp://example.com/", "not a url", "/relative"):
        result = await fetch(rt, "f", url=url)
        assert result["error"]["code"] == "bad_request", url


async def test_fetch_works_under_asyncio_too(config: RuntimeConfig, server: str) -> None:
    import anyio

    async def main() -> int:
        async with Runtime(config) as rt:
            await rt.deploy("f", guests.HOST_PROXY.encode(), fetch=LOCAL)
            return int((await fetch(rt, "f", url=f"http://{server}/hello"))["value"]["status"])

    assert await anyio.to_thread.run_sync(lambda: anyio.run(main, backend="asyncio")) == 200


async def test_a_redirect_cannot_lead_to_a_forbidden_address(rt: Runtime, server: str) -> None:
    await rt.deploy("f", guests.HOST_PROXY.encode(), fetch=LOCAL)
    result = await fetch(rt, "f", url=f"http://{server}/redirect-to-metadata")
    assert result["value"]["status"] == 302  # not followed by the host
    location = result["value"]["headers"]["location"]
    followed = await fetch(rt, "f", url=location)  # following it is a new fetch, checked again
    assert followed["error"]["code"] == "fetch_refused"


async def test_dns_rebinding_cannot_swap_the_checked_address(
    rt: Runtime, server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name is checked once and the request goes to the checked address.

    "rebind.test" first resolves to 127.0.0.2 (allow-listed, nothing listens
    there), then to 127.0.0.1, where the test server is.  A fetcher that
    resolved the name again to connect would reach the server.
    """
    import socket

    answers = iter(["127.0.0.2"] + ["127.0.0.1"] * 10)
    real_getaddrinfo = socket.getaddrinfo

    def rebinding_getaddrinfo(host: Any, port: Any, *args: Any, **kw: Any) -> list[Any]:
        if host not in ("rebind.test", b"rebind.test"):
            return real_getaddrinfo(host, port, *args, **kw)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), int(port)))]

    # Every resolver in the process (ours, trio's, asyncio's, httpx's) ends here.
    monkeypatch.setattr(socket, "getaddrinfo", rebinding_getaddrinfo)
    port = int(server.rsplit(":", 1)[1])
    await rt.deploy("f", guests.HOST_PROXY.encode(), fetch=FetchPolicy(allow_networks=("127.0.0.2/32",)))
    served_before = Handler.requests
    result = await fetch(rt, "f", url=f"http://rebind.test:{port}/hello")
    assert result["ok"] is False and result["error"]["code"] == "fetch_failed", result
    assert Handler.requests == served_before  # the server on 127.0.0.1 was never reached


async def test_relayed_chunks_reach_the_caller_before_the_upstream_finishes(rt: Runtime, server: str) -> None:
    await rt.deploy("f", guests.HOST_PROXY.encode(), fetch=LOCAL)
    request = msgspec.msgpack.encode({"op": "http.fetch", "url": f"http://{server}/held", "relay": True})
    Handler.release.clear()
    chunks = []
    async for chunk in rt.stream("f", request):
        chunks.append(chunk)
        if chunk == b"first":
            Handler.release.set()  # only now may the upstream send the rest
    assert Handler.released_by_reader  # the server was still holding the rest when "first" arrived
    assert b"".join(chunks[:-1]) == b"firstrest"
