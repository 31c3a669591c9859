"""The set of secret values this process knows, so no log line can carry one.

The config loader registers every token, password and key it reads; the log
pipeline (``collector.logs``) replaces any registered value with ``[REDACTED]``
wherever it appears in a log event, error message or foreign library record.

Registered values are the strong guarantee. ``scrub_text`` adds a pattern net
for credentials nobody registered (a token typed into a URL, a header echoed by
a library): ``Authorization``-style headers, ``Bearer``/``Basic``/``Splunk``
credentials, ``token=...`` pairs and URL userinfo.
"""

from __future__ import annotations

import re

_MIN_SECRET_CHARS = 4
_secrets: set[str] = set()

REDACTED = "[REDACTED]"

# Key names whose values are credentials, in structured data and in text.
SECRET_KEY_PATTERN = re.compile(
    r"authorization|token|passw(?:or)?d|secret|api[_-]?key|cookie|credential"
    r"|private[_-]?key|passphrase|hmac[_-]?key",
    re.IGNORECASE,
)

# scheme://user:password@host: the userinfo goes, the host stays.
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@'\"<>]+@")

# A header (or a repr of one) whose whole value is a credential.
_HEADER_VALUE = re.compile(
    r"(?i)\b((?:proxy-)?authorization|set-cookie|cookie|x-api-key|x-auth-token"
    r"|x-splunk-request-channel-token)"
    r"([\"']?\s*[:=]\s*[\"']?|[\"'],\s*b?[\"'])"
    r"([^\"'\r\n]+)"
)

# name=value / name: value where the name says it is a credential.
_KEY_VALUE = re.compile(
    r"(?i)\b([a-z0-9_-]*(?:token|passw(?:or)?d|secret|api[_-]?key|apikey)"
    r"[a-z0-9_-]*)"
    r"([\"']?\s*[=:]\s*[\"']?)"
    r"((?!\[REDACTED\])[^\"'&\s,;}\])]+)"
)

# A credential after an auth scheme, outside any header context.
_SCHEME_TOKEN = re.compile(r"\b(Bearer|Basic|Splunk|Token)\s+([A-Za-z0-9._~+/=-]{6,})")


def register_secret(value: str) -> None:
    """Remember a secret value. Very short values are ignored: masking every
    ``ab`` in every log line would destroy the logs and protect nothing."""
    if len(value) >= _MIN_SECRET_CHARS:
        _secrets.add(value)


def forget_secrets() -> None:
    """Drop every registered secret (tests, and a config reload)."""
    _secrets.clear()


def redact_text(text: str) -> str:
    """``text`` with every registered secret replaced by ``[REDACTED]``.

    Longer secrets go first, so a secret that contains a shorter one is
    replaced whole rather than leaving its remainder behind.
    """
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def scrub_text(text: str) -> str:
    """``text`` with registered secrets and credential-shaped substrings masked.

    Covers URL userinfo, credential headers (``Authorization``, ``Cookie``,
    ``X-Api-Key``...), ``token=...``-style pairs and ``Bearer``/``Basic``/
    ``Splunk`` credentials. Idempotent: scrubbing twice changes nothing more.
    """
    text = redact_text(text)
    if not _may_hold_credential(text):
        return text

    text = _URL_USERINFO.sub(rf"\1{REDACTED}@", text)
    text = _HEADER_VALUE.sub(_mask_header, text)
    text = _KEY_VALUE.sub(_mask_pair, text)

    return _SCHEME_TOKEN.sub(_mask_scheme, text)


def is_secret_key(key: str) -> bool:
    """Whether a mapping key names a credential (``api_key``, ``Authorization``)."""
    return SECRET_KEY_PATTERN.search(key) is not None


def known_secret_count() -> int:
    """How many secrets are registered (for tests and diagnostics)."""
    return len(_secrets)


_CHEAP_HINTS = ("@", "=", ":", "earer", "asic", "plunk", "oken")


def _may_hold_credential(text: str) -> bool:
    # Most log values are short names and numbers; skip the regexes for them.
    return any(hint in text for hint in _CHEAP_HINTS)


def _mask_header(match: re.Match[str]) -> str:
    return f"{match.group(1)}{match.group(2)}{REDACTED}"


def _mask_pair(match: re.Match[str]) -> str:
    return f"{match.group(1)}{match.group(2)}{REDACTED}"


def _mask_scheme(match: re.Match[str]) -> str:
    candidate = match.group(2)
    if candidate.startswith(REDACTED.strip("[]")) or not _looks_like_token(candidate):
        return match.group(0)
    return f"{match.group(1)} {REDACTED}"


def _looks_like_token(word: str) -> bool:
    # "Token expired" and "Basic settings" are prose, not credentials: a real
    # credential has a digit, a capital or a token punctuation mark in it.
    return len(word) >= 20 or any(
        ch.isdigit() or ch.isupper() or ch in "._~+/=-" for ch in word
    )
