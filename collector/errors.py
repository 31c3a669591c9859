"""The one error tree of bbaudit.

::

    AuditPipelineError
        ConfigError (path)                      raised at start-up only; fail fast
        UnknownPluginError, DuplicatePluginError
        CollectorError
            BitbucketAPIError (status, retriable for 429 and 5xx)
            EventParseError (source, position)  record dropped and counted, not fatal
        SinkError (sink, retriable)
            SinkUnavailableError                broken by the far side; cause chained
            SinkClosedError                     closed by us; not retriable

Library errors (httpx, aiokafka, sqlite3) are translated at the edges with
``raise ... from exc``; retry loops ask ``err.retriable`` instead of listing types.
"""

from __future__ import annotations


class AuditPipelineError(Exception):
    """Root of every error bbaudit raises on purpose."""

    retriable: bool = False


class ConfigError(AuditPipelineError, ValueError):
    """The configuration is invalid; ``path`` names the place (``sinks[0].host``)."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


class UnknownPluginError(ConfigError):
    """A config names a ``kind`` of source, enricher or sink that is not registered."""


class DuplicatePluginError(AuditPipelineError):
    """Two plugins registered the same kind."""


class CollectorError(AuditPipelineError):
    """A source could not read what it was asked to read."""


class BitbucketAPIError(CollectorError):
    """Bitbucket (or the Atlassian admin API) answered with an error status."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        self.retriable = status is None or status == 429 or status >= 500
        super().__init__(message)


class EventParseError(CollectorError):
    """One record could not be turned into an audit event.

    ``source`` names where it came from (a source name or a file path) and
    ``position`` where in it (a line number, a page and index).
    """

    def __init__(self, message: str, *, source: str, position: str) -> None:
        self.source = source
        self.position = position
        self.reason = message
        super().__init__(f"{source} at {position}: {message}")


class SinkError(AuditPipelineError):
    """A sink could not take a batch."""

    def __init__(self, message: str, *, sink: str, retriable: bool) -> None:
        self.sink = sink
        self.retriable = retriable
        super().__init__(f"{sink}: {message}")


class SinkUnavailableError(SinkError):
    """The receiver is down, slow or refusing; the cause is chained."""

    def __init__(self, message: str, *, sink: str) -> None:
        super().__init__(message, sink=sink, retriable=True)


class SinkClosedError(SinkError):
    """The sink was closed by us; sending again will not help."""

    def __init__(self, sink: str) -> None:
        super().__init__("sink is closed", sink=sink, retriable=False)
