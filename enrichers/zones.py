"""Network zones: named CIDR lists (office, vpn, ci-runners, ...) from the config.

Every event with a source IP gets ``context["zones"]``: the names of the zones
whose networks hold the address, in config order, or an empty list.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from functools import lru_cache
from typing import Literal

from pydantic import Field, field_validator

from collector.metrics import Metrics
from collector.model import AuditEvent
from collector.plugins import ENRICHERS, Runtime
from collector.settings_types import PluginSettings
from enrichers.addresses import parse_ip

ZONES_KEY = "zones"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ZonesSettings(PluginSettings):
    """``kind: zones``; ``zones`` maps a zone name to its CIDR networks."""

    kind: Literal["zones"] = "zones"
    zones: dict[str, list[str]] = Field(default_factory=dict)
    cache_size: int = Field(default=65536, ge=0, le=10_000_000)

    @field_validator("zones")
    @classmethod
    def _check_networks(cls, zones: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, cidrs in zones.items():
            for cidr in cidrs:
                try:
                    ipaddress.ip_network(cidr, strict=True)
                except ValueError as exc:
                    raise ValueError(f"zone {name!r}: {exc}") from None
        return zones


class ZonesEnricher:
    """Adds ``context["zones"]`` for each event with a source IP."""

    def __init__(self, settings: ZonesSettings, metrics: Metrics) -> None:
        self.name = settings.name or "zones"
        self._zones: list[tuple[str, tuple[Network, ...]]] = [
            (name, tuple(ipaddress.ip_network(cidr) for cidr in cidrs))
            for name, cidrs in settings.zones.items()
        ]
        self._lookup = lru_cache(maxsize=settings.cache_size)(self._zones_for)
        self._lists = lru_cache(maxsize=settings.cache_size)(self._zone_list)

    async def start(self) -> None:
        """Nothing to load: the zones come with the settings."""

    async def enrich(self, events: Sequence[AuditEvent]) -> None:
        """Name the zones of each event's source IP (cached per address)."""
        lookup = self._lists
        for event in events:
            if event.source_ip is not None:
                event.context[ZONES_KEY] = lookup(event.source_ip)

    async def aclose(self) -> None:
        """Nothing to release."""

    def zones_of(self, ip: str) -> tuple[str, ...]:
        """The zone names of one address (cached)."""
        return self._lookup(ip)

    def _zone_list(self, ip: str) -> list[str]:
        # One list per address, shared by its events: context values are
        # read-only once set.
        return list(self._lookup(ip))

    def _zones_for(self, ip: str) -> tuple[str, ...]:
        address = parse_ip(ip)
        if address is None:
            return ()
        return tuple(
            name
            for name, networks in self._zones
            if any(address in network for network in networks)
        )


def _build(settings: ZonesSettings, runtime: Runtime) -> ZonesEnricher:
    return ZonesEnricher(settings, runtime.metrics)


ENRICHERS.register(
    "zones",
    ZonesSettings,
    _build,
    "configured CIDR zones of the source IP",
)
