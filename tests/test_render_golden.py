"""Normalizer and renderer outputs are pinned byte for byte (``bench.golden``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import golden

FIXTURE = Path(__file__).parent / "fixtures" / "golden_render.tsv"


def _rows(lines: list[str]) -> dict[tuple[str, str], str]:
    rows = {}
    for line in lines:
        case, output, digest = line.split("\t")
        rows[(case, output)] = digest
    return rows


def test_outputs_match_the_committed_digests() -> None:
    """Every case renders to the bytes recorded in tests/fixtures/golden_render.tsv."""
    if not golden.SAMPLES.is_dir():
        pytest.skip("shared samples are not present")
    expected = _rows(FIXTURE.read_text().splitlines())

    actual = _rows(golden.digests())

    changed = sorted(
        k for k in expected.keys() & actual.keys() if expected[k] != actual[k]
    )
    assert not changed, (
        f"{len(changed)} outputs changed, first: {changed[:10]}; "
        "dump both trees with `python -m bench.golden --dump` and diff"
    )
    assert actual.keys() == expected.keys()
