"""Recovery on open: verify every record, rebuild the index, cut a torn tail.

Rules (the recovery policy is configuration, as in raft-engine)
--------------------------------------------------------------
Segments are read in sequence order; their numbers must be consecutive and
each header must be valid. Every record's CRC is checked before anything in
it is used. At the first bad record of a segment (or a bad header):

- It is a **torn tail** when it is in the *last* segment and no valid
  record follows it (found through the trailer magic, see
  ``reader.valid_record_after``). The writer makes a segment durable before
  starting the next one, so only the last segment can end in a write a
  crash interrupted.
  ``tolerate_tail`` (the default) and ``tolerate_any`` cut it;
  ``absolute`` cuts it only when it is plainly incomplete (the frame runs past
  end of file, or nothing but zeros follows) and otherwise reports it.
- Anything else is **corruption**: ``Corruption(what, path, offset,
  expected, got)``, except under ``tolerate_any``, which keeps the longest
  valid prefix of the log: it cuts at the bad record and sets every later
  segment aside. Records are never skipped: a later record may depend on
  the one skipped, and a log with a hole would return wrong data.

Cutting never throws bytes away: the cut bytes are first written to
``<segment>.<offset>.torn`` (whole later segments are renamed to
``<segment>.torn``), synced, and logged with path and offset.

IO errors are never tolerated. With ``dry_run`` (``multiraft logstore
check``) nothing is modified; the cuts that would be made are reported.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Literal, NamedTuple

from logstore.errors import Corruption
from logstore.segmented.batch import PayloadError, decode_payload
from logstore.segmented.format import SEGMENT_HEADER, TORN_SUFFIX, Columns, segment_name
from logstore.segmented.reader import (
    BadRecord,
    check_segment_header,
    list_segments,
    scan_segment,
    valid_record_after,
)
from logstore.segmented.writer import fsync_dir

RecoveryMode = Literal["tolerate_tail", "absolute", "tolerate_any"]
RECOVERY_MODES: tuple[RecoveryMode, ...] = ("tolerate_tail", "absolute", "tolerate_any")

log = logging.getLogger("logstore.segmented")


class Cut(NamedTuple):
    """Bytes recovery removed from the log (and where it saved them)."""

    path: str
    offset: int
    length: int
    saved_to: str
    reason: str


class RecoveryReport(NamedTuple):
    seconds: float
    segments: int
    records: int
    bytes_read: int
    cuts: tuple[Cut, ...]
    last_seq: int  # the segment new records go to (0: none left, create one)
    last_end: int  # its valid length


OnRecord = Callable[[int, int, Columns], None]


def recover(
    dir_path: str, mode: RecoveryMode, on_record: OnRecord, dry_run: bool = False
) -> RecoveryReport:
    """Scan ``dir_path``, call ``on_record(seq, offset, columns)`` per valid record."""
    t0 = time.perf_counter()
    seqs = list_segments(dir_path)
    cuts: list[Cut] = []
    records = bytes_read = 0
    last_seq = last_end = last_size = 0
    for i, seq in enumerate(seqs):
        path = os.path.join(dir_path, segment_name(seq))
        bad: BadRecord | None
        if i and seq != seqs[i - 1] + 1:
            buf, bad = b"", BadRecord(0, f"segment {seqs[i - 1] + 1} is missing before this one")
            may_be_tail = False
        else:
            buf, bad, may_be_tail = _read_segment(path, seq, last_size if i else None)
            bytes_read += len(buf)
        if bad is None:
            scan = scan_segment(buf, SEGMENT_HEADER.size)
            bad = scan.bad
            for off, payload in scan.records:
                try:
                    cols = decode_payload(payload)
                except PayloadError as exc:
                    bad = BadRecord(off, f"record payload inconsistent: {exc}")
                    break
                on_record(seq, off, cols)
                records += 1
            last_seq, last_size = seq, len(buf)
            last_end = bad.offset if bad is not None else scan.end
        if bad is not None:
            is_tail = may_be_tail and i == len(seqs) - 1
            _settle(mode, dry_run, path, buf, bad, seqs[i + 1 :], cuts, is_tail)
            break
    return RecoveryReport(
        time.perf_counter() - t0, len(seqs), records, bytes_read, tuple(cuts), last_seq, last_end
    )


def _read_segment(
    path: str, seq: int, prev_size: int | None
) -> tuple[bytes, BadRecord | None, bool]:
    """``(contents, why the file is bad from its start, whether that may be a torn tail)``."""
    with open(path, "rb") as f:
        buf = f.read()
    try:
        sealed_at = check_segment_header(buf, seq, path)
    except Corruption as exc:
        incomplete = len(buf) < SEGMENT_HEADER.size or buf.count(0) == len(buf)
        return buf, BadRecord(0, exc.what, exc.expected, exc.got, incomplete), True
    if prev_size is not None and sealed_at != prev_size:
        what = f"segment {seq - 1} is {prev_size} bytes, was {sealed_at} when sealed"
        return b"", BadRecord(0, what), False
    return buf, None, True


def _settle(  # noqa: PLR0917  # one call site; the arguments are the loop's state
    mode: RecoveryMode,
    dry_run: bool,
    path: str,
    buf: bytes,
    bad: BadRecord,
    later: list[int],
    cuts: list[Cut],
    is_tail: bool,
) -> None:
    """Cut at ``bad`` if the mode allows (saving the bytes), else raise ``Corruption``.

    ``is_tail``: ``bad`` is in the last segment, where a crash can leave a torn write.
    """
    dir_path = os.path.dirname(path)
    torn = is_tail and valid_record_after(buf, bad.offset) is None
    if torn and (mode != "absolute" or bad.incomplete):
        reason = f"torn tail: {bad.what}"
    elif mode == "tolerate_any":
        reason = f"corruption tolerated: {bad.what}"
    else:
        where = "at the tail" if torn else "followed by valid data" if is_tail else "mid-log"
        raise Corruption(f"{bad.what} ({where})", path, bad.offset, bad.expected, bad.got)
    if buf or os.path.exists(path):
        cuts.append(_cut_file(path, buf, bad.offset, reason, dry_run))
    for seq in later:
        later_path = os.path.join(dir_path, segment_name(seq))
        cuts.append(_set_aside(later_path, f"after a cut in {os.path.basename(path)}", dry_run))
    if not dry_run:
        fsync_dir(dir_path)


def _cut_file(path: str, buf: bytes, offset: int, reason: str, dry_run: bool) -> Cut:
    """Save ``buf[offset:]`` aside, then truncate (or remove, from the header) the file."""
    if offset == 0:
        return _set_aside(path, reason, dry_run)
    saved = _unused_name(f"{path}.{offset}{TORN_SUFFIX}")
    cut = Cut(path, offset, len(buf) - offset, saved, reason)
    log.warning(
        "%s: cutting %d bytes at offset %d (%s); saved to %s",
        path,
        cut.length,
        offset,
        reason,
        saved,
    )
    if dry_run:
        return cut
    with open(saved, "xb") as f:
        f.write(buf[offset:])
        f.flush()
        os.fsync(f.fileno())
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.ftruncate(fd, offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    return cut


def _set_aside(path: str, reason: str, dry_run: bool) -> Cut:
    """Rename a whole segment out of the log (kept as ``<name>.torn``)."""
    saved = _unused_name(path + TORN_SUFFIX)
    length = os.path.getsize(path)
    log.warning(
        "%s: setting aside the whole file, %d bytes (%s); renamed to %s",
        path,
        length,
        reason,
        saved,
    )
    if not dry_run:
        os.replace(path, saved)
    return Cut(path, 0, length, saved, reason)


def _unused_name(path: str) -> str:
    """``path``, or ``path.1``, ``path.2``... whichever does not exist (never overwrite)."""
    n = 0
    candidate = path
    while os.path.exists(candidate):
        n += 1
        candidate = f"{path}.{n}"
    return candidate
