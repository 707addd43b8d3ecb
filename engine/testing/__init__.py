"""Test support that ships with the engine, so the store's and the node's
integration tests (and library users' own tests) can use it: a
linearizability checker for per-key KV histories."""

from engine.testing.linearizability import (
    HistoryRecorder,
    KeyVerdict,
    Operation,
    OpKind,
    Outcome,
    Verdict,
    check_history,
    check_key,
)

__all__ = [
    "HistoryRecorder",
    "KeyVerdict",
    "OpKind",
    "Operation",
    "Outcome",
    "Verdict",
    "check_history",
    "check_key",
]
