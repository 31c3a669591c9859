"""A small writer of MaxMind DB (``.mmdb``) files, for tests and the demo.

It writes what the ``maxminddb`` reader needs and nothing more: an IPv6 search
tree with 32-bit records (IPv4 networks sit under ``::/96``, where the reader
looks for them), a data section without pointers (identical records are stored
once), and the metadata map after the ``\\xab\\xcd\\xefMaxMind.com`` marker.
Layout as in the published MaxMind DB format specification, version 2.0.

Production data comes from MaxMind's own files; this writer exists so that
tests and the demo can build a database of known content at run time.
"""

from __future__ import annotations

import ipaddress
import struct
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

METADATA_MARKER = b"\xab\xcd\xefMaxMind.com"
_RECORD_SIZE = 32
_DATA_SEPARATOR = b"\x00" * 16
_IPV4_IN_IPV6_BITS = 96

# Data section type numbers from the specification.
_POINTER, _UTF8, _DOUBLE, _BYTES, _UINT16, _UINT32, _MAP = 1, 2, 3, 4, 5, 6, 7
_INT32, _UINT64, _UINT128, _ARRAY, _BOOLEAN = 8, 9, 10, 11, 14


class NetworkSiteLike(Protocol):
    """What ``write_city_asn_mmdbs`` reads from each site (read-only attributes)."""

    @property
    def cidr(self) -> str: ...

    @property
    def country_iso(self) -> str: ...

    @property
    def country_name(self) -> str: ...

    @property
    def city(self) -> str: ...

    @property
    def latitude(self) -> float: ...

    @property
    def longitude(self) -> float: ...

    @property
    def asn(self) -> int: ...

    @property
    def as_org(self) -> str: ...


def write_city_asn_mmdbs(
    sites: Iterable[NetworkSiteLike], city_path: Path, asn_path: Path
) -> None:
    """Write a GeoIP2-City-shaped and a GeoLite2-ASN-shaped database of ``sites``."""
    city: list[tuple[str, Mapping[str, Any]]] = []
    asn: list[tuple[str, Mapping[str, Any]]] = []
    for site in sites:
        city.append((site.cidr, city_record(site)))
        asn.append(
            (
                site.cidr,
                {
                    "autonomous_system_number": int(site.asn),
                    "autonomous_system_organization": site.as_org,
                },
            )
        )

    write_mmdb(Path(city_path), city, database_type="GeoIP2-City")
    write_mmdb(Path(asn_path), asn, database_type="GeoLite2-ASN")


def city_record(site: NetworkSiteLike) -> dict[str, Any]:
    """The record a GeoIP2 City database holds for one site."""
    return {
        "city": {"names": {"en": site.city}},
        "country": {"iso_code": site.country_iso, "names": {"en": site.country_name}},
        "location": {
            "latitude": float(site.latitude),
            "longitude": float(site.longitude),
        },
    }


def write_mmdb(
    path: Path,
    networks: Iterable[tuple[str, Mapping[str, Any]]],
    *,
    database_type: str,
    description: str = "bbaudit test database",
) -> None:
    """Write ``networks`` (CIDR, record) to ``path``; more specific networks win."""
    parsed = [(_as_ipv6_network(cidr), record) for cidr, record in networks]
    parsed.sort(key=lambda item: item[0].prefixlen)

    data = _DataSection()
    root = _Node()
    for network, record in parsed:
        _insert(root, network, data.add(record))

    tree, node_count = _encode_tree(root)
    metadata = {
        "node_count": _Typed(_UINT32, node_count),
        "record_size": _Typed(_UINT16, _RECORD_SIZE),
        "ip_version": _Typed(_UINT16, 6),
        "database_type": database_type,
        "languages": ["en"],
        "binary_format_major_version": _Typed(_UINT16, 2),
        "binary_format_minor_version": _Typed(_UINT16, 0),
        "build_epoch": _Typed(_UINT64, int(time.time())),
        "description": {"en": description},
    }
    body = tree + _DATA_SEPARATOR + bytes(data.buffer)
    path.write_bytes(body + METADATA_MARKER + encode(metadata))


class _Typed:
    """A value with an explicit wire type (metadata needs unsigned widths)."""

    __slots__ = ("type", "value")

    def __init__(self, type_: int, value: int) -> None:
        self.type = type_
        self.value = value


