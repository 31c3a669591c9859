"""Both HTTP sources against the Bitbucket simulator on loopback."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from structlog.testing import capture_logs

from collector.metrics import Metrics
from collector.simulator.dc_api import dc_ids
from collector.simulator.faults import Faults
from collector.simulator.server import SimulatorServer
from collector.simulator.world import World, build_world
from collector.sources.cloud import CloudOrgSettings, CloudOrgSource
from collector.sources.dc_rest import DcRestSettings, DcRestSource
from tests.fixtures_http import (
    FakeClock,
    assert_ascending,
    collect,
    delivered,
    events_of,
    fresh_events,
)

TOKEN = "sim-token-value"


@pytest.fixture(scope="module")
def world() -> World:
    """A small generated world."""
    return build_world(11, users=40, days=0.5)


@pytest.fixture
def simulator(world: World) -> Iterator[SimulatorServer]:
    """The simulator serving ``world``, stopped after the test."""
    server = SimulatorServer(world, token=TOKEN, basic=("collector", "pw")).start()
    yield server
    server.stop()


def without_own_searches(server: SimulatorServer, world: World) -> set[str]:
    """Ids of the visible DC events, less the collector's own audit searches."""
    visible = server.visible_dc_events()
    own = [
        e
        for e in visible
        if e.author.name == "collector" and e.kind.key.endswith("audit.search")
    ]
    return dc_ids(visible, world.instance) - dc_ids(own, world.instance)


def dc_settings(
    server: SimulatorServer, world: World, **overrides: Any
) -> DcRestSettings:
    """A dc_rest source reading the simulator with basic auth."""
    data: dict[str, Any] = {
        "kind": "dc_rest",
        "name": "sim-dc",
        "base_url": server.base_url,
        "auth": {"username": "collector", "password": "pw"},
        "instance": world.instance,
        "lookback": "2d",
        "limit": 200,
    }
    data.update(overrides)
    return DcRestSettings.model_validate(data)


def sim_clock(server: SimulatorServer) -> FakeClock:
    """A fake clock set to the simulator's now."""
    return FakeClock(datetime.fromtimestamp(server.clock.now_ms() / 1000, UTC))


async def test_dc_source_reads_the_whole_simulated_log(
    simulator: SimulatorServer, world: World
) -> None:
    """One pass delivers every visible DC event except the collector's searches."""
    settings = DcRestSettings.model_validate(
        {
            "kind": "dc_rest",
            "name": "sim-dc",
            "base_url": simulator.base_url,
            "auth": {"username": "collector", "password": "pw"},
            "instance": world.instance,
            "lookback": "2d",
            "limit": 200,
        }
    )
    source = DcRestSource(
        settings, metrics=Metrics(), clock=sim_clock(simulator), rng=random.Random(1)
    )

    batches = await collect(source.batches(None, follow=False))
    await source.aclose()

    got = set(delivered(batches))
    expected = without_own_searches(simulator, world)
    assert len(got) > 100
    assert got == expected
    assert_ascending(events_of(batches))


async def test_dc_source_restarts_from_any_checkpoint_in_order(
    simulator: SimulatorServer, world: World
) -> None:
    """Restarts from checkpoints across a sliced backfill lose nothing, in order."""
    settings = dc_settings(simulator, world, slice="2h", batch_size=50, limit=40)
    clock = sim_clock(simulator)
    source = DcRestSource(settings, metrics=Metrics(), clock=clock)
    batches = await collect(source.batches(None, follow=False))
    await source.aclose()
    expected = without_own_searches(simulator, world)
    assert set(delivered(batches)) == expected

    step = max(1, len(batches) // 5)
    for cut in range(0, len(batches), step):
        seen: set[str] = set()
        delivered(batches[: cut + 1], seen)
        again = DcRestSource(settings, metrics=Metrics(), clock=clock)
        rest = await collect(again.batches(batches[cut].checkpoint, follow=False))
        await again.aclose()

        fresh = fresh_events(rest, seen)
        assert seen >= expected, f"restart after batch {cut}"
        assert_ascending(fresh)


async def test_cloud_source_reads_the_simulated_stream(
    simulator: SimulatorServer,
) -> None:
    """One pass delivers every visible Cloud event exactly once."""
    settings = CloudOrgSettings.model_validate(
        {
            "kind": "cloud_org",
            "name": "sim-cloud",
            "base_url": simulator.base_url,
            "org_id": simulator.org_id,
            "api_key": TOKEN,
            "lookback": "2d",
            "limit": 500,
        }
    )
    source = CloudOrgSource(
        settings, metrics=Metrics(), clock=sim_clock(simulator), rng=random.Random(1)
    )

    batches = await collect(source.batches(None, follow=False))
    await source.aclose()

    ids = delivered(batches)
    assert len(ids) == len(set(ids))
    assert set(ids) == simulator.expected_cloud_ids()


async def test_dc_source_survives_rate_limits_errors_and_poison(world: World) -> None:
    """429s, transient 500s and a poison page index lose no event."""
    faults = Faults(rate_limit_every=4, error_every=7, fail_page=2, targets=("dc",))
    server = SimulatorServer(world, faults=faults, basic=("collector", "pw")).start()
    try:
        settings = DcRestSettings.model_validate(
            {
                "kind": "dc_rest",
                "name": "sim-dc",
                "base_url": server.base_url,
                "auth": {"username": "collector", "password": "pw"},
                "instance": world.instance,
                "lookback": "2d",
                "limit": 100,
                "slice": "6h",
            }
        )
        clock = sim_clock(server)
        source = DcRestSource(
            settings, metrics=Metrics(), clock=clock, rng=random.Random(1)
        )
        with capture_logs() as logs:
            batches = await collect(source.batches(None, follow=False))
        await source.aclose()
    finally:
        server.stop()

    got = set(delivered(batches))
    expected = without_own_searches(server, world)
    assert got <= expected
    assert batches[-1].caught_up
    assert any(e["event"] == "source.page_skipped" for e in logs)
    # A page index that always fails is escaped by narrowing, without a gap.
    assert got == expected
    assert not [e for e in logs if e["event"] == "source.window_skipped"]
