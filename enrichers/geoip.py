"""GeoIP and ASN context from MaxMind-format databases (``.mmdb``).

Reads a City and an ASN database with the maintained ``maxminddb`` reader.
Only public addresses are looked up; private, loopback, reserved and other
special addresses are labelled with their scope instead. With
``lookup_documentation_ranges`` the TEST-NET ranges are looked up and labelled
``public`` (the simulator uses them as stand-ins for public networks).
Results are cached per address (LRU), so a warm pipeline does no lookups for
repeat addresses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import maxminddb
import structlog
from pydantic import Field

from collector.metrics import Metrics
from collector.model import AuditEvent
from collector.plugins import ENRICHERS, Runtime
from collector.settings_types import PluginSettings
from enrichers.addresses import is_documentation, parse_ip, scope_of
from enrichers.context import mark_errors

logger = structlog.get_logger(__name__)

GEO_KEY = "geo"


class GeoIpSettings(PluginSettings):
    """``kind: geoip``. Set at least one of ``city_db`` and ``asn_db``."""

    kind: Literal["geoip"] = "geoip"
    city_db: Path | None = None
    asn_db: Path | None = None
    mode: Literal["mmap", "memory"] = "mmap"
    cache_size: int = Field(default=65536, ge=0, le=10_000_000)
    lookup_documentation_ranges: bool = False


class GeoIpEnricher:
    """Adds ``context["geo"]`` for each event with a source IP."""

    def __init__(self, settings: GeoIpSettings, metrics: Metrics) -> None:
        self.name = settings.name or "geoip"
        self.settings = settings
        self._city: Any = None
        self._asn: Any = None
        self._loaded = False
        self._errors = metrics.enrichment_errors
        self._lookup = lru_cache(maxsize=settings.cache_size)(self._geo_for)

    async def start(self) -> None:
        """Open the databases; one that cannot be opened is logged and skipped."""
        self._city = await self._aopen(self.settings.city_db)
        self._asn = await self._aopen(self.settings.asn_db)
        self._loaded = self._city is not None or self._asn is not None
        self._lookup.cache_clear()

    async def enrich(self, events: Sequence[AuditEvent]) -> None:
        """Label or look up every event's source IP (cached per address)."""
        failed: list[AuditEvent] = []
        lookup = self._lookup
        for event in events:
            if event.source_ip is None:
                continue
            try:
                # Shared per address: context values are read-only once set.
                event.context[GEO_KEY] = lookup(event.source_ip)
            except (maxminddb.InvalidDatabaseError, OSError, ValueError):
                failed.append(event)

        if failed:
            mark_errors(failed, self.name, "database lookup failed")
            self._errors.labels(enricher=self.name).inc()

    async def aclose(self) -> None:
        """Close the database readers. Idempotent."""
        for reader in (self._city, self._asn):
            if reader is not None:
                reader.close()
        self._city = self._asn = None

    def lookup(self, ip: str) -> Mapping[str, Any]:
        """The geo context for one address (cached); for tests and tools."""
        return self._lookup(ip)

    async def _aopen(self, path: Path | None) -> Any:
        if path is None:
            return None
        mode = maxminddb.MODE_MMAP
        if self.settings.mode == "memory":
            mode = maxminddb.MODE_MEMORY
        try:
            reader = await asyncio.to_thread(maxminddb.open_database, str(path), mode)
        except (OSError, ValueError) as exc:
            logger.error(
                "geoip.open_failed", enricher=self.name, path=str(path), error=str(exc)
            )
            return None
        logger.info(
            "geoip.opened",
            enricher=self.name,
            path=str(path),
            database_type=reader.metadata().database_type,
        )
        return reader

    def _geo_for(self, ip: str) -> Mapping[str, Any]:
        address = parse_ip(ip)
        if address is None:
            return {"scope": "invalid"}
        scope = scope_of(address)
        lookable = scope == "public" or (
            self.settings.lookup_documentation_ranges and is_documentation(address)
        )
        if not lookable:
            return {"scope": scope}
        if not self._loaded:
            raise ValueError("no GeoIP database is loaded")

        # A documentation address looked up on purpose stands in for a public one.
        geo: dict[str, Any] = {"scope": "public"}
        if self._city is not None:
            geo.update(_city_fields(self._city.get(str(address))))
        if self._asn is not None:
            geo.update(_asn_fields(self._asn.get(str(address))))
        return geo


def _city_fields(record: Any) -> dict[str, Any]:
    if not isinstance(record, Mapping):
        return {}
    country = record.get("country") or record.get("registered_country") or {}
    city = record.get("city") or {}
    location = record.get("location") or {}
    fields = {
        "country_iso": country.get("iso_code"),
        "country": (country.get("names") or {}).get("en"),
        "city": (city.get("names") or {}).get("en"),
        "latitude": location.get("latitude"),
        "longitude": location.get("longitude"),
    }
    return {key: value for key, value in fields.items() if value is not None}


def _asn_fields(record: Any) -> dict[str, Any]:
    if not isinstance(record, Mapping):
        return {}
    fields = {
        "asn": record.get("autonomous_system_number"),
        "as_org": record.get("autonomous_system_organization"),
    }
    return {key: value for key, value in fields.items() if value is not None}


def _build(settings: GeoIpSettings, runtime: Runtime) -> GeoIpEnricher:
    return GeoIpEnricher(settings, runtime.metrics)


ENRICHERS.register(
    "geoip",
    GeoIpSettings,
    _build,
    "country, city and ASN of the source IP from MaxMind-format databases",
)
