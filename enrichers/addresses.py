"""Reading a source IP and telling what kind of address it is."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# The documentation ranges (RFC 5737, RFC 3849). Python 3.11 counts them as
# private; we call them reserved, or look them up when a demo uses them as
# stand-ins for public networks.
DOCUMENTATION_NETWORKS = tuple(
    ipaddress.ip_network(cidr)
    for cidr in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598 carrier-grade NAT


@lru_cache(maxsize=65536)
def parse_ip(text: str) -> IPAddress | None:
    """The address in a source field, or ``None`` if there is none.

    Takes the first of a comma-separated list (a forwarded-for chain) and
    unwraps IPv4-mapped IPv6 addresses, so ``::ffff:10.0.0.1`` is ``10.0.0.1``.
    """
    first = text.split(",", 1)[0].strip()
    if first.startswith("[") and "]" in first:
        first = first[1 : first.index("]")]
    try:
        address = ipaddress.ip_address(first)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


def is_documentation(address: IPAddress) -> bool:
    """Whether ``address`` is in a documentation (TEST-NET) range."""
    return any(address in network for network in DOCUMENTATION_NETWORKS)


def scope_of(address: IPAddress) -> str:
    """``public`` or the reason an address is not looked up.

    One of: unspecified, loopback, link_local, multicast, shared, private,
    reserved, public. Documentation ranges are ``reserved``.
    """
    if address.is_unspecified:
        return "unspecified"
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link_local"
    if address.is_multicast:
        return "multicast"
    if address.version == 4 and address in _SHARED:
        return "shared"
    if is_documentation(address) or address.is_reserved:
        return "reserved"
    if address.is_private:
        return "private"
    if not address.is_global:
        return "reserved"
    return "public"