class _Node:
    __slots__ = ("children",)

    def __init__(self) -> None:
        # Each child is None (no data), a _Node, or an int data offset.
        self.children: list[_Node | int | None] = [None, None]


class _DataSection:
    """Encoded records; an identical record is stored once."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self._offsets: dict[bytes, int] = {}

    def add(self, record: Mapping[str, Any]) -> int:
        encoded = encode(record)
        offset = self._offsets.get(encoded)
        if offset is None:
            offset = len(self.buffer)
            self.buffer += encoded
            self._offsets[encoded] = offset
        return offset


def _as_ipv6_network(cidr: str) -> ipaddress.IPv6Network:
    network = ipaddress.ip_network(cidr, strict=False)
    if isinstance(network, ipaddress.IPv6Network):
        return network
    mapped = int(network.network_address)
    prefix = _IPV4_IN_IPV6_BITS + network.prefixlen
    return ipaddress.IPv6Network((mapped, prefix))


def _insert(root: _Node, network: ipaddress.IPv6Network, offset: int) -> None:
    """Point every address of ``network`` at ``offset``; the root stays a node."""
    if network.prefixlen == 0:
        raise ValueError("a network of prefix length 0 cannot be stored")
    bits = int(network.network_address)
    node = root
    for depth in range(network.prefixlen - 1):
        bit = (bits >> (127 - depth)) & 1
        child = node.children[bit]
        if not isinstance(child, _Node):
            # Split a less specific network so the new one can sit inside it.
            split = _Node()
            split.children = [child, child]
            node.children[bit] = split
            child = split
        node = child
    node.children[(bits >> (128 - network.prefixlen)) & 1] = offset


def _encode_tree(root: _Node) -> tuple[bytes, int]:
    order: list[_Node] = [root]
    index = {id(root): 0}
    for node in order:
        for child in node.children:
            if isinstance(child, _Node):
                index[id(child)] = len(order)
                order.append(child)

    count = len(order)
    out = bytearray()
    for node in order:
        for child in node.children:
            if isinstance(child, _Node):
                value = index[id(child)]
            elif child is None:
                value = count
            else:
                value = count + len(_DATA_SEPARATOR) + child
            out += struct.pack(">I", value)
    return bytes(out), count


def encode(value: Any) -> bytes:
    """One value in the data section encoding."""
    if isinstance(value, _Typed):
        return _encode_uint(value.type, value.value)
    if isinstance(value, bool):
        return _control(_BOOLEAN, int(value))
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return _control(_UTF8, len(raw)) + raw
    if isinstance(value, bytes):
        return _control(_BYTES, len(value)) + value
    if isinstance(value, float):
        return _control(_DOUBLE, 8) + struct.pack(">d", value)
    if isinstance(value, int):
        return _encode_int(value)
    if isinstance(value, Mapping):
        parts = [_control(_MAP, len(value))]
        for key, item in value.items():
            parts += [encode(str(key)), encode(item)]
        return b"".join(parts)
    if isinstance(value, (list, tuple)):
        return _control(_ARRAY, len(value)) + b"".join(encode(v) for v in value)
    raise TypeError(f"cannot encode {type(value).__name__} in an mmdb")


def _encode_int(value: int) -> bytes:
    if value < 0:
        if value < -(2**31):
            raise ValueError("negative integers must fit in int32")
        return _control(_INT32, 4) + struct.pack(">i", value)
    if value < 2**32:
        return _encode_uint(_UINT32, value)
    if value < 2**64:
        return _encode_uint(_UINT64, value)
    return _encode_uint(_UINT128, value)


def _encode_uint(type_: int, value: int) -> bytes:
    payload = value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""
    return _control(type_, len(payload)) + payload


def _control(type_: int, size: int) -> bytes:
    """The control byte(s): type, optional extended type, then the size."""
    if size < 29:
        size_bits, extra = size, b""
    elif size < 29 + 256:
        size_bits, extra = 29, bytes([size - 29])
    elif size < 285 + 65536:
        size_bits, extra = 30, (size - 285).to_bytes(2, "big")
    else:
        size_bits, extra = 31, (size - 65821).to_bytes(3, "big")

    if type_ <= _MAP:
        return bytes([(type_ << 5) | size_bits]) + extra
    return bytes([size_bits, type_ - 7]) + extra
