"""What every sink's settings share: routing, rendering and delivery tuning."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from collector.settings_types import ByteSize, Duration, PluginSettings

RecordKind = Literal["events", "alerts"]
RenderFormat = Literal["ecs", "ocsf", "raw", "cef"]


class SinkSettings(PluginSettings):
    """Routing (``receives``), rendering (``format``) and delivery tuning.

    Batching: a batch closes at ``batch_max_records``, at ``batch_max_bytes``
    (estimated size of the records) or ``batch_max_wait`` after its first
    record. ``queue_max_batches`` submissions wait in memory; beyond that the
    pipeline waits. A send that fails is retried with full-jitter backoff from
    ``retry_initial`` up to ``retry_max``; after ``spool_after_attempts`` failed
    attempts or ``spool_after`` seconds the batch goes to the disk spool
    (bounded by ``spool_max_bytes``; 0 turns the spool off, and then a failing
    sink holds the pipeline until it recovers).
    """

    # Only sinks that write CEF lines (syslog) accept ``format: cef``.
    cef_capable: ClassVar[bool] = False

    receives: list[RecordKind] = Field(
        default_factory=lambda: list[RecordKind](["events", "alerts"])
    )
    format: RenderFormat = "ecs"
    include_original: bool = False
    batch_max_records: int = Field(default=500, ge=1, le=100_000)
    batch_max_bytes: ByteSize = 4 * 1024 * 1024
    batch_max_wait: Duration = 1.0
    # Each submission is a source batch (up to 500 events with their raw
    # records): 4 keep a fast sink busy, and in-flight events are what peak
    # RSS is made of (16 cost about 30 MiB more in `make bench`, for nothing).
    queue_max_batches: int = Field(
        default=4,
        ge=1,
        le=10_000,
        description="source batches waiting in memory before the pipeline waits",
    )
    send_timeout: Duration = 30.0
    retry_initial: Duration = 0.5
    retry_max: Duration = 30.0
    spool_after_attempts: int = Field(default=3, ge=1, le=1_000)
    spool_after: Duration = 60.0
    spool_max_bytes: ByteSize = 256 * 1024 * 1024

    @model_validator(mode="after")
    def _format_is_supported(self) -> SinkSettings:
        if self.format == "cef" and not self.cef_capable:
            raise ValueError("format 'cef' is only for the syslog sink")
        return self
