"""End-to-end throughput and memory of the pipeline, per sink, against a
minimal forwarder measured in the same run.

The full path replays generated Data Center audit records through the real
``collector.pipeline.Pipeline``: parse, normalize, dedupe, enrich (zones, when
the enrichers package is importable), detect (the rule engine, when
importable), route, render (ECS) and deliver through a ``DeliveryChannel``.
The minimal forwarder reads the same records (orjson in), writes them out
unchanged (orjson out) with the same client library to the same receiver.

Records are generated lazily, so memory must not grow with the number of
events; peak RSS (VmHWM) is sampled after 100k events and at the end. The
receivers run in processes of their own, so the RSS is the measured path's.

Where a write can return before the receiver has the records (syslog over
TCP), an ``Arrival`` waits until the receiver counted them all before the
clock stops, so every rate is end to end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from collector.app import tune_gc
from collector.config import PipelineSettings
from collector.metrics import Metrics
from collector.normalize.dc import normalize_dc
from collector.pipeline import Pipeline
from collector.plugins import Runtime
from collector.stages import SourceBatch
from collector.state import StateStore

# The vendored public samples (tests/fixtures/shared), present in every clone.
SAMPLES = Path(__file__).resolve().parents[1] / "tests/fixtures/shared/bitbucket"
BATCH = 500
RSS_MARK = 100_000
STALL = 15.0  # seconds without progress after which arrival stops waiting

Arrival = Callable[[int], Awaitable[int]]
"""Given how many records were sent, wait for the receiver; how many it has."""


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def sample_records() -> list[dict[str, Any]]:
    """The DC audit-file sample lines, the templates of generated records."""
    path = SAMPLES / "elastic_bitbucket_dc_audit_file_lines.ndjson"
    return [orjson.loads(line) for line in path.read_text().splitlines() if line]


USERS = 300  # a busy instance: a few hundred people
HOME_POOL = 200  # public home/hotel addresses seen over the run
# "random" (the old generator: 5000 users, 16M distinct addresses) stresses
# the state caps and the caches; "pool" is what an instance really sends.
PROFILES = ("pool", "random")


def generate(count: int, seed: int = 7, profile: str = "pool") -> Iterator[bytes]:
    """``count`` JSON lines of DC records with varied actors, IPs and times.

    ``pool``: ``USERS`` people, each at a fixed office address, a VPN address,
    and one event in twenty from a shared pool of public home addresses.
    ``random``: 5000 actors and an address drawn at random per event.
    """
    rng = random.Random(seed)
    templates = sample_records()
    base = 1_780_000_000
    for i in range(count):
        record = dict(templates[i % len(templates)])
        if profile == "random":
            user = i % 5000
            source = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{i % 250 + 1}"
        else:
            user = rng.randrange(USERS)
            source = _pool_address(user, rng)
        record["author"] = {"id": str(user), "name": f"user{user}", "type": "NORMAL"}
        record["source"] = source
        record["timestamp"] = {"epochSecond": base + i // 50, "nano": (i % 50) * 1000}
        yield orjson.dumps(record)


def _pool_address(user: int, rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.05:
        return f"198.51.{100 + rng.randrange(2)}.{rng.randrange(HOME_POOL // 2) + 1}"
    if roll < 0.25:
        return f"10.200.{user // 250}.{user % 250 + 1}"  # VPN
    return f"10.10.{user // 250}.{user % 250 + 1}"  # office


class ReplaySource:
    """A source over generated lines: parses and normalizes like the file source."""

    kind = "bench"

    def __init__(
        self, count: int, progress: Callable[[int], None], profile: str = "pool"
    ) -> None:
        self.name = "bench"
        self.started: float | None = None
        self._count = count
        self._progress = progress
        self._profile = profile

    async def batches(
        self, checkpoint: Any | None, *, follow: bool
    ) -> AsyncIterator[SourceBatch]:
        """Batches of ``BATCH`` normalized events; checkpoint = lines read."""
        self.started = time.perf_counter()  # start-up of sinks/rules excluded
        events = []
        read = 0
        for line in generate(self._count, profile=self._profile):
            record = orjson.loads(line)
            event = normalize_dc(
                record, instance="bench", source_kind="dc_file", raw_size=len(line)
            )
            events.append(event)
            read += 1
            if len(events) == BATCH:
                yield SourceBatch(self.name, events, checkpoint=read)
                events = []
                self._progress(read)
        if events:
            yield SourceBatch(self.name, events, checkpoint=read, caught_up=True)
        self._progress(read)

    async def aclose(self) -> None:
        """Nothing to release."""


@dataclass(slots=True)
class Result:
    """One measured run."""

    label: str
    events: int
    seconds: float
    rss_at_mark: float
    rss_peak: float
    extras: str = ""
    sent: int = 0
    arrived: int | None = None  # None: the receiver was not asked
    # Peak RSS once half the events were read: against rss_peak it shows
    # whether memory still grows in the second half of the run.
    rss_at_half: float = 0.0

    @property
    def complete(self) -> bool:
        """Every record sent reached the receiver (or nobody could tell)."""
        return self.arrived is None or self.arrived >= self.sent

    @property
    def rate(self) -> float:
        """Events per second."""
        return self.events / self.seconds if self.seconds else 0.0


def _stages(runtime: Runtime) -> tuple[Any, Any, list[str]]:
    """The enrichment chain and detector, if their packages import."""
    notes: list[str] = []
    enrich = detector = None
    try:
        import enrichers  # noqa: F401  (registers the kinds)
        from collector.plugins import ENRICHERS
        from enrichers.chain import EnrichmentChain
        from enrichers.zones import ZonesSettings

        zones = ZonesSettings(
            kind="zones",
            name="zones",
            zones={"office": ["10.0.0.0/9"], "vpn": ["10.128.0.0/9"]},
        )
        enricher = ENRICHERS.get("zones", "bench").factory(zones, runtime)
        enrich = EnrichmentChain([enricher], runtime.metrics, 5.0).enrich
        notes.append("enrich=zones")
    except Exception as exc:  # the bench runs while packages are being built
        notes.append(f"enrich=off({type(exc).__name__})")
    try:
        import detections  # noqa: F401
        from collector.plugins import DETECTORS
        from detections.settings import EngineSettings

        settings = EngineSettings(name="detections")
        detector = DETECTORS.get("engine", "bench").factory(settings, runtime)
        notes.append("detect=engine")
    except Exception as exc:
        notes.append(f"detect=off({type(exc).__name__})")
    return enrich, detector, notes


def reset_peak_rss() -> None:
    """Start VmHWM afresh (Linux ``clear_refs`` 5), so each run has its own peak."""
    # Older kernels refuse: the peak then spans the earlier runs too.
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


async def run_pipeline(
    label: str,
    count: int,
    make_channel: Callable[[Runtime], Any],
    profile: str = "pool",
    arrival: Arrival | None = None,
) -> Result:
    """The full path over ``count`` generated events into one channel.

    The clock starts when the source is first asked for a batch, after the
    sink has connected and the rules are loaded, as the forwarder's does; it
    stops once ``arrival`` (if given) saw every event and alert arrive.
    """
    reset_peak_rss()
    with tempfile.TemporaryDirectory(prefix="bbaudit-bench-") as tmp:
        metrics = Metrics()
        store = StateStore.in_dir(Path(tmp))
        runtime = Runtime(state_dir=Path(tmp), store=store, metrics=metrics)
        enrich, detector, notes = _stages(runtime)
        marks: dict[str, float] = {}

        def progress(read: int) -> None:
            if read >= RSS_MARK and "mark" not in marks:
                marks["mark"] = peak_rss_mib()
            if read >= count // 2 and "half" not in marks:
                marks["half"] = peak_rss_mib()

        tune_gc()  # as run_service does once the stages are loaded
        source = ReplaySource(count, progress, profile)
        pipeline = Pipeline(
            sources=[source],
            channels=[make_channel(runtime)],
            store=store,
            metrics=metrics,
            settings=PipelineSettings(drain_timeout=600),
            enrich=enrich,
            detector=detector,
        )
        stats = await pipeline.run(follow=False)
        sent = stats.new + stats.alerts
        arrived = await arrival(sent) if arrival is not None else None
        seconds = time.perf_counter() - (source.started or time.perf_counter())
        store.close()
    extras = " ".join([*notes, f"alerts={stats.alerts}"])
    mark = marks.get("mark", 0.0)
    result = Result(
        label, stats.new, seconds, mark, peak_rss_mib(), extras, sent, arrived
    )
    result.rss_at_half = marks.get("half", 0.0)
    return result


async def run_forwarder(
    label: str,
    count: int,
    write: Callable[[list[bytes]], Any],
    profile: str = "pool",
    arrival: Arrival | None = None,
    encode: Callable[[Any], bytes] = orjson.dumps,
) -> Result:
    """orjson in, orjson out: the floor any shipper pays, same writer.

    ``encode`` turns a parsed record into what is written (an envelope, a
    syslog message); the clock stops once ``arrival`` saw them all arrive.
    """
    reset_peak_rss()
    mark = 0.0
    started = time.perf_counter()
    batch: list[bytes] = []
    for n, line in enumerate(generate(count, profile=profile), 1):
        batch.append(encode(orjson.loads(line)))
        if len(batch) == BATCH:
            await write(batch)
            batch = []
        if n == RSS_MARK:
            mark = peak_rss_mib()
    if batch:
        await write(batch)
    arrived = await arrival(count) if arrival is not None else None
    seconds = time.perf_counter() - started
    return Result(label, count, seconds, mark, peak_rss_mib(), "", count, arrived)


def arrival(count: Callable[[], int], stall: float = STALL) -> Arrival:
    """An ``Arrival`` over ``count``, a running total kept by the receiver.

    The baseline is read now, so make it right before the run it is for. It
    stops waiting once the receiver has gained nothing for ``stall`` seconds.
    """
    baseline = count()

    async def wait(expected: int) -> int:
        got, last, since = 0, -1, time.monotonic()
        while True:
            got = count() - baseline
            if got >= expected:
                return got
            if got != last:
                last, since = got, time.monotonic()
            elif time.monotonic() - since > stall:
                return got
            await asyncio.sleep(0.01)

    return wait


_COUNT_CHUNK = 1 << 20


class LineCounter:
    """Lines of a file that only grows, read from where the last call stopped."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self._lines = 0

    def __call__(self) -> int:
        """Lines in the file so far (0 while it does not exist)."""
        try:
            with self._path.open("rb") as handle:
                handle.seek(self._offset)
                # In slices: the receiver's output after a 500k run is tens of
                # MB, and reading it whole would show up in the peak RSS.
                while chunk := handle.read(_COUNT_CHUNK):
                    self._offset += len(chunk)
                    self._lines += chunk.count(b"\n")
        except FileNotFoundError:
            return 0
        return self._lines


def file_writer(path: Path) -> Callable[[list[bytes]], Any]:
    """Append lines and fsync per batch, as the file sink does."""
    handle = path.open("ab")

    async def write(lines: list[bytes]) -> None:
        handle.write(b"\n".join(lines) + b"\n")
        handle.flush()
        os.fsync(handle.fileno())

    return write
