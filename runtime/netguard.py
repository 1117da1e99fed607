"""Which addresses a guest's ``http.fetch`` may reach.

Safe by default: the host resolves the name itself and refuses loopback,
private, link-local (169.254.0.0/16, where cloud metadata lives), multicast,
unspecified and reserved addresses, in IPv4 and IPv6, including IPv4-mapped
and IPv4-compatible IPv6 forms, unless the deployment allow-lists the host
name or a network.  Every address a name resolves to must pass (a name that
resolves to one public and one private address is refused), and the request
then goes to the checked address itself, so a second DNS answer cannot
swap it (DNS rebinding).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Sequence

import anyio

__all__ = ["AddressRefused", "check_address", "resolve_checked"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class AddressRefused(Exception):
    """The destination is not allowed; the message says why."""


def _embedded_ipv4(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        packed = address.packed
        if packed[:12] == bytes(12) and int.from_bytes(packed[12:], "big") > 1:  # IPv4-compatible ::a.b.c.d
            return ipaddress.IPv4Address(packed[12:])
    return address


def check_address(address: IPAddress, allow_networks: Sequence[IPNetwork] = ()) -> None:
    """Raise :class:`AddressRefused` unless ``address`` is public or allow-listed."""
    if any(address in network for network in allow_networks if network.version == address.version):
        return
    inner = _embedded_ipv4(address)
    if inner is not address and any(inner in n for n in allow_networks if n.version == inner.version):
        return
    for candidate in (inner, address):  # an embedded IPv4 address names the real destination
        kind = None
        if candidate.is_loopback:
            kind = "loopback"
        elif candidate.is_link_local:
            kind = "link-local"
        elif candidate.is_multicast:
            kind = "multicast"
        elif candidate.is_unspecified:
            kind = "unspecified"
        elif candidate.is_private:
            kind = "private"
        elif candidate.is_reserved or not candidate.is_global:
            kind = "reserved"
        if kind is not None:
            raise AddressRefused(f"{address} is a {kind} address; allow-list it to fetch from it")


async def resolve_checked(
    host: str, port: int, *, allow_hosts: Sequence[str] = (), allow_networks: Sequence[IPNetwork] = ()
) -> IPAddress:
    """Resolve ``host`` and check every address; return the one to connect to."""
    try:
        literal: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        if host.lower() not in allow_hosts:
            check_address(literal, allow_networks)
        return literal
    try:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise AddressRefused(f"cannot resolve {host!r}: {exc}") from None
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        addresses.append(ipaddress.ip_address(str(sockaddr[0]).split("%")[0]))
    if not addresses:
        raise AddressRefused(f"{host!r} resolves to no address")
    if host.lower() not in allow_hosts:
        for address in addresses:
            check_address(address, allow_networks)
    return addresses[0]
