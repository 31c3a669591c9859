"""The HEC emulator in a process of its own, so its CPU is not the bench's.

``python -m bench.hec_server TOKEN`` starts ``tests.hec_receiver.HecReceiver``
(``keep=False``: it counts, it stores nothing) on a free loopback port and
prints ``port <n>``. Each ``count`` line on stdin is answered with the number
of envelopes indexed so far; end of stdin stops it. ``HecServer`` is the
parent's side of that conversation.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.hec_receiver import HecReceiver

ROOT = Path(__file__).resolve().parents[1]


def serve(token: str) -> None:
    """Run the receiver until stdin closes, answering ``count`` requests."""
    receiver = HecReceiver(token, keep=False)
    receiver.start()
    print(f"port {receiver.port}", flush=True)
    try:
        for line in sys.stdin:
            if line.strip() == "count":
                print(receiver.indexed, flush=True)
    finally:
        receiver.stop()


class HecServer:
    """A child process running ``serve``; ``close`` ends it."""

    def __init__(self, token: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self._process = subprocess.Popen(
            [sys.executable, "-m", "bench.hec_server", token],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        self.port = int(self._readline().removeprefix("port "))

    @property
    def url(self) -> str:
        """Base URL of the receiver."""
        return f"http://127.0.0.1:{self.port}"

    def indexed(self) -> int:
        """Envelopes indexed so far."""
        assert self._process.stdin is not None
        self._process.stdin.write("count\n")
        self._process.stdin.flush()
        return int(self._readline())

    def close(self) -> None:
        """Close stdin (the child stops) and wait for it. Idempotent."""
        if self._process.stdin is not None and not self._process.stdin.closed:
            self._process.stdin.close()
        try:
            self._process.wait(10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(5)
        if self._process.stdout is not None:
            self._process.stdout.close()

    def _readline(self) -> str:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"HEC server exited with {self._process.poll()}")
        return line.strip()


if __name__ == "__main__":
    serve(sys.argv[1])
