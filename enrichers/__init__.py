"""Enrichers: identity, GeoIP/ASN, network zones and repository tags.

Importing this package registers every enricher kind in
``collector.plugins.ENRICHERS``: ``identity_file``, ``identity_scim``,
``geoip``, ``zones`` and ``repo_tags``. The pipeline runs them through
``EnrichmentChain``, which contains their failures.
"""

from __future__ import annotations

from enrichers.chain import EnrichmentChain as EnrichmentChain
from enrichers.directory_file import IdentityFileEnricher as IdentityFileEnricher
from enrichers.directory_file import IdentityFileSettings as IdentityFileSettings
from enrichers.geoip import GeoIpEnricher as GeoIpEnricher
from enrichers.geoip import GeoIpSettings as GeoIpSettings
from enrichers.mmdb_writer import write_city_asn_mmdbs as write_city_asn_mmdbs
from enrichers.repo_tags import RepoTagsEnricher as RepoTagsEnricher
from enrichers.repo_tags import RepoTagsSettings as RepoTagsSettings
from enrichers.scim import ScimEnricher as ScimEnricher
from enrichers.scim import ScimSettings as ScimSettings
from enrichers.zones import ZonesEnricher as ZonesEnricher
from enrichers.zones import ZonesSettings as ZonesSettings

__all__ = [
    "EnrichmentChain",
    "GeoIpEnricher",
    "GeoIpSettings",
    "IdentityFileEnricher",
    "IdentityFileSettings",
    "RepoTagsEnricher",
    "RepoTagsSettings",
    "ScimEnricher",
    "ScimSettings",
    "ZonesEnricher",
    "ZonesSettings",
    "write_city_asn_mmdbs",
]
