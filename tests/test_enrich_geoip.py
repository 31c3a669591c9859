"""GeoIP/ASN enrichment from .mmdb files the tests build themselves."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import maxminddb
import pytest

from collector.metrics import Metrics
from collector.model import AuditEvent
from enrichers.addresses import parse_ip, scope_of
from enrichers.geoip import GeoIpEnricher, GeoIpSettings
from enrichers.mmdb_writer import write_city_asn_mmdbs


@dataclass(frozen=True)
class Site:
    """A network site as the simulator describes one."""

    cidr: str
    country_iso: str
    country_name: str
    city: str
    latitude: float
    longitude: float
    asn: int
    as_org: str


SITES = [
    Site(
        "8.8.8.0/24", "US", "United States", "Mountain View", 37.4, -122.1, 15169, "G"
    ),
    Site("8.8.8.128/25", "US", "United States", "Denver", 39.7, -105.0, 15169, "G"),
    Site("81.2.69.0/24", "GB", "United Kingdom", "London", 51.5, -0.1, 20712, "AA"),
    Site("2a02:ff0::/32", "DE", "Germany", "Berlin", 52.5, 13.4, 3320, "DT"),
    Site("203.0.113.0/24", "JP", "Japan", "Tokyo", 35.7, 139.7, 64500, "Test AS"),
]


@pytest.fixture(scope="module")
def databases(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A city and an ASN database written at test time."""
    folder = tmp_path_factory.mktemp("mmdb")
    city, asn = folder / "city.mmdb", folder / "asn.mmdb"
    write_city_asn_mmdbs(SITES, city, asn)
    return city, asn


def event(ip: str | None) -> AuditEvent:
    """An audit event from one source IP."""
    return AuditEvent(
        id="e1",
        time=datetime(2026, 5, 1, tzinfo=UTC),
        platform="dc",
        instance="bb",
        source_kind="test",
        action="user.logged_in",
        category="authentication",
        source_ip=ip,
    )


async def enricher_for(
    databases: tuple[Path, Path], metrics: Metrics, **extra: object
) -> GeoIpEnricher:
    """A started GeoIP enricher over the test databases."""
    city, asn = databases
    settings = GeoIpSettings.model_validate(
        {"kind": "geoip", "city_db": city, "asn_db": asn, **extra}
    )
    enricher = GeoIpEnricher(settings, metrics)
    await enricher.start()
    return enricher


def test_written_database_reads_back_with_maxminddb(
    databases: tuple[Path, Path],
) -> None:
    """The pure-Python reader reads what the writer wrote, most specific first."""
    city, asn = databases
    with maxminddb.open_database(str(city), maxminddb.MODE_FILE) as reader:
        record, prefix = reader.get_with_prefix_len("8.8.8.200")
        meta = reader.metadata()
    with maxminddb.open_database(str(asn), maxminddb.MODE_MEMORY) as reader:
        as_record = reader.get("2a02:ff0::1")

    assert isinstance(record, dict)
    assert record["city"] == {"names": {"en": "Denver"}}
    assert prefix == 25
    assert meta.database_type == "GeoIP2-City"
    assert as_record == {
        "autonomous_system_number": 3320,
        "autonomous_system_organization": "DT",
    }


@pytest.mark.parametrize("mode", ["mmap", "memory"])
async def test_public_ipv4_lookup(
    databases: tuple[Path, Path], metrics: Metrics, mode: str
) -> None:
    """A public IPv4 address gets country, city, location and AS."""
    enricher = await enricher_for(databases, metrics, mode=mode)
    ev = event("81.2.69.160")

    await enricher.enrich([ev])
    await enricher.aclose()

    assert ev.context["geo"] == {
        "scope": "public",
        "country_iso": "GB",
        "country": "United Kingdom",
        "city": "London",
        "latitude": 51.5,
        "longitude": -0.1,
        "asn": 20712,
        "as_org": "AA",
    }


async def test_ipv6_lookup(databases: tuple[Path, Path], metrics: Metrics) -> None:
    """A public IPv6 address is looked up in the same databases."""
    enricher = await enricher_for(databases, metrics)
    ev = event("2a02:ff0:1::7")

    await enricher.enrich([ev])

    assert ev.context["geo"]["city"] == "Berlin"
    assert ev.context["geo"]["asn"] == 3320


@pytest.mark.parametrize(
    ("ip", "scope"),
    [
        ("10.1.2.3", "private"),
        ("192.168.0.1", "private"),
        ("fd00::1", "private"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("169.254.1.1", "link_local"),
        ("fe80::1", "link_local"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("100.64.0.1", "shared"),
        ("203.0.113.9", "reserved"),
        ("2001:db8::1", "reserved"),
        ("240.0.0.1", "reserved"),
        ("::ffff:10.0.0.1", "private"),
        ("not-an-ip", "invalid"),
    ],
)
async def test_special_addresses_are_labelled_not_looked_up(
    databases: tuple[Path, Path], metrics: Metrics, ip: str, scope: str
) -> None:
    """Private, reserved and other special addresses carry only their scope."""
    enricher = await enricher_for(databases, metrics)
    ev = event(ip)

    await enricher.enrich([ev])

    assert ev.context["geo"] == {"scope": scope}


async def test_documentation_ranges_looked_up_when_asked(
    databases: tuple[Path, Path], metrics: Metrics
) -> None:
    """With lookup_documentation_ranges the TEST-NET stand-ins resolve as public."""
    enricher = await enricher_for(databases, metrics, lookup_documentation_ranges=True)
    ev = event("203.0.113.50")

    await enricher.enrich([ev])

    assert ev.context["geo"]["scope"] == "public"
    assert ev.context["geo"]["city"] == "Tokyo"


async def test_unknown_public_address_and_no_ip(
    databases: tuple[Path, Path], metrics: Metrics
) -> None:
    """A public address missing from the databases is just public; no IP, no geo."""
    enricher = await enricher_for(databases, metrics)
    missing, none = event("1.1.1.1"), event(None)

    await enricher.enrich([missing, none])

    assert missing.context["geo"] == {"scope": "public"}
    assert "geo" not in none.context


async def test_missing_database_marks_public_lookups(
    tmp_path: Path, metrics: Metrics
) -> None:
    """A database that cannot be opened marks public lookups and spares private ones."""
    settings = GeoIpSettings(name="geo", city_db=tmp_path / "absent.mmdb")
    enricher = GeoIpEnricher(settings, metrics)
    await enricher.start()
    public, private = event("8.8.8.8"), event("10.0.0.1")

    await enricher.enrich([public, private])

    assert public.context["enrichment_errors"] == ["geo: database lookup failed"]
    assert private.context["geo"] == {"scope": "private"}


async def test_events_from_one_ip_share_one_read_only_value(
    databases: tuple[Path, Path], metrics: Metrics
) -> None:
    """Events from one IP share one cached geo value (context values are
    read-only once set, so the hot path makes no copy)."""
    enricher = await enricher_for(databases, metrics)
    a, b = event("8.8.8.8"), event("8.8.8.8")

    await enricher.enrich([a, b])

    assert a.context["geo"] is b.context["geo"]
    assert b.context["geo"]["city"] == "Mountain View"


def test_forwarded_chain_takes_first_address() -> None:
    """A comma-separated forwarded-for value yields its first address."""
    address = parse_ip("81.2.69.1, 10.0.0.1")

    assert address is not None
    assert scope_of(address) == "public"
