"""The set of secret values this process knows, so no log line can carry one.

The config loader registers every token, password and key it reads; the log
pipeline (``collector.logs``) replaces any registered value with ``[REDACTED]``
wherever it appears in a log event, error message or foreign library record.
"""

from __future__ import annotations

_MIN_SECRET_CHARS = 4
_secrets: set[str] = set()

REDACTED = "[REDACTED]"


def register_secret(value: str) -> None:
    """Remember a secret value. Very short values are ignored: masking every
    ``ab`` in every log line would destroy the logs and protect nothing."""
    if len(value) >= _MIN_SECRET_CHARS:
        _secrets.add(value)


def redact_text(text: str) -> str:
    """``text`` with every registered secret replaced by ``[REDACTED]``."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def known_secret_count() -> int:
    """How many secrets are registered (for tests and diagnostics)."""
    return len(_secrets)
