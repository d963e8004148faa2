"""Where a request comes from: the client's address, behind trusted proxies or not."""

from __future__ import annotations

import ipaddress
from typing import Any

from sanic import Request


def client_ip(request: Request, trusted: tuple[Any, ...]) -> str:
    """The client's address: the peer, or X-Forwarded-For's last untrusted hop behind a proxy."""
    peer: str = request.ip
    if not trusted or not _is_trusted(peer, trusted):
        return peer
    forwarded: str | None = request.headers.get("x-forwarded-for")
    if not forwarded:
        return peer
    hops = [hop.strip() for hop in forwarded.split(",")]
    for hop in reversed(hops):
        if not _is_trusted(hop, trusted):
            return hop
    return hops[0] or peer


def _is_trusted(address: str, trusted: tuple[Any, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def address_key(address: str) -> str:
    """`ip:<address>`, an IPv6 address by its /64.

    A client commonly holds a whole IPv6 /64 (one customer's network), so counting its
    addresses apart would give it 2^64 fresh counts; IPv4 and IPv4-mapped addresses count
    alone (`test_an_ipv6_client_is_counted_by_its_slash_64`).
    """
    if ":" not in address:
        return f"ip:{address}"
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return f"ip:{address}"
    if ip.ipv4_mapped is not None:
        return f"ip:{ip.ipv4_mapped}"
    return f"ip:{ipaddress.IPv6Network((ip, 64), strict=False)}"
