"""Who a client is, as mitmproxy reports it: for the endpoints' fence and the client label."""

from __future__ import annotations

import ipaddress

from mitmproxy import connection

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def client_address(peername: connection.Address | None) -> Address | None:
    """The client's IP address; an IPv4-mapped IPv6 one (a dual-stack listener's view of an
    IPv4 client) as the IPv4 address it is."""
    if not peername:
        return None
    try:
        address = ipaddress.ip_address(peername[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address
