"""``http.fetch`` for guests: one shared httpx client, safe destinations, hard limits.

The guest's actor thread is parked while the event loop does the I/O (the
"host blocking" model): :meth:`HttpFetcher.fetch` is called on the actor
thread and runs the request on the loop through the runtime's bridge.
"""

from __future__ import annotations

import ipaddress
import ssl
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import httpx
import msgspec

from wasmhive.actors.abi import HttpFetchRequest
from wasmhive.actors.bridge import LoopBridge
from wasmhive.actors.errors import InvalidConfig
from wasmhive.actors.host import HostCallError

from .netguard import AddressRefused, IPNetwork, resolve_checked

__all__ = ["FetchPolicy", "HttpClients", "HttpFetcher"]

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class FetchPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a deployment's ``http.fetch`` may do.  Giving one grants network access."""

    #: Host names allowed even if they resolve to private or loopback addresses.
    allow_hosts: tuple[str, ...] = ()
    #: Networks (CIDR) allowed even if private, loopback, link-local, ...
    allow_networks: tuple[str, ...] = ()
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    #: Whole request, also bounded by the guest call's own deadline.
    total_timeout: float = 60.0
    max_response_bytes: int = 10 * 1024 * 1024
    max_request_bytes: int = 10 * 1024 * 1024

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "read_timeout", "total_timeout"):
            if not getattr(self, name) > 0:
                raise InvalidConfig(f"fetch {name} must be > 0")
        if self.max_response_bytes < 0 or self.max_request_bytes < 0:
            raise InvalidConfig("fetch max_response_bytes and max_request_bytes must be >= 0")
        for cidr in self.allow_networks:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise InvalidConfig(f"fetch allow_networks: {cidr!r} is not a network (CIDR)") from None

    def networks(self) -> tuple[IPNetwork, ...]:
        return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in self.allow_networks)


class HttpClients:
    """The runtime's HTTP clients: connection pooling without mixing up TLS hosts.

    Requests go to the checked IP address, so the URL's host is an address.
    Plain HTTP shares one client.  HTTPS gets one client per host name: a
    pooled TLS connection (verified for one name) is then never reused for
    another name that resolves to the same address.
    """

    def __init__(self, max_tls_hosts: int = 64) -> None:
        self._tls_context = ssl.create_default_context()  # shared: making one per client is slow
        self._plain = self._new()
        self._tls: dict[str, httpx.AsyncClient] = {}
        self._retired: list[httpx.AsyncClient] = []
        self._max_tls_hosts = max_tls_hosts

    def _new(self) -> httpx.AsyncClient:
        # No proxies from the environment: requests go to the address we checked.
        return httpx.AsyncClient(trust_env=False, follow_redirects=False, verify=self._tls_context)

    def for_url(self, scheme: str, host: str) -> httpx.AsyncClient:
        if scheme != "https":
            return self._plain
        client = self._tls.pop(host, None) or self._new()
        self._tls[host] = client  # most recently used last
        if len(self._tls) > self._max_tls_hosts:
            oldest = next(iter(self._tls))
            self._retired.append(self._tls.pop(oldest))  # closed at aclose (requests may be in flight)
        return client

    async def aclose(self) -> None:
        for client in [self._plain, *self._tls.values(), *self._retired]:
            await client.aclose()


class HttpFetcher:
    """Runs guests' fetches for one deployment on the runtime's shared clients."""

    def __init__(self, policy: FetchPolicy, clients: HttpClients, bridge: LoopBridge) -> None:
        self.policy = policy
        self._clients = clients
        self._bridge = bridge
        self._networks = policy.networks()
        self._hosts = tuple(h.lower() for h in policy.allow_hosts)

    def fetch(self, request: HttpFetchRequest, emit: Callable[[bytes], None], deadline: float) -> dict[str, Any]:
        """On the actor thread: do the request on the loop and wait.  Raises HostCallError."""
        budget = min(self.policy.total_timeout, deadline - time.monotonic())
        if budget <= 0:
            raise HostCallError("fetch_timeout", "no time left in this call for a fetch")
        return self._bridge.run_blocking(self._fetch, request, emit, budget)  # type: ignore[no-any-return]

    async def _fetch(
        self, request: HttpFetchRequest, emit: Callable[[bytes], None], budget: float
    ) -> dict[str, Any]:
        policy = self.policy
        method = request.method.upper()
        if method not in _METHODS:
            raise HostCallError("bad_request", f"unsupported method {request.method!r}")
        if len(request.body) > policy.max_request_bytes:
            raise HostCallError("fetch_too_large", f"request body over {policy.max_request_bytes} bytes")
        parts = urlsplit(request.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HostCallError("bad_request", f"only absolute http(s) URLs can be fetched, not {request.url!r}")
        host = parts.hostname
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with anyio.move_on_after(budget) as scope:
            try:
                address = await resolve_checked(host, port, allow_hosts=self._hosts, allow_networks=self._networks)
            except AddressRefused as exc:
                raise HostCallError("fetch_refused", str(exc)) from None
            netloc = f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"
            target = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
            headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
            headers["Host"] = parts.netloc.rsplit("@", 1)[-1]
            timeout = httpx.Timeout(policy.read_timeout, connect=policy.connect_timeout)
            try:
                client = self._clients.for_url(parts.scheme, host.lower())
                req = client.build_request(
                    method,
                    target,
                    headers=headers,
                    content=request.body or None,
                    timeout=timeout,
                    extensions={"sni_hostname": host},
                )
                response = await client.send(req, stream=True, follow_redirects=False)
                try:
                    body = await self._read(response, emit if request.relay else None)
                finally:
                    await response.aclose()
            except httpx.TimeoutException as exc:
                raise HostCallError("fetch_timeout", f"{type(exc).__name__} fetching {request.url}") from None
            except httpx.HTTPError as exc:
                raise HostCallError("fetch_failed", f"{type(exc).__name__}: {exc}") from None
            return {"status": response.status_code, "headers": dict(response.headers), "body": body}
        assert scope.cancel_called
        raise HostCallError("fetch_timeout", f"fetching {request.url} took longer than {budget:.3g}s")

    async def _read(self, response: httpx.Response, relay: Callable[[bytes], None] | None) -> bytes:
        limit = self.policy.max_response_bytes
        chunks: list[bytes] = []
        received = 0
        async for chunk in response.aiter_bytes():
            received += len(chunk)
            if received > limit:
                raise HostCallError("fetch_too_large", f"response body over max_response_bytes={limit}")
            if relay is not None:
                relay(chunk)
            else:
                chunks.append(chunk)
        return b"".join(chunks)
