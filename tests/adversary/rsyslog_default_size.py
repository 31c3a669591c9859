"""Adversary: the syslog sink's default 64 KiB stream limit vs a stock rsyslog.

rsyslog's built-in maxMessageSize is 8 KiB (the project's fixture raises it to
256k). This starts rsyslogd with the project's fixture config minus that
setting, sends records of growing size over RELP (and plain TCP for
comparison) with the sink's default ``max_stream_bytes``, and prints whether
``send`` reported success and what length actually arrived.

    .venv/bin/python -m tests.adversary.rsyslog_default_size
Also tries content with NUL, CR/LF, U+2028 and a lone surrogate-ish byte run
in CEF and JSON formats over RELP and checks one line arrives per record.
"""

from __future__ import annotations

import asyncio
import re
import sys
import tempfile
from pathlib import Path

from collector.model import Record
from sinks.syslog import SyslogSink, SyslogSinkSettings
from tests.sink_records import make_alert, make_event
from tests.syslog_receivers import configure_rsyslog, make_pki

_ID = re.compile(r'id="([^"]+)"')


def sink(port: int, transport: str, **extra: object) -> SyslogSink:
    values: dict[str, object] = {
        "kind": "syslog",
        "name": "s",
        "host": "127.0.0.1",
        "port": port,
        "transport": transport,
        "hostname": "h",
        "timeout": 3,
        "format": "raw",
        **extra,
    }
    return SyslogSink(SyslogSinkSettings(**values))  # type: ignore[arg-type]


async def size_probe(relp_port: int, tcp_port: int, lines: callable) -> int:  # type: ignore[valid-type]
    problems = 0
    for transport, port in (("relp", relp_port), ("tcp", tcp_port)):
        for size in (4_000, 9_000, 20_000, 60_000):
            before = len(lines())
            s = sink(port, transport)
            record = make_event(size, note="x" * size)
            encoded = s.encode(record)
            try:
                await s.send([record])
                outcome = "send ok"
            except Exception as exc:
                outcome = f"send failed: {exc!r}"[:120]
            await s.aclose()
            await asyncio.sleep(0.5)
            got = lines()[before:]
            arrived = [len(x.encode()) for x in got]
            intact = bool(got) and got[0].encode() == encoded
            print(
                f"{transport:5} note={size:6} sent={len(encoded):6} "
                f"{outcome}; arrived lines={arrived} intact={intact}"
            )
            if outcome == "send ok" and not intact:
                problems += 1
    return problems


async def content_probe(relp_port: int, lines: callable) -> int:  # type: ignore[valid-type]
    problems = 0
    notes = ["a\x00b", "c\r\nd\ne", "f\u2028g\u0085h", "i\x1bj\x7fk", '] " \\ = |']
    for fmt in ("raw", "cef"):
        s = sink(relp_port, "relp", format=fmt)
        before = len(lines())
        records: list[Record] = []
        for i, note in enumerate(notes):
            records.append(make_event(100 + i, note=note))
            records.append(make_alert(200 + i, note=note))
        await s.send(records)
        await s.aclose()
        await asyncio.sleep(0.5)
        got = lines()[before:]
        ids = [m.group(1) for x in got if (m := _ID.search(x))]
        ok = sorted(ids) == sorted(r.id for r in records) and len(got) == len(records)
        print(f"content fmt={fmt}: records={len(records)} lines={len(got)} ok={ok}")
        if not ok:
            problems += 1
            for line in got[:12]:
                print("   ", line[:160])
    return problems


async def window_probe(relp_port: int, lines: callable) -> int:  # type: ignore[valid-type]
    """The largest allowed window (1024) and 20k messages in one send."""
    s = sink(relp_port, "relp", relp_window=1024)
    before = len(lines())
    records: list[Record] = [make_event(i, note="w" * 300) for i in range(20_000)]
    began = asyncio.get_running_loop().time()
    try:
        await s.send(records)
        outcome = "ok"
    except Exception as exc:
        outcome = repr(exc)[:200]
    took = asyncio.get_running_loop().time() - began
    await s.aclose()
    await asyncio.sleep(1.0)
    got = lines()[before:]
    ids = {m.group(1) for x in got if (m := _ID.search(x))}
    missing = len({r.id for r in records} - ids)
    print(
        f"window 1024 x 20000: send {outcome} in {took:.1f}s; lines={len(got)} missing={missing}"
    )
    return 1 if (outcome == "ok" and missing) else 0


async def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="adv-rsyslog-"))
    (work / "pki").mkdir()
    pki = make_pki(work / "pki")
    receiver = configure_rsyslog(work, pki)
    conf = work / "rsyslog.conf"
    conf.write_text(conf.read_text().replace(' maxMessageSize="256k"', ""))
    receiver.start()
    try:
        problems = await size_probe(
            receiver.relp_port, receiver.tcp_port, receiver.lines
        )
        problems += await content_probe(receiver.relp_port, receiver.lines)
        problems += await window_probe(receiver.relp_port, receiver.lines)
    finally:
        receiver.stop()
    print("rsyslogd output:", (work / "rsyslogd.out").read_text()[-1500:])
    print(f"work={work} problems={problems}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
