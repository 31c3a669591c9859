"""The bounded memo of the hot path (collector.memo)."""

from __future__ import annotations

from collector.memo import Memo


def test_memo_remembers_and_empties_at_its_bound() -> None:
    """Values are kept until the bound is hit; then the memo starts afresh."""
    memo: Memo[int, str] = Memo(max_entries=3)

    stored = [memo.remember(n, str(n)) for n in range(3)]
    full = dict(memo)
    memo.remember(3, "3")

    assert stored == ["0", "1", "2"]
    assert full == {0: "0", 1: "1", 2: "2"}
    assert dict(memo) == {3: "3"}
