"""What every sink's settings share: routing, rendering and delivery tuning."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from collector.settings_types import ByteSize, Duration, PluginSettings

RecordKind = Literal["events", "alerts"]
RenderFormat = Literal["ecs", "ocsf", "raw", "cef"]


class SinkSettings(PluginSettings):
    """Routing (``receives``), rendering (``format``) and delivery tuning."""

    receives: list[RecordKind] = Field(
        default_factory=lambda: list[RecordKind](["events", "alerts"])
    )
    format: RenderFormat = "ecs"
    batch_max_records: int = Field(default=500, ge=1, le=100_000)
    batch_max_bytes: ByteSize = 4 * 1024 * 1024
    batch_max_wait: Duration = 1.0
    queue_max_batches: int = Field(default=16, ge=1, le=10_000)
    send_timeout: Duration = 30.0
    retry_initial: Duration = 0.5
    retry_max: Duration = 30.0
