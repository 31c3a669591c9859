"""Normalizers: one function per record shape, each returning an ``AuditEvent``.

A normalizer raises ``ValueError`` (or ``TypeError``) with a short reason when a
record cannot be used; the caller wraps it into ``EventParseError`` with the
source and position, counts it and moves on.
"""

from collector.normalize.cloud import normalize_cloud
from collector.normalize.dc import detect_dc_shape, normalize_dc

__all__ = ["detect_dc_shape", "normalize_cloud", "normalize_dc"]
