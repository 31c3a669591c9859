"""Tests for collector.progress: a progress line on terminals, silence elsewhere."""

from __future__ import annotations

import io

from collector.progress import Progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_silent_when_not_a_terminal() -> None:
    """Nothing is written to a stream that is not a TTY."""
    out = io.StringIO()

    with Progress(10, "replay", out) as progress:
        progress.update(10)

    assert out.getvalue() == ""


def test_draws_count_rate_and_eta_on_a_terminal() -> None:
    """On a TTY the line shows count, percentage, rate and ETA, then a newline."""
    out, clock = _Tty(), _Clock()
    progress = Progress(100, "replay", out, clock=clock)

    clock.now = 2.0
    progress.update(50)
    progress.close()

    text = out.getvalue()
    assert text.startswith("\rreplay: 50/100  50%  25.0/s  ETA 2s")
    assert text.endswith("\n")


def test_unknown_total_has_no_eta() -> None:
    """Without a total the line shows count and rate only."""
    clock = _Clock()
    progress = Progress(None, "read", _Tty(), clock=clock)
    clock.now = 1.0
    progress.update(3)

    assert progress.render(1.0) == "read: 3  3.0/s"


def test_redraws_are_throttled() -> None:
    """Updates within the redraw interval do not redraw the line."""
    out, clock = _Tty(), _Clock()
    progress = Progress(1000, "x", out, clock=clock)

    for _ in range(100):
        progress.update()

    assert out.getvalue().count("\r") == 1


def test_close_is_idempotent() -> None:
    """Closing twice ends the line once."""
    out = _Tty()
    progress = Progress(1, "x", out)

    progress.close()
    progress.close()

    assert out.getvalue().count("\n") == 1


def test_long_eta_uses_hours() -> None:
    """An ETA over an hour is shown in hours and minutes."""
    clock = _Clock()
    progress = Progress(100_000, "x", _Tty(), clock=clock)
    clock.now = 10.0
    progress.update(10)

    assert progress.render(10.0).endswith("ETA 27h46m")
