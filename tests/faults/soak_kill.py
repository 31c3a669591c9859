"""Soak: SIGKILL `bbaudit run` at random moments, restart, look for lost ids.

Runs the project's Bitbucket simulator and either the JSONL file sink or the
syslog sink over RELP to a hostile loopback RELP server (random refusals,
serverclose and hang-ups mid-batch). Between kills nothing is drained. At the
end one `--once` run catches up; then every id the simulator served must be in
the sink (for RELP: must have been answered 200 by the mock). Missing = LOSS.

    .venv/bin/python -m tests.faults.soak_kill --kills 15 --sink file
    .venv/bin/python -m tests.faults.soak_kill --kills 15 --sink relp
    options: --seed N, --commit-interval 3s, --low 0.3 --high 4
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from tests.faults.harness import (
    DELIVERY_TUNING,
    SHORT,
    FaultBench,
    Sink,
    file_sink,
    make_world,
    seeded_kill_delays,
)

_ID = re.compile(rb'\[bbaudit@32473 id="([^"]+)"')


class HostileRelp:
    """A RELP server on a thread: answers 200 mostly, misbehaves at random."""

    def __init__(self, seed: int, fault_rate: float) -> None:
        self.acked: list[str] = []
        self.port = 0
        self._rng = random.Random(seed)
        self._rate = fault_rate
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> HostileRelp:
        self._thread.start()
        self._ready.wait(5)
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", 0)
        )
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, reader: Any, writer: Any) -> None:
        try:
            while True:
                head = await reader.readuntil(b" ")
                command = (await reader.readuntil(b" "))[:-1]
                digits = b""
                while (ch := await reader.readexactly(1)) not in b" \n":
                    digits += ch
                data = b""
                if ch == b" ":
                    data = await reader.readexactly(int(digits))
                    await reader.readexactly(1)
                txnr = int(head[:-1])
                if command == b"open":
                    body = b"200 OK\nrelp_version=0\ncommands=syslog"
                elif command == b"close":
                    writer.write(b"%d rsp 0\n0 serverclose 0\n" % txnr)
                    await writer.drain()
                    return
                else:
                    roll = self._rng.random()
                    if roll < self._rate / 3:
                        body = b"503 busy"
                    elif roll < 2 * self._rate / 3:
                        writer.write(b"0 serverclose 0\n")
                        await writer.drain()
                        return
                    elif roll < self._rate:
                        return  # hang up, unanswered
                    else:
                        match = _ID.search(data)
                        if match:
                            self.acked.append(match.group(1).decode())
                        body = b"200 OK"
                writer.write(b"%d rsp %d %s\n" % (txnr, len(body), body))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()


def relp_sink(server: HostileRelp) -> Sink:
    settings = {
        "kind": "syslog",
        "name": "relp",
        "host": "127.0.0.1",
        "port": server.port,
        "transport": "relp",
        "format": "ecs",
        "receives": ["events"],
        "timeout": "2s",
        **DELIVERY_TUNING,
    }
    return Sink("syslog", settings, lambda: list(server.acked))


def spooled(work: Path) -> int:
    """Records held in any sink spool under the workdir."""
    import sqlite3

    total = 0
    for path in work.rglob("spool.db"):
        with sqlite3.connect(path) as db:
            total += db.execute(
                "SELECT COALESCE(SUM(records), 0) FROM batches"
            ).fetchone()[0]
    return total


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sink", choices=["file", "relp"], default="file")
    parser.add_argument("--commit-interval", default="0.5s")
    parser.add_argument("--low", type=float, default=0.3)
    parser.add_argument("--high", type=float, default=3.0)
    parser.add_argument("--fault-rate", type=float, default=0.02)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--days", type=float, default=3.0)
    args = parser.parse_args()

    scale = dataclasses.replace(SHORT, users=args.users, days=args.days)
    world = make_world(scale)
    work = Path(tempfile.mkdtemp(prefix="adv-kill-"))
    with FaultBench(world, work / "bench", scale) as bench:
        relp = None
        if args.sink == "file":
            sink = file_sink(work / "out.jsonl")
        else:
            relp = HostileRelp(args.seed, args.fault_rate).start()
            sink = relp_sink(relp)
        config = bench.configure(sink)
        doc = yaml.safe_load(config.read_text())
        doc["pipeline"]["commit_interval"] = args.commit_interval
        config.write_text(yaml.safe_dump(doc, sort_keys=False))
        pipeline = bench.pipeline
        for delay in seeded_kill_delays(args.seed, args.kills, args.low, args.high):
            pipeline.start()
            time.sleep(delay)
            pipeline.kill()
        code, took = pipeline.run_once(120)
        row = bench.result("kill loop", took)
        print("log events:", dict(bench.log_events().most_common(12)))
        lost = bench.served_ids() - set(bench.delivered())
        print(
            f"workdir={work} exit={code} served={row.served} "
            f"delivered={row.delivered} dup={row.duplicated} lost={row.lost} "
            f"unserved={row.unserved} kills={pipeline.kills}"
        )
        if lost:
            print("LOST ids (first 10):", sorted(lost)[:10])
            print("records still in spool:", spooled(work))
            if relp is not None:
                relp._rate = 0.0  # a healthy receiver from now on
            for attempt in range(2):
                code, took = pipeline.run_once(120)
                lost = bench.served_ids() - set(bench.delivered())
                print(
                    f"extra --once #{attempt + 1} (healthy receiver): exit={code} "
                    f"took={took:.1f}s lost={len(lost)} spool={spooled(work)}"
                )
        return 1 if lost or code != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
