"""Which clients the proxy's own endpoints answer: the counter_allow_from option.

Like nginx's `allow` in front of stub_status: the endpoints tell anyone who asks how busy the
proxy is, and a counting proxy on a public port needs a fence. Proxied paths are never fenced.
"""

from __future__ import annotations

import ipaddress
import logging

from mitmproxy import connection
from mitmproxy.addonmanager import Loader

from counting_addon.clients import client_address
from counting_addon.options import parsed

logger = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_allow_from(value: str) -> tuple[Network, ...]:
    """Comma-separated IPv4/IPv6 addresses and CIDR networks, spaces allowed around each.

    Blank: no networks, which means any client. An empty entry ("a,,b") or a network with host
    bits set ("10.0.0.1/8") is refused rather than guessed at: this is a fence.
    """
    if not value.strip():
        return ()
    networks = []
    for entry in value.split(","):
        entry = entry.strip()
        if not entry:
            raise ValueError(f"{value!r} has an empty entry")
        try:
            networks.append(ipaddress.ip_network(entry))
        except ValueError as e:
            raise ValueError(f"{entry!r} is not an IP address or CIDR network: {e}") from None
    return tuple(networks)


class AccessControl:
    def __init__(self) -> None:
        self.networks: tuple[Network, ...] = ()

    def load(self, loader: Loader) -> None:
        loader.add_option(
            "counter_allow_from",
            str,
            "",
            "Clients allowed to ask the proxy's own endpoints (/status, /metrics): "
            "comma-separated IPv4 and IPv6 addresses and CIDR networks, such as "
            "127.0.0.1,10.0.0.0/8,::1. Others get 403 there; every other path is proxied for "
            "everyone. Empty: any client.",
        )

    def configure(self, updated: set[str]) -> None:
        """Called by the endpoints' configure (rules.py), which reports a bad value."""
        if "counter_allow_from" not in updated:
            return
        networks = parsed("counter_allow_from", parse_allow_from)
        if networks != self.networks:
            allowed = ", ".join(map(str, networks)) or "any client"
            logger.info(f"counting_addon: the proxy's own endpoints answer {allowed}")
        self.networks = networks

    def allows(self, peername: connection.Address | None) -> bool:
        if not self.networks:
            return True
        address = client_address(peername)
        return address is not None and any(address in network for network in self.networks)
