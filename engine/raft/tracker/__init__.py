"""Replication tracking: per-peer ``Progress``, the ``Inflights`` window and the
``ProgressTracker`` that holds membership and answers quorum questions."""

from engine.raft.tracker.inflights import Inflights
from engine.raft.tracker.progress import Progress, ProgressState
from engine.raft.tracker.tracker import ProgressTracker

__all__ = ["Inflights", "Progress", "ProgressState", "ProgressTracker"]
