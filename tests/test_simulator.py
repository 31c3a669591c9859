"""The Bitbucket simulator: generated world, HTTP behaviour, faults, files."""

from __future__ import annotations

import csv
import ipaddress
import json
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from collector.normalize.dc import normalize_dc
from collector.simulator import NetworkSite, World, build_world
from collector.simulator.__main__ import main as cli_main
from collector.simulator.faults import Faults
from collector.simulator.files import iter_access_lines
from collector.simulator.server import SimClock, SimulatorServer
from tests.conftest import SHARED_DATA

END = datetime(2025, 6, 4, 15, 0, tzinfo=UTC)
EVENTS = "/rest/auditing/1.0/events"
SIGMA_DIR = SHARED_DATA / "sigma"


@pytest.fixture(scope="module")
def world() -> World:
    """A small world shared by the read-only tests."""
    return build_world(11, users=60, days=1.5, end=END)


@pytest.fixture
def server(world: World) -> Iterator[SimulatorServer]:
    """A fresh simulator on a free loopback port."""
    with SimulatorServer(world, token="t0k") as running:
        yield running


def _client(server: SimulatorServer, token: str = "t0k") -> httpx.Client:
    return httpx.Client(
        base_url=server.base_url,
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def _all_dc_pages(
    client: httpx.Client, params: dict[str, Any]
) -> list[list[dict[str, Any]]]:
    pages = []
    cursor: str | None = None
    for _ in range(1000):
        query = dict(params)
        if cursor:
            query["pageCursor"] = cursor
        reply = client.get(EVENTS, params=query)
        assert reply.status_code == 200
        body = reply.json()
        pages.append(body["entities"])
        if body["pagingInfo"]["lastPage"]:
            return pages
        cursor = body["pagingInfo"]["nextPageCursor"]
    raise AssertionError("paging never ended")


def _window_entities(world: World, begin: datetime, end: datetime) -> list[str]:
    low, high = int(begin.timestamp() * 1000), int(end.timestamp() * 1000)
    return [
        json.dumps(e.rest_entity(), sort_keys=True)
        for e in world.dc_events
        if low <= e.epoch_ms <= high
    ]


def test_world_is_deterministic_for_a_seed() -> None:
    """The same seed and end give the same records; another seed does not."""
    first = build_world(3, users=30, days=1.2, end=END)
    second = build_world(3, users=30, days=1.2, end=END)
    other = build_world(4, users=30, days=1.2, end=END)

    def digest(w: World) -> list[Any]:
        return [
            [e.rest_entity() for e in w.dc_events],
            [e.rendered() for e in w.cloud_events],
            [line for op in w.git_ops for line in op.lines()],
        ]

    assert digest(first) == digest(second)
    assert digest(first) != digest(other)


def test_default_world_size_and_speed() -> None:
    """The demo-sized world has 10k-30k DC events and builds in about a second."""
    began = time.perf_counter()
    big = build_world(7, end=END)
    elapsed = time.perf_counter() - began

    assert elapsed < 5
    assert 10_000 <= len(big.dc_events) <= 30_000
    assert len(big.git_ops) >= 1_500
    assert 1_000 <= len(big.cloud_events) <= 10_000
    assert len([p for p in big.people if p.human]) == 300


def test_both_dc_shapes_normalize_to_one_id(world: World) -> None:
    """The REST entity and the file line of each event get the same content id."""
    for event in world.dc_events[::7]:
        rest = event.rest_entity()
        line = event.file_line()
        assert "area" not in rest["type"]
        assert {"area", "level"} <= set(line["auditType"])
        assert line["version"] == "1.0"
        assert rest["timestamp"].endswith("Z")
        from_api = normalize_dc(rest, instance="dc-sim", source_kind="dc_api")
        from_file = normalize_dc(line, instance="dc-sim", source_kind="dc_file")
        assert from_api.id == from_file.id
        assert from_api.action == from_file.action


def test_world_has_same_millisecond_and_empty_source_events(world: World) -> None:
    """Same-ms events, empty-string sources and late arrivals all occur."""
    per_ms = Counter(e.epoch_ms for e in world.dc_events)
    sources = [e.rest_entity().get("source") for e in world.dc_events]
    late = [e for e in world.dc_events if e.visible_ms > e.epoch_ms]

    assert max(per_ms.values()) >= 2
    assert "" in sources
    assert None in sources
    assert len(late) > 10
    assert len({e.seq for e in world.dc_events}) == len(world.dc_events)


def test_dc_pages_are_newest_first_and_from_is_inclusive(
    world: World, server: SimulatorServer
) -> None:
    """Entities come newest first and an event exactly at ``from`` is returned."""
    pivot = world.dc_events[len(world.dc_events) // 2]
    with _client(server) as client:
        body = client.get(
            EVENTS, params={"from": pivot.iso(), "to": pivot.iso(), "limit": 50}
        ).json()
        stamps = [
            e["timestamp"]
            for e in client.get(EVENTS, params={"limit": 300}).json()["entities"]
        ]

    assert pivot.rest_entity() in body["entities"]
    assert stamps == sorted(stamps, reverse=True)


def test_dc_cursor_pages_cover_the_window_once(
    world: World, server: SimulatorServer
) -> None:
    """Cursor paging returns every event in the window exactly once."""
    begin, end = world.start + timedelta(hours=6), world.end
    params = {"from": begin.isoformat(), "to": end.isoformat(), "limit": 377}
    with _client(server) as client:
        pages = _all_dc_pages(client, params)

    served = [json.dumps(e, sort_keys=True) for page in pages for e in page]
    assert len(pages) > 3
    assert len(served) == len(set(served))
    assert sorted(served) == sorted(_window_entities(world, begin, end))


def test_dc_paging_info_shape(server: SimulatorServer) -> None:
    """A middle page carries the cursor and a link without from/to."""
    with _client(server) as client:
        body = client.get(
            EVENTS, params={"from": "2025-06-04T00:00:00+00:00", "limit": 5}
        ).json()
        too_many = client.get(EVENTS, params={"limit": 5000}).json()

    paging = body["pagingInfo"]
    assert paging["lastPage"] is False
    assert paging["size"] == 5
    assert paging["nextPageOffset"] == 5
    millis, seq = paging["nextPageCursor"].split(",")
    assert int(millis) > 0 and int(seq) > 0
    assert "from=" not in paging["nextPageLink"]
    assert "pageCursor=" in paging["nextPageLink"]
    assert too_many["pagingInfo"]["size"] == 1000


def test_dc_zone_less_from_returns_nothing(server: SimulatorServer) -> None:
    """A ``from`` without an offset answers 200 with no records (the Jira pitfall)."""
    with _client(server) as client:
        naive = client.get(EVENTS, params={"from": "2025-06-04T08:37:30.699"})
        zoned = client.get(EVENTS, params={"from": "2025-06-04T08:37:30.699+00:00"})
        broken = client.get(EVENTS, params={"from": "yesterday"})

    assert naive.status_code == 200
    assert naive.json()["entities"] == []
    assert zoned.json()["entities"]
    assert broken.status_code == 400


def test_dc_cursor_can_be_an_object(world: World) -> None:
    """With ``cursor_object`` the next cursor comes as ``{"cursor": ...}``."""
    with (
        SimulatorServer(world, cursor_object=True) as running,
        httpx.Client(base_url=running.base_url) as client,
    ):
        paging = client.get(EVENTS, params={"limit": 3}).json()["pagingInfo"]

    assert set(paging["nextPageCursor"]) == {"cursor"}


def test_dc_auth_is_enforced(world: World) -> None:
    """Wrong credentials get 401; Basic and Bearer both work when configured."""
    with SimulatorServer(world, token="right", basic=("auditor", "pw")) as running:
        with _client(running, token="wrong") as client:
            assert client.get(EVENTS).status_code == 401
        with _client(running, token="right") as client:
            assert client.get(EVENTS, params={"limit": 1}).status_code == 200
        with httpx.Client(base_url=running.base_url, auth=("auditor", "pw")) as client:
            assert client.get(EVENTS, params={"limit": 1}).status_code == 200
        with httpx.Client(base_url=running.base_url, auth=("auditor", "no")) as client:
            assert client.get(EVENTS).status_code == 401


def test_each_dc_request_creates_a_search_event(world: World) -> None:
    """A request adds an "Audit Log search performed" by the requesting account."""
    with (
        SimulatorServer(world, basic=("auditor", "pw")) as running,
        httpx.Client(base_url=running.base_url, auth=("auditor", "pw")) as client,
    ):
        client.get(EVENTS, params={"limit": 2})
        newest = client.get(EVENTS, params={"limit": 1}).json()["entities"][0]

    assert newest["type"]["action"] == "Audit Log search performed"
    assert newest["author"]["name"] == "auditor"
    assert newest["source"] == "127.0.0.1"


def test_late_arrivals_appear_only_later(world: World) -> None:
    """A late event is absent before its visible time and present after it."""
    late = next(
        e
        for e in reversed(world.dc_events)
        if e.visible_ms - e.epoch_ms > 30_000 and e.story is None
    )
    moment = datetime.fromtimestamp((late.epoch_ms + 1_000) / 1000, UTC)
    clock = SimClock.frozen(moment)
    window = {"from": late.iso(), "to": late.iso()}
    with (
        SimulatorServer(world, clock=clock, search_events=False) as running,
        httpx.Client(base_url=running.base_url) as client,
    ):
        before = client.get(EVENTS, params=window).json()["entities"]
        client.post(
            "/__sim/clock", json={"advance_s": (late.visible_ms - late.epoch_ms) / 1000}
        )
        after = client.get(EVENTS, params=window).json()["entities"]

    assert late.rest_entity() not in before
    assert late.rest_entity() in after


def test_served_ids_match_the_collector_hash(world: World) -> None:
    """After a full read, the served ids equal the ids of every visible event."""
    with (
        SimulatorServer(world, search_events=False) as running,
        httpx.Client(base_url=running.base_url) as client,
    ):
        _all_dc_pages(client, {"limit": 1000})
        served = client.get("/__sim/served", params={"instance": "x"}).json()

    assert set(served["dc"]) == running.expected_dc_ids("x")
    assert set(served["dc"]) == world.expected_dc_ids("x")


def _cloud_path(world: World) -> str:
    return f"/admin/v1/orgs/{world.org_id}/events-stream"


def test_cloud_pages_to_a_terminal_page(world: World, server: SimulatorServer) -> None:
    """Cursor paging is ascending by processedAt and ends with an empty page."""
    pages: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 250, "from": 0}
    with _client(server) as client:
        for _ in range(100):
            body = client.get(_cloud_path(world), params=params).json()
            pages.append(body)
            if body["meta"]["next"] is None:
                break
            params = {"cursor": body["meta"]["next"]}

    terminal = pages[-1]
    data = [item for page in pages for item in page["data"]]
    processed = [item["attributes"]["processedAt"] for item in data]
    assert terminal["data"] == [] and terminal["links"] == {}
    assert all(p["links"]["next"].startswith(server.base_url) for p in pages[:-1])
    assert processed == sorted(processed)
    assert len({item["id"] for item in data}) == len(data) == len(world.cloud_events)


def test_cloud_requires_bearer_and_limits_rate(world: World) -> None:
    """No token gives 401; past the per-minute budget the API answers 429."""
    with SimulatorServer(world, token="k", cloud_rate_per_min=5) as running:
        with httpx.Client(base_url=running.base_url) as anonymous:
            assert anonymous.get(_cloud_path(world)).status_code == 401
        with _client(running, token="k") as client:
            codes = [
                client.get(_cloud_path(world), params={"limit": 1}) for _ in range(6)
            ]

    assert [c.status_code for c in codes[:5]] == [200] * 5
    assert codes[5].status_code == 429
    assert int(codes[5].headers["Retry-After"]) >= 1


def _faulty(world: World, **switches: Any) -> SimulatorServer:
    return SimulatorServer(world, faults=Faults(**switches), search_events=False)


def test_fault_rate_limit_and_transient_errors(world: World) -> None:
    """Every Nth request answers 429 with Retry-After, or 500."""
    with (
        _faulty(world, rate_limit_every=3, retry_after_s=2) as running,
        httpx.Client(base_url=running.base_url) as client,
    ):
        codes = [client.get(EVENTS).status_code for _ in range(6)]
        limited = client.get(EVENTS, params={"limit": 1})
    assert codes == [200, 200, 429, 200, 200, 429]
    assert limited.status_code == 200

    with (
        _faulty(world, error_every=2) as running,
        httpx.Client(base_url=running.base_url) as client,
    ):
        codes = [client.get(EVENTS).status_code for _ in range(4)]
    assert codes == [200, 500, 200, 500]


def test_fault_poison_page_fails_forever(world: World) -> None:
    """The chosen page index answers 500 every time; page 0 still works."""
    with (
        _faulty(world, fail_page=1) as running,
        httpx.Client(base_url=running.base_url) as client,
    ):
        first = client.get(EVENTS, params={"limit": 10}).json()
        cursor = first["pagingInfo"]["nextPageCursor"]
        again = [
            client.get(EVENTS, params={"limit": 10, "pageCursor": cursor}).status_code
            for _ in range(3)
        ]
        cloud = client.get(_cloud_path(world), params={"limit": 10}).json()
        cloud_next = client.get(
            _cloud_path(world), params={"cursor": cloud["meta"]["next"]}
        )

    assert again == [500, 500, 500]
    assert cloud_next.status_code == 500


@pytest.mark.parametrize(
    ("switches", "error"),
    [
        ({"truncated_json": True}, json.JSONDecodeError),
        ({"deep_nesting": 10_000}, RecursionError),
        ({"invalid_utf8": True}, UnicodeDecodeError),
    ],
)
def test_fault_bad_bodies(
    world: World, switches: dict[str, Any], error: type[Exception]
) -> None:
    """Broken bodies fail to parse the way the switch says."""
    with (
        _faulty(world, **switches) as running,
        httpx.Client(base_url=running.base_url) as client,
    ):
        raw = client.get(EVENTS, params={"limit": 5}).content

    with pytest.raises(error):
        json.loads(raw.decode("utf-8"))


def test_fault_huge_body_is_valid_json_of_the_size(world: World) -> None:
    """The huge body is as large as asked and still parses."""
    with (
        _faulty(world, huge_body_mb=2, targets=("cloud",)) as running,
        httpx.Client(base_url=running.base_url) as client,
    ):
        reply = client.get(_cloud_path(world))
        clean = client.get(EVENTS, params={"limit": 1})

    assert len(reply.content) > 2 * 1024 * 1024
    assert json.loads(reply.content)["meta"]["next"] is None
    assert clean.json()["pagingInfo"]["size"] == 1


def test_fault_slow_loris_and_latency(world: World) -> None:
    """Slow-loris bodies never finish within a read timeout; latency delays replies."""
    timeout = httpx.Timeout(5, read=0.3)
    with (
        _faulty(world, slow_loris=True) as running,
        httpx.Client(base_url=running.base_url, timeout=timeout) as client,
        pytest.raises(httpx.ReadTimeout),
        client.stream("GET", EVENTS, params={"limit": 50}) as reply,
    ):
        assert reply.status_code == 200
        reply.read()

    with (
        _faulty(world, latency_s=0.3) as running,
        httpx.Client(base_url=running.base_url) as client,
    ):
        began = time.perf_counter()
        client.get(EVENTS, params={"limit": 1})
    assert time.perf_counter() - began >= 0.3


def test_fault_cursor_loop_repeats_the_cursor(world: World) -> None:
    """With ``cursor_loop`` the next cursor never moves, on DC and Cloud."""
    with (
        _faulty(world, cursor_loop=True) as running,
        httpx.Client(base_url=running.base_url) as client,
    ):
        first = client.get(EVENTS, params={"limit": 5}).json()["pagingInfo"]
        params = {"limit": 5, "pageCursor": first["nextPageCursor"]}
        second = client.get(EVENTS, params=params).json()["pagingInfo"]
        one = client.get(_cloud_path(world), params={"limit": 5}).json()["meta"]
        two = client.get(_cloud_path(world), params={"cursor": one["next"]}).json()

    assert first["nextPageCursor"] == second["nextPageCursor"]
    assert two["meta"]["next"] == one["next"]


def test_faults_parse_from_the_cli_form() -> None:
    """The CLI fault string sets the named switches."""
    faults = Faults.parse("rate_limit_every=5,fail_page=2,truncated_json,targets=dc")
    assert faults.rate_limit_every == 5
    assert faults.fail_page == 2
    assert faults.truncated_json is True
    assert faults.targets == ("dc",)
    with pytest.raises(ValueError, match="unknown fault"):
        Faults.parse("explode=1")


EXPECTED_STORIES = {
    "brute_force": "bb.brute_force",
    "mass_clone": "bb.mass_clone",
    "impossible_travel": "bb.impossible_travel",
    "permission_escalation": "bb.permission_escalation",
    "protections_disabled": "bb.protection_disabled",
    "data_export": "sigma:195e1b9d-bfc2-4ffa-ab4e-35aef69815f8",
    "departed_identity": "bb.inactive_identity",
    "risk_aggregation": "bb.risk_aggregation",
}


def test_stories_exist_with_their_rules(world: World) -> None:
    """Every story is listed with its rule and comes after a day of history."""
    for name, rule in EXPECTED_STORIES.items():
        story = world.story(name)
        assert rule in story.rule_ids
        assert story.start - world.start >= timedelta(days=1)
        assert story.end <= world.end
        assert story.actor

    travel = world.story("impossible_travel")
    assert "bb.ip_outside_allowlist" in travel.rule_ids
    shared = {s.actor for s in world.stories if s.actor == travel.actor}
    rules = {
        r
        for s in world.stories
        if s.actor == travel.actor
        for r in s.rule_ids
        if r.startswith("bb.") and r != "bb.risk_aggregation"
    }
    assert shared == {travel.actor}
    assert len(rules) >= 5


def test_brute_force_and_mass_clone_meet_their_thresholds(world: World) -> None:
    """40 failures in 5 min from one IP; 30+ distinct clones in about 5 min."""
    brute = world.story("brute_force")
    failures = [
        e
        for e in world.dc_events
        if e.story == "brute_force" and e.kind.action == "User login failed"
    ]
    assert len(failures) == 40
    assert {e.source for e in failures} == {brute.source_ip}
    assert failures[-1].epoch_ms - failures[0].epoch_ms <= 300_000

    clones = [g for g in world.git_ops if g.story == "mass_clone"]
    assert len({(g.project, g.repo) for g in clones}) >= 30
    assert clones[-1].start_ms - clones[0].start_ms <= 300_000


def test_escalation_and_protection_events(world: World) -> None:
    """Self-grant of SYS_ADMIN, a read->admin token change, lowered coverage."""
    actor = world.story("permission_escalation").actor
    story = [e for e in world.dc_events if e.story == "permission_escalation"]
    grant = next(e for e in story if e.kind.action == "Global permission granted")
    assert grant.author.name == actor
    assert {o["name"] for o in grant.affected if o["type"] == "USER"} == {actor}
    change = next(e for e in story if e.changed)
    assert change.changed[0]["from"] == "PROJECT_READ, REPO_READ"
    assert change.changed[0]["to"] == "PROJECT_ADMIN, REPO_ADMIN"

    protections = [e for e in world.dc_events if e.story == "protections_disabled"]
    values = [c for e in protections for c in e.changed]
    assert {"from": "security : full", "to": "security : base"}.items() <= values[
        0
    ].items()
    assert any(c.get("to") == "7 Days" for c in values)


def test_sigma_strings_match_the_rule_files(world: World) -> None:
    """Each Sigma id on a story selects at least one of that story's events."""
    rules = {}
    for path in SIGMA_DIR.glob("*.yml"):
        rule = yaml.safe_load(path.read_text())
        rules[rule["id"]] = rule["detection"]["selection"]

    for story in world.stories:
        events = [e for e in world.dc_events if e.story == story.name]
        for rule_id in story.rule_ids:
            if not rule_id.startswith("sigma:"):
                continue
            selection = rules[rule_id.removeprefix("sigma:")]
            categories = _as_list(selection["auditType.category"])
            actions = _as_list(selection["auditType.action"])
            assert any(
                e.kind.category in categories and e.kind.action in actions
                for e in events
            ), rule_id


def _as_list(value: Any) -> list[str]:
    return value if isinstance(value, list) else [value]


def test_departed_actor_is_terminated_and_ips_have_sites(world: World) -> None:
    """The departed actor is terminated and every story IP sits in a known site."""
    departed = world.story("departed_identity")
    assert world.person(departed.actor).status == "terminated"
    networks = [ipaddress.ip_network(site.cidr) for site in world.networks]
    for story in world.stories:
        assert story.source_ip is not None
        address = ipaddress.ip_address(story.source_ip)
        assert any(address in net for net in networks)
    zones = {site.zone for site in world.networks}
    assert {"office", "vpn", "ci-runners", "home", "hosting", "attacker"} <= zones
    assert all(isinstance(site, NetworkSite) for site in world.networks)


def test_directory_exports_and_repo_tags(world: World, tmp_path: Path) -> None:
    """The directory writes as CSV and JSONL; PHI and crown jewels are tagged."""
    world.write_directory_csv(tmp_path / "d.csv")
    world.write_directory_jsonl(tmp_path / "d.jsonl")

    with (tmp_path / "d.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    lines = (tmp_path / "d.jsonl").read_text().splitlines()
    assert len(rows) == len(lines) == len(world.people)
    assert {r["status"] for r in rows} >= {"active", "terminated"}
    assert json.loads(lines[0])["groups"]
    tags = world.repo_tags()
    assert "phi" in tags["projects"]["PHI"]["tags"]
    assert "crown-jewel" in tags["repositories"]["PAY/ledger"]["tags"]


def test_files_are_written_rotated_and_parseable(world: World, tmp_path: Path) -> None:
    """Audit files hold every event oldest first; access lines are i/o pairs."""
    paths = world.write_files(tmp_path, max_file_bytes=400_000)

    audit = paths["audit"]
    assert len(audit) >= 3
    assert [p.name for p in audit] == sorted(p.name for p in audit)
    records = [json.loads(line) for p in audit for line in p.read_text().splitlines()]
    stamps = [(r["timestamp"]["epochSecond"], r["timestamp"]["nano"]) for r in records]
    assert stamps == sorted(stamps)
    assert len(records) == len(world.dc_events)

    access = list(iter_access_lines(tmp_path))
    fields = [line.split(" | ") for line in access]
    assert all(len(f) == 13 for f in fields)
    starts = Counter(f[2][2:] for f in fields if f[2].startswith("i@"))
    ends = Counter(f[2][2:] for f in fields if f[2].startswith("o@"))
    assert starts == ends
    labels = {f[10].split(",")[0] for f in fields if f[2].startswith("o@")}
    assert {"clone", "shallow clone", "fetch", "push", "refs"} <= labels
    assert paths["access"][-1].name == "atlassian-bitbucket-access.log"
    assert any(f[1] == "ssh" and "git-upload-pack" in f[5] for f in fields)


def test_cli_writes_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``write-files`` writes logs, directory, tags and stories."""
    status = cli_main(
        [
            "write-files",
            str(tmp_path),
            "--users",
            "25",
            "--days",
            "1.2",
            "--end",
            "2025-06-04T15:00:00Z",
        ]
    )

    summary = json.loads(capsys.readouterr().out)
    assert status == 0
    assert summary["audit"] and summary["access"]
    for name in ("directory.csv", "directory.jsonl", "repo_tags.json", "stories.jsonl"):
        assert (tmp_path / name).stat().st_size > 0
