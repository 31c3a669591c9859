"""bb.new_source_ip, bb.new_country, bb.new_asn: first sightings per user."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from collector.model import AuditEvent
from detections.rules.base import (
    ANY_ACTION,
    NO_FINDINGS,
    BaseRule,
    DetectionState,
    Finding,
    RuleMeta,
    context_map,
)
from detections.settings import EngineSettings

_LIMITS = (
    "Silent during the learning period (per user or global, in event time). "
    "Needs the source IP, which Data Center omits for some system actions; "
    "activity from the allowlisted zones is learned but never alerted, and the first "
    "public value a user shows is learned, not alerted; "
    "proxies and NAT hide the real client."
)


class _FirstSighting(BaseRule):
    """Alert on a value a user has not shown within the baseline TTL."""

    what = ""

    def __init__(self, settings: EngineSettings) -> None:
        super().__init__(settings)
        self.learning = settings.learning_period
        self.scope = settings.learning_scope
        self.prefix = f"{self.META.id}:"
        self.trusted_zones = frozenset(settings.allowlist_zones)

    def trusted(self, event: AuditEvent) -> bool:
        """Whether the event comes from an allowlisted zone (not baselined)."""
        zones = event.context.get("zones")
        return isinstance(zones, list) and bool(self.trusted_zones.intersection(zones))

    def value(self, event: AuditEvent) -> str | None:
        """The value to baseline (IP, country, ASN) or None."""
        raise NotImplementedError

    def evaluate(
        self, event: AuditEvent, ts: float, user: str | None, state: DetectionState
    ) -> Sequence[Finding]:
        """Fire on a new value once the user's history covers the learning period."""
        if user is None:
            return NO_FINDINGS
        value = self.value(event)
        if value is None:
            return NO_FINDINGS

        # A user with no value of this kind yet (seen only from private
        # addresses so far) has no baseline to deviate from: the first public
        # sighting is learned, not alerted.
        had_baseline = state.baselines.observe_key(f"{self.prefix}{user}\x1f", ts)
        known = state.baselines.observe_key(f"{self.prefix}{user}\x1f{value}", ts)
        # Sightings from allowlisted zones build the baseline (they show where
        # the user really is) but never alert.
        if known or not had_baseline or self.trusted(event):
            return NO_FINDINGS
        if state.first_seen.age(user, ts, scope=self.scope) < self.learning:
            return NO_FINDINGS

        return (
            Finding(
                key=f"{user}|{value}",
                anchor=event.id,
                summary=f"{user} active from new {self.what} {value}",
                evidence=(event.id,),
                actor=user,
                details={self.what.replace(" ", "_"): value},
            ),
        )


class NewSourceIp(_FirstSighting):
    """bb.new_source_ip."""

    what = "source IP"
    META = RuleMeta(
        id="bb.new_source_ip",
        name="Activity from a new source IP for the user",
        description="A user acted from an IP address not seen for them before.",
        severity="low",
        risk_score=21,
        techniques=("T1078",),
        consumes=frozenset({ANY_ACTION}),
        limitations=_LIMITS
        + " Noisy for users on dynamic home IPs. Addresses inside the allowlisted"
        " network zones and non-public addresses are not baselined: office DHCP"
        " leases change daily and would bury the signal.",
        runbook="Confirm with the user; correlate with new country/ASN alerts.",
    )

    def value(self, event: AuditEvent) -> str | None:
        """The source IP, unless it is not a public address."""
        if event.source_ip is None:
            return None
        scope = context_map(event, "geo").get("scope")
        if scope is not None and scope != "public":
            return None
        return event.source_ip


class NewCountry(_FirstSighting):
    """bb.new_country."""

    what = "country"
    META = RuleMeta(
        id="bb.new_country",
        name="Activity from a new country for the user",
        description="A user acted from a country not seen for them before.",
        severity="medium",
        risk_score=47,
        techniques=("T1078.004",),
        consumes=frozenset({ANY_ACTION}),
        limitations=_LIMITS + " Needs GeoIP enrichment; VPN exits move countries.",
        runbook="Confirm travel with the user or manager; check MFA and sessions.",
    )

    def value(self, event: AuditEvent) -> str | None:
        """The ISO country code."""
        geo = event.context.get("geo")
        return _geo_text(geo.get("country_iso")) if geo else None


class NewAsn(_FirstSighting):
    """bb.new_asn."""

    what = "ASN"
    META = RuleMeta(
        id="bb.new_asn",
        name="Activity from a new network (ASN) for the user",
        description="A user acted from an autonomous system not seen for them.",
        severity="low",
        risk_score=21,
        techniques=("T1078.004",),
        consumes=frozenset({ANY_ACTION}),
        limitations=_LIMITS + " Needs ASN enrichment; mobile carriers rotate ASNs.",
        runbook="Look up the AS organisation; hosting providers deserve a call.",
    )

    def value(self, event: AuditEvent) -> str | None:
        """The AS number."""
        geo = event.context.get("geo")
        return _geo_text(geo.get("asn")) if geo else None


def _geo_text(value: Any) -> str | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    return str(value)
