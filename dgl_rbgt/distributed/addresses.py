"""This machine's IPv4 addresses, as DistDGL sees them (it finds a host's partition by address)."""
from __future__ import annotations

import ipaddress
import socket

import psutil

__all__ = ["local_ipv4_addresses", "interface_of", "is_local_address"]


def _ipv4_by_interface() -> dict[str, list[str]]:
    return {name: [a.address for a in addrs if a.family == socket.AF_INET]
            for name, addrs in psutil.net_if_addrs().items()}


def local_ipv4_addresses() -> set[str]:
    """IPv4 addresses of this machine's interfaces, plus 127.0.0.1."""
    return {"127.0.0.1", *(a for addrs in _ipv4_by_interface().values() for a in addrs)}


def interface_of(address: str) -> str | None:
    """The name of the interface that holds ``address`` here (for GLOO/NCCL_SOCKET_IFNAME)."""
    return next((name for name, addrs in _ipv4_by_interface().items() if address in addrs), None)


def is_local_address(address: str) -> bool:
    """Whether ``address`` is this machine (loopback, or held by one of its interfaces)."""
    return ipaddress.ip_address(address).is_loopback or address in local_ipv4_addresses()
