"""The segmented log store: the default ``LogStore`` backend.

Append-only segment files of CRC32C-framed records, one record per write
batch (group commit across ranges), zstd when it helps, an in-memory index
per range with a cache of recent entries, purge of compacted segments, and
recovery that cuts only a torn tail. The byte layout is in ``format.py``
and ``logstore/FORMAT.md``.
"""

from __future__ import annotations

from logstore.segmented.recovery import Cut, RecoveryReport
from logstore.segmented.store import Options, SegmentedLogStore

__all__ = ["Cut", "Options", "RecoveryReport", "SegmentedLogStore"]
