"""Golden outputs of the normalizers and renderers, to pin them byte for byte.

Every case is one input record normalized (DC sample lines and REST entities,
variants of them that reach the normalizer's edge paths, Cloud org events),
given one of a few enrichment contexts, then rendered in every format: ECS and
OCSF with and without the original, raw, and CEF. A handful of alerts go
through the same renderers. A record the normalizer refuses is a case too: its
error message is the output.

``digests()`` gives one short sha256 per case and output, which
``tests/test_render_golden.py`` compares with the committed
``tests/fixtures/golden_render.tsv``. After a deliberate output change:

    .venv/bin/python -m bench.golden --digests tests/fixtures/golden_render.tsv

To see what changed, dump the full outputs of two trees and diff them:

    .venv/bin/python -m bench.golden --dump /tmp/after.ndjson
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import random
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from collector.model import Alert, AuditEvent
from collector.normalize.cloud import normalize_cloud
from collector.normalize.dc import normalize_dc
from sinks import cef
from sinks.render import render

# The vendored public samples (tests/fixtures/shared), present in every clone.
SAMPLES = Path(__file__).resolve().parents[1] / "tests/fixtures/shared/bitbucket"
VARIANTS = 240
SEED = 20260501
DIGEST_CHARS = 16

Record = dict[str, Any]
Mutator = Callable[[Record, random.Random], None]


def sample_dc_records() -> list[tuple[str, Any]]:
    """The DC sample file lines, REST entities and REST mock page entities."""
    records: list[tuple[str, Any]] = []
    for name in (
        "elastic_bitbucket_dc_audit_file_lines.ndjson",
        "elastic_bitbucket_dc_rest_api_entities.ndjson",
    ):
        for index, line in enumerate(_ndjson(name)):
            records.append((f"{name.split('_')[3]}-{index}", line))
    for name in (
        "elastic_bitbucket_dc_rest_api_mock_page1.json",
        "elastic_bitbucket_dc_rest_api_mock_page2_last.json",
    ):
        page = orjson.loads((SAMPLES / name).read_bytes())
        for index, entity in enumerate(page.get("entities", [])):
            records.append((f"page-{name[-10:-5]}-{index}", entity))
    return records


def sample_cloud_items() -> list[tuple[str, Any]]:
    """The Cloud org audit sample events and events-stream page items."""
    items: list[tuple[str, Any]] = [
        (f"cloud-org-{i}", item)
        for i, item in enumerate(
            _ndjson("elastic_atlassian_cloud_org_audit_events.ndjson")
        )
    ]
    panther = SAMPLES / "panther_atlassian_user_logged_in_as_user.json"
    items.append(("cloud-panther", orjson.loads(panther.read_bytes())))
    for page in ("page1", "page2"):
        name = f"elastic_atlassian_cloud_events_stream_mock_{page}.json"
        data = orjson.loads((SAMPLES / name).read_bytes())["data"]
        items += [(f"cloud-{page}-{i}", item) for i, item in enumerate(data)]
    return items


def _ndjson(name: str) -> list[Any]:
    text = (SAMPLES / name).read_bytes()
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


# Each mutator edits a deep copy of a sample record in place, towards one
# branch of the normalizer, the id hash or a renderer.
def _author_system(r: Record, rng: random.Random) -> None:
    r["author"] = rng.choice(
        [
            {"name": "System", "type": "SYSTEM", "id": "-1"},
            {"name": "Anonymous", "id": "-2"},
            {"name": "access-token-user/2/1", "type": "NORMAL", "id": "77"},
            {"name": "ci-bot", "type": "SERVICE", "id": "78"},
            {"name": "jdoe", "type": "user", "id": 42},
            {"name": "odd", "type": "PLUGIN", "id": 4.5},
            {"name": "", "type": "", "id": ""},
            {},
        ]
    )


def _author_broken(r: Record, rng: random.Random) -> None:
    choice = rng.randrange(4)
    if choice == 0:
        r.pop("author", None)
    elif choice == 1:
        r["author"] = "jdoe"
    elif choice == 2:
        r["author"] = None
    else:
        r["author"] = {"name": True, "id": "1"}  # text_field refuses a bool


def _source(r: Record, rng: random.Random) -> None:
    value = rng.choice(
        ["", None, "2001:db8::1", "bitbucket.internal", "10.1.2.3", 17, "a=b|c"]
    )
    if value is None:
        r.pop("source", None)
    else:
        r["source"] = value


def _time(r: Record, rng: random.Random) -> None:
    r["timestamp"] = rng.choice(
        [
            "2026-03-02T10:00:00.123Z",
            "2026-03-02T10:00:00+02:00",
            "2026-03-02T10:00:00",
            "2026-03-02T10:00:00.123456Z",
            "1999-12-31T23:59:59.999999-05:30",
            {"epochSecond": 1_780_000_000, "nano": 0},
            {"epochSecond": 1_780_000_000},
            {"epochSecond": 1_780_000_000, "nano": None},
            {"epochSecond": 1_780_000_001, "nano": 999_999_999},
            {"epochSecond": 0, "nano": 1_500},
        ]
    )


def _time_broken(r: Record, rng: random.Random) -> None:
    r["timestamp"] = rng.choice(
        [
            "",
            "yesterday",
            None,
            {"epochSecond": "1780000000"},
            {"epochSecond": -1, "nano": 0},
            {"epochSecond": 10**12, "nano": 0},
            {"epochSecond": 1, "nano": 10**9},
            "0001-01-01T00:00:00+01:00",
            12345,
        ]
    )


def _objects(r: Record, rng: random.Random) -> None:
    r["affectedObjects"] = rng.choice(
        [
            [
                {"type": "USER", "name": "jdoe", "id": 42},
                {"type": "GROUP", "name": "admins"},
                "junk",
                {"type": "", "name": "", "id": ""},
                {"type": "REPOSITORY", "name": "PRJ/app|x=1", "id": "9"},
            ],
            [{"type": "USER", "id": "7"}, {"type": "USER", "name": "zed"}],
            {"type": "USER"},
            [],
            None,
        ]
    )


def _changes(r: Record, rng: random.Random) -> None:
    r["changedValues"] = rng.choice(
        [
            [
                {"key": "Name", "from": "a", "to": "b"},
                {"i18nKey": "bb.key", "from": 1, "to": 2.5},
                {"from": "", "to": "x"},
                7,
            ],
            [{"key": "", "i18nKey": "", "from": None, "to": "READ"}],
            "nope",
        ]
    )


def _attributes(r: Record, rng: random.Random) -> None:
    details = rng.choice(
        [
            '{"permission":"SYS_ADMIN","user":"jdoe","n":3,"f":1.5,"b":true,'
            '"l":["a",1,true,null],"d":{"x":1}}',
            "not json",
            '["a"]',
            "{}",
        ]
    )
    r["extraAttributes"] = [
        {
            "name": "details",
            "nameI18nKey": "bitbucket.audit.attribute.legacy.details",
            "value": details,
        },
        {"name": "Authentication method", "value": rng.choice(["Basic", "SSO"])},
        {"name": "long", "value": "x" * 9000},
        {"name": "", "value": "dropped"},
        {"name": "num", "value": 5},
        {"name": 12, "value": "named by a number"},
        "junk",
    ]


def _type_block(r: Record, rng: random.Random) -> None:
    key = "auditType" if "auditType" in r else "type"
    r[key] = rng.choice(
        [
            {"action": "Something New Happened", "category": "Odd"},
            {"action": "Global permission granted"},
            {
                "actionI18nKey": "bitbucket.service.user.audit.action.usercreated",
                "action": "",
            },
            {"actionI18nKey": "", "action": "", "category": ""},
            {
                "actionI18nKey": "bitbucket.service.user.audit.action."
                "globalpermissiongranted",
                "action": "Global admin permission granted",
                "category": "Permissions",
            },
        ]
    )


def _shape_broken(r: Record, rng: random.Random) -> None:
    choice = rng.randrange(3)
    if choice == 0:
        r.pop("type", None)
        r.pop("auditType", None)
    elif choice == 1:
        key = "auditType" if "auditType" in r else "type"
        r[key] = "Global permission granted"
    else:
        r["type"] = {"action": "x"}
        r.pop("auditType", None)
        r.pop("timestamp", None)


def _special_text(r: Record, rng: random.Random) -> None:
    odd = rng.choice(["a|b=c\\d", "line\nbreak\r", "sep\u2028\u2029\x85", "nul\x00"])
    r["author"] = {"name": f"user {odd}", "type": "NORMAL", "id": "5"}
    r["affectedObjects"] = [{"type": "USER", "name": odd, "id": "5"}]


def _blanks(r: Record, rng: random.Random) -> None:
    # "" and absent must hash alike in ids; both are exercised.
    for field in ("system", "node", "method"):
        if rng.random() < 0.5:
            r[field] = ""
        else:
            r.pop(field, None)


MUTATORS: tuple[Mutator, ...] = (
    _author_system,
    _source,
    _time,
    _objects,
    _changes,
    _attributes,
    _type_block,
    _special_text,
    _blanks,
    _author_broken,
    _time_broken,
    _shape_broken,
)
# The last three make most records invalid; they are drawn less often.
_VALID_MUTATORS = MUTATORS[:-3]


def dc_variants(templates: list[Any], count: int) -> list[tuple[str, Any]]:
    """``count`` deterministic variants of the templates, one to three edits each."""
    rng = random.Random(SEED)
    variants: list[tuple[str, Any]] = []
    for index in range(count):
        record = copy.deepcopy(templates[index % len(templates)])
        pool = MUTATORS if index % 8 == 0 else _VALID_MUTATORS
        for mutate in rng.sample(pool, rng.randint(1, 3)):
            mutate(record, rng)
        variants.append((f"variant-{index}", record))
    variants += [("not-a-dict", ["a"]), ("empty", {})]
    for name, edits in EDGES:
        record = {**copy.deepcopy(templates[0]), **edits}
        variants.append((f"edge-{name}", record))
    return variants


# Refusals the random draw may miss; each replaces fields of the first sample.
EDGES: tuple[tuple[str, Record], ...] = (
    ("bool-author", {"author": {"name": True, "id": "1"}}),
    ("list-source", {"source": ["10.0.0.1"]}),
    ("year-one", {"timestamp": "0001-01-01T00:00:00+01:00"}),
    ("int-timestamp", {"timestamp": 12345}),
    ("type-text", {"auditType": "Global permission granted"}),
    ("nano-text", {"timestamp": {"epochSecond": 1, "nano": "5"}}),
)


CONTEXTS: tuple[dict[str, Any], ...] = (
    {},
    {
        "identity": {
            "matched_by": "username",
            "directory": "corp-ad",
            "username": "admin",
            "email": "admin@example.com",
            "display_name": "Ada Admin",
            "department": "IT",
            "title": "Admin",
            "manager": "boss",
            "status": "active",
            "mfa_enrolled": True,
            "groups": ["eng", "admins"],
            "human": True,
        },
        "geo": {
            "scope": "public",
            "country_iso": "DE",
            "country": "Germany",
            "city": "Berlin",
            "latitude": 52.5,
            "longitude": 13.4,
            "asn": 64500,
            "as_org": "Example Net",
        },
        "zones": ["vpn"],
        "repo": {"project": "PRJ", "repository": "app", "tags": ["pci"]},
    },
    {
        "identity": {"matched_by": None, "groups": [], "email": "", "human": False},
        "geo": {"scope": "private"},
        "zones": [],
    },
    {
        "git": {"operation": "clone", "protocol": "ssh", "bytes_read": 10},
        "enrichment_errors": ["geoip: closed"],
        "repo": {},
        "seen_at": datetime(2026, 5, 1, 12, 0, tzinfo=UTC),
        "pair": ("a", 1),
    },
    {"geo": {"scope": "public", "asn": 1, "latitude": 0.0}, "identity": None},
)


def event_outputs(event: AuditEvent) -> dict[str, bytes]:
    """Every rendering of one audit event, as bytes."""
    outputs = {"normalized": repr(event).encode()}
    for fmt in ("ecs", "ocsf", "raw"):
        outputs[fmt] = orjson.dumps(render(event, fmt))
        if fmt != "raw":
            outputs[f"{fmt}+original"] = orjson.dumps(render(event, fmt, original=True))
    outputs["cef"] = cef.format_record(event).encode()
    outputs["cef+header"] = cef.format_record(
        event, vendor="Ven|dor", product="P\\x", version="1\n2"
    ).encode()
    return outputs


def sample_alerts() -> list[tuple[str, Alert]]:
    """Alerts covering every optional field, present and absent."""
    when = datetime(2026, 5, 1, 8, 30, 15, 123456, tzinfo=UTC)
    full = Alert(
        id="al-1",
        rule_id="impossible_travel",
        rule_name="Impossible travel",
        severity="high",
        risk_score=73,
        time=when,
        summary="jdoe logged in from two countries",
        key="jdoe",
        evidence=("dc-1", "dc-2"),
        techniques=("T1078", "T1133"),
        actor="jdoe",
        source_ip="203.0.113.9",
        geo={"country_iso": "DE", "city": "Berlin", "asn": 64500, "as_org": "X"},
        platform="dc",
        instance="bb",
        rule_author="secops",
        references=("https://example.test/rule",),
        details={"context": CONTEXTS[1], "count": 3},
    )
    return [
        ("alert-full", full),
        (
            "alert-minimal",
            Alert(
                id="al-2",
                rule_id="r",
                rule_name="R",
                severity="info",
                risk_score=0,
                time=when.replace(tzinfo=None),
                summary="s",
                key="k",
                evidence=(),
            ),
        ),
        (
            "alert-host-source",
            Alert(
                id="al-3",
                rule_id="r|=",
                rule_name="R\n",
                severity="critical",
                risk_score=99,
                time=when.astimezone(timezone(timedelta(hours=2))),
                summary="a=b",
                key="k",
                evidence=("e",),
                actor="x",
                source_ip="build-agent-1",
                platform="cloud",
                details={"context": "not a dict", "n": [1, 2]},
            ),
        ),
    ]


def alert_outputs(alert: Alert) -> dict[str, bytes]:
    """Every rendering of one alert, as bytes."""
    outputs: dict[str, bytes] = {}
    for fmt in ("ecs", "ocsf", "raw"):
        outputs[fmt] = orjson.dumps(render(alert, fmt))
        if fmt != "raw":
            outputs[f"{fmt}+original"] = orjson.dumps(render(alert, fmt, original=True))
    outputs["cef"] = cef.format_record(alert).encode()
    return outputs


def cases() -> Iterator[tuple[str, dict[str, bytes]]]:
    """(case name, output name -> bytes) for every golden case, in a fixed order."""
    dc = sample_dc_records()
    templates = [record for _, record in dc]
    for index, (name, record) in enumerate(dc + dc_variants(templates, VARIANTS)):
        instance = "bb" if index % 5 else "other-instance"
        make = partial(normalize_dc, record, instance=instance, source_kind="dc")
        yield name, _normalized(make, index)
    for index, (name, item) in enumerate(sample_cloud_items()):
        make = partial(normalize_cloud, item, instance="org", source_kind="cloud")
        yield name, _normalized(make, index)
    for name, alert in sample_alerts():
        yield name, alert_outputs(alert)


def _normalized(make: Callable[[], AuditEvent], index: int) -> dict[str, bytes]:
    try:
        event = make()
    except ValueError as exc:
        return {"error": f"ValueError: {exc}".encode()}
    # A fresh copy per event: renderers must not depend on context identity.
    event.context.update(copy.deepcopy(CONTEXTS[index % len(CONTEXTS)]))
    return event_outputs(event)


def digests() -> list[str]:
    """One ``case<TAB>output<TAB>digest`` line per output of every case."""
    lines = []
    for case, outputs in cases():
        for output, data in outputs.items():
            digest = hashlib.sha256(data).hexdigest()[:DIGEST_CHARS]
            lines.append(f"{case}\t{output}\t{digest}")
    return lines


def dump(path: Path) -> None:
    """Write the full outputs, one JSON line per case, for diffing two trees."""
    with path.open("wb") as out:
        for case, outputs in cases():
            text = {k: v.decode() for k, v in outputs.items()}
            out.write(orjson.dumps({"case": case, **text}) + b"\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--digests", type=Path, help="write the digest file here")
    parser.add_argument("--dump", type=Path, help="write the full outputs here")
    args = parser.parse_args()
    if args.digests:
        args.digests.write_text("\n".join(digests()) + "\n")
    if args.dump:
        dump(args.dump)


if __name__ == "__main__":
    main()
