"""bb.ip_outside_allowlist and bb.impossible_travel: where activity comes from."""

from __future__ import annotations

import bisect
import math
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

_MAX_FIXES = 8
_EARTH_KM = 6371.0
_MIN_HOURS = 0.0001


class IpOutsideAllowlist(BaseRule):
    """Activity from no allowed network zone."""

    META = RuleMeta(
        id="bb.ip_outside_allowlist",
        name="Activity from outside the allowed networks",
        description=(
            "A user acted from an address in none of the allowed zones (or, with "
            "no allowlist configured, from a public address in no zone at all)."
        ),
        severity="medium",
        risk_score=47,
        techniques=("T1078",),
        consumes=frozenset({ANY_ACTION}),
        limitations=(
            "Needs the network-zones enricher; without an allowlist only public "
            "addresses outside every zone count. Events without a source IP are "
            "not judged."
        ),
        runbook="Check whether the zone list is current; then ask the user.",
    )

    def __init__(self, settings: EngineSettings) -> None:
        super().__init__(settings)
        self.allowed = frozenset(z.lower() for z in settings.allowlist_zones)

    def evaluate(
        self, event: AuditEvent, ts: float, user: str | None, state: DetectionState
    ) -> Sequence[Finding]:
        """Fire when the source IP sits outside the allowed zones."""
        if user is None or not event.source_ip or not self._outside(event):
            return NO_FINDINGS

        return (
            Finding(
                key=f"{user}|{event.source_ip}",
                anchor=event.id,
                summary=f"{user} active from {event.source_ip}, outside allowed zones",
                evidence=(event.id,),
                actor=user,
                details={"zones": list(event.context.get("zones") or ())},
            ),
        )

    def _outside(self, event: AuditEvent) -> bool:
        zones = event.context.get("zones")
        if self.allowed:
            return not zones or all(str(z).lower() not in self.allowed for z in zones)
        return not zones and context_map(event, "geo").get("scope") == "public"


class ImpossibleTravel(BaseRule):
    """Consecutive located events of one user too far apart for the time."""

    META = RuleMeta(
        id="bb.impossible_travel",
        name="Impossible travel",
        description=(
            "Two consecutive located events of one user imply a speed above "
            "the configured limit (default 900 km/h) over at least the minimum "
            "distance."
        ),
        severity="high",
        risk_score=73,
        techniques=("T1078.004",),
        consumes=frozenset({ANY_ACTION}),
        limitations=(
            "GeoIP city positions are approximate (tens to hundreds of km), so "
            "short hops are ignored; VPN zones and events without coordinates are "
            "skipped; a shared account looks like travel."
        ),
        runbook=(
            "Compare both sessions' IPs and user agents; if one is unknown, end "
            "the user's sessions and rotate credentials."
        ),
    )

    def __init__(self, settings: EngineSettings) -> None:
        super().__init__(settings)
        self.vpn = frozenset(z.lower() for z in settings.vpn_zones)
        self.speed = settings.travel_speed_kmh
        self.min_km = settings.travel_min_distance_km

    def evaluate(
        self, event: AuditEvent, ts: float, user: str | None, state: DetectionState
    ) -> Sequence[Finding]:
        """Judge this fix against its neighbours in time, then remember it.

        Sources deliver at their own pace (a backfill of one source can run
        behind another), so a fix may arrive after later ones: the user's last
        few fixes are kept sorted by time and the new one is compared with the
        fix just before it and the one just after it.
        """
        here = self._location(event) if user is not None else None
        if user is None or here is None:
            return NO_FINDINGS

        fixes = _fixes(state.locations.get(user))
        fix = [ts, *here, event.id]
        position = bisect.bisect_right([f[0] for f in fixes], ts)
        before = fixes[position - 1] if position > 0 else None
        after = fixes[position] if position < len(fixes) else None
        fixes.insert(position, fix)
        state.locations.put(user, fixes[-_MAX_FIXES:])

        for earlier, later in ((before, fix), (fix, after)):
            if earlier is not None and later is not None:
                finding = self._judge(user, earlier, later)
                if finding is not None:
                    return (finding,)
        return NO_FINDINGS

    def _judge(self, user: str, last: list[Any], now: list[Any]) -> Finding | None:
        """A finding when going from fix ``last`` to fix ``now`` is too fast."""
        ts, lat, lon, ip, city, country, event_id = now
        same_place = ip == last[3] or (city and city == last[4] and country == last[5])
        km = _haversine_km(last[1], last[2], lat, lon)
        hours = max((ts - last[0]) / 3600.0, _MIN_HOURS)
        if same_place or km < self.min_km or km / hours <= self.speed:
            return None

        return Finding(
            key=user,
            anchor=f"{last[6]}>{event_id}",
            summary=(
                f"{user} moved {km:.0f} km from {last[4] or last[5]} to "
                f"{city or country} in {hours * 60:.0f} min "
                f"({km / hours:.0f} km/h)"
            ),
            evidence=(last[6], event_id),
            actor=user,
            details={
                "distance_km": round(km),
                "speed_kmh": round(km / hours),
                "from_ip": last[3],
                "to_ip": ip,
            },
        )

    def _location(self, event: AuditEvent) -> list[Any] | None:
        context = event.context
        geo = context.get("geo")
        lat = geo.get("latitude") if geo else None
        if geo is None or lat is None:
            return None
        zones = context.get("zones")
        if zones and any(str(z).lower() in self.vpn for z in zones):
            return None
        lon = geo.get("longitude")
        if not _is_number(lat) or not _is_number(lon):
            return None
        return [lat, lon, event.source_ip, geo.get("city"), geo.get("country_iso")]


def _fixes(stored: Any) -> list[list[Any]]:
    """The stored fixes of a user, oldest first (tolerates the older one-fix form)."""
    if not isinstance(stored, list) or not stored:
        return []
    if isinstance(stored[0], list):
        return [f for f in stored if isinstance(f, list) and len(f) == 7]
    return [stored] if len(stored) == 7 else []


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * _EARTH_KM * math.asin(math.sqrt(a))


__all__ = ["ImpossibleTravel", "IpOutsideAllowlist"]
