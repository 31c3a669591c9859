"""Every rule's shipped examples run as tests: positives fire, negatives do not."""

from __future__ import annotations

import pytest

from collector.model import SEVERITY_ORDER
from detections.engine import DetectionEngine
from detections.examples import ExampleCase, load_examples
from detections.settings import EngineSettings

CASES = load_examples()


def _engine(case: ExampleCase) -> DetectionEngine:
    settings = {"sigma_builtin": False, **case.settings}
    return DetectionEngine(EngineSettings.model_validate(settings))


@pytest.mark.parametrize("case", CASES, ids=[f"{c.rule}:{c.name}" for c in CASES])
async def test_example(case: ExampleCase) -> None:
    """The rule fires on a positive example and stays silent on a negative one."""
    engine = _engine(case)
    await engine.start()

    alerts = await engine.detect(list(case.events))
    mine = [a for a in alerts if a.rule_id == case.rule]

    assert bool(mine) == case.fires, [a.summary for a in alerts]
    if case.severity is not None:
        worst = max(mine, key=lambda a: SEVERITY_ORDER[a.severity])
        assert worst.severity == case.severity
    if case.alerts is not None:
        assert len(mine) == case.alerts
